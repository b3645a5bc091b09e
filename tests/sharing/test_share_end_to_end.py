"""Share through the fake Discord when the gallery channel is deleted in Discord: the member
is told so, nothing is held, and Share works once a moderator sets a new gallery (issue 12.5:
the claim used to be taken before the channel was looked up, and never given back)."""

from __future__ import annotations

import asyncio

from tests.fakes.discord import Channel


async def finished_job(harness):
    record = await harness.imagine()
    await harness.finished(record)
    assert "Images ready" in record.latest.text
    return record


async def command(harness, member, name, **options):
    record = await harness.command(member, name, **options)
    await harness.answered(record)
    return record


async def share(harness, record):
    click = await harness.click(harness.world.alice, record, "share")
    await harness.answered(click)
    return click


def posts_in(harness, channel: Channel):
    return [m for m in harness.fake.channel_messages(channel) if m.webhook_id is None]


async def delete_channel(harness, channel: Channel) -> None:
    """Delete `channel` in Discord: gone from the fake, and the bot told (CHANNEL_DELETE)."""
    fake, bot = harness.fake, harness.bot
    data = channel.to_json()
    channel.guild.channels.remove(channel)
    del fake.channels[channel.id]
    told = asyncio.ensure_future(
        bot.wait_for("guild_channel_delete", check=lambda c: c.id == channel.id, timeout=10)
    )
    await fake.gateway.dispatch(fake.app, "CHANNEL_DELETE", data, channel.guild.id)
    await told


async def create_channel(harness, name: str) -> Channel:
    """A new text channel in the server, the bot told (CHANNEL_CREATE)."""
    fake, bot = harness.fake, harness.bot
    channel = fake.add_channel(harness.world.guild, name)
    told = asyncio.ensure_future(
        bot.wait_for("guild_channel_create", check=lambda c: c.id == channel.id, timeout=10)
    )
    await fake.gateway.dispatch(fake.app, "CHANNEL_CREATE", channel.to_json(), channel.guild.id)
    await told
    return channel


async def test_a_deleted_gallery_channel_is_said_and_sharing_works_once_a_new_one_is_set(
    harness,
):
    world = harness.world
    await command(harness, world.mod, "gallery channel", channel=world.gallery)
    record = await finished_job(harness)
    await delete_channel(harness, world.gallery)

    gone = await share(harness, record)

    assert gone.latest.ephemeral
    assert "gallery channel no longer exists" in gone.said()
    new_gallery = await create_channel(harness, "gallery-2")
    await command(harness, world.mod, "gallery channel", channel=new_gallery)
    shared = await share(harness, record)
    assert "Shared to" in shared.said()
    [post] = posts_in(harness, new_gallery)
    assert post.attachments
    again = await share(harness, record)
    assert "already in the gallery" in again.said()
    assert len(posts_in(harness, new_gallery)) == 1
