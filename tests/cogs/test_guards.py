"""Commands and buttons run only in a server the bot is in (`cogs/utils/guards.py`).

`guild_only` is a hint to Discord's UI: a DM or a forged payload still reaches the bot. Each
such interaction is refused clearly, before anything is reserved or written; a button
pressed from another server never touches the first server's job.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from cogs.utils import wording
from quota import ledger
from tests.fakes.discord import InteractionRecord, Member
from tests.fakes.discord.commands import command_data
from tests.fakes.discord.state import snowflake
from tests.fakes.discord.webhooks import APPLICATION_COMMAND, COMPONENT
from tests.harness import Harness


async def dm_slash(
    harness: Harness, member: Member, name: str, options: dict[str, Any] | None = None
) -> InteractionRecord:
    """`member` runs `/name` in their DM with the bot, as a client that ignores
    `guild_only` would send it: no guild, no member, a DM channel, the `user` who ran it.

    The fake Discord sends interactions from servers only, so the payload is built here; the
    record keeps the first server's channel for its own bookkeeping (where an answer would be
    stored), which the bot never sees."""
    fake, world = harness.fake, harness.world
    first, *path = name.split()
    command = fake.commands_of(fake.app).find(world.guild.id, first)
    data = command_data(fake.world, command, path, options or {}, member)
    token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(120)
    user = member.user.to_json()
    payload: dict[str, Any] = {
        "id": str(snowflake()),
        "application_id": str(fake.app.id),
        "type": APPLICATION_COMMAND,
        "token": token,
        "version": 1,
        "channel_id": str(snowflake()),
        "channel": {"id": str(snowflake()), "type": 1, "recipients": [user]},
        "user": user,
        "app_permissions": "0",
        "locale": "en-US",
        "entitlements": [],
        "authorizing_integration_owners": {"0": str(world.guild.id)},
        "context": 1,  # the bot's DM
        "attachment_size_limit": world.guild.upload_limit,
        "data": data,
    }
    payload["channel_id"] = payload["channel"]["id"]
    record = InteractionRecord(
        id=int(payload["id"]),
        token=token,
        type=APPLICATION_COMMAND,
        app_id=fake.app.id,
        guild=world.guild,
        channel=world.general,
        member=member,
        payload=payload,
        created=fake.now(),
    )
    fake.interactions[token] = record
    await fake.gateway.route(fake.app, None).send("INTERACTION_CREATE", payload)
    return record


async def jobs_in_database(harness: Harness) -> int:
    return int(await harness.bot.services.db.fetchval("SELECT COUNT(*) FROM jobs"))


async def assert_nothing_started(harness: Harness, jobs_before: int) -> None:
    await harness.bot.services.runner.wait_idle()
    assert await jobs_in_database(harness) == jobs_before
    assert (await ledger.balance(harness.bot.services.db)).reserved == 0


def refused_as_outside_a_server(record: InteractionRecord) -> None:
    assert record.latest is not None and record.latest.ephemeral
    assert record.said() == wording.SERVERS_ONLY


async def test_imagine_in_a_dm_is_refused_and_starts_nothing(harness):
    record = await dm_slash(harness, harness.world.alice, "imagine", {"prompt": "a red fox"})
    await harness.answered(record)

    refused_as_outside_a_server(record)
    await assert_nothing_started(harness, jobs_before=0)
    assert harness.emulator.stats.tasks_created == 0


async def test_quota_in_a_dm_is_refused_instead_of_showing_some_servers_limits(harness):
    record = await dm_slash(harness, harness.world.alice, "quota")
    await harness.answered(record)

    refused_as_outside_a_server(record)
    assert "Today" not in record.said()


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("limits show", {}),
        ("limits set", {"scope": "guild", "field": "images_per_day", "value": 3}),
        ("credit show", {}),
        ("credit set", {"images": 10}),
        ("blocklist add", {"word": "castle"}),
        ("modlog channel", {"channel": "general"}),
    ],
)
async def test_moderator_and_operator_commands_in_a_dm_are_refused_before_any_other_check(
    harness, name, options
):
    """The server's owner (every permission) and the bot's operator alike: a DM has no
    server to act on, so the answer is that, not a permission problem, and nothing is
    audited or changed anywhere."""
    world = harness.world
    harness.settings_overrides = {"owner_ids": frozenset({world.guild.owner.id})}
    await harness.restart_bot()
    if "channel" in options:
        options = {**options, "channel": world.general}
    before = await harness.bot.services.moderation.audit_trail(world.guild.id)

    record = await dm_slash(harness, world.guild.owner, name, options)
    await harness.answered(record)

    refused_as_outside_a_server(record)
    assert await harness.bot.services.moderation.audit_trail(world.guild.id) == before
    assert (await ledger.balance(harness.bot.services.db)).available == 1000


async def test_reroll_pressed_from_another_server_does_not_touch_the_first_servers_job(
    harness,
):
    fake, world = harness.fake, harness.world
    # A second server the bot is in (known from its login), with alice a member of both.
    other = fake.add_guild("Another server")
    elsewhere = fake.add_channel(other, "general")
    alice_there = Member(world.alice.user, other)
    other.members.append(alice_there)
    await harness.restart_bot()
    assert harness.bot.get_guild(other.id) is not None
    first = await harness.imagine(prompt="a cat")
    await harness.finished(first)
    harness.clock.advance(3600)  # no cooldown could explain a refusal
    jobs_before = await jobs_in_database(harness)
    assert first.original is not None
    custom_id = next(c for c in first.original.custom_ids() if c.split(":")[1] == "reroll")

    # Alice's client sends the first server's button as pressed in the second server.
    pressed = await fake._interact(
        fake.app,
        COMPONENT,
        elsewhere,
        alice_there,
        {"custom_id": custom_id, "component_type": 2},
        message=first.original,
    )
    await harness.answered(pressed)

    assert pressed.latest is not None and pressed.latest.ephemeral
    assert pressed.said() == wording.JOB_UNKNOWN  # not one of this server's jobs
    await assert_nothing_started(harness, jobs_before)
    assert harness.emulator.stats.tasks_created == 1


@pytest.mark.parametrize(
    ("name", "options"), [("gallery top", {}), ("gallery channel", {"channel": "gallery"})]
)
async def test_gallery_commands_in_a_dm_are_refused(harness, name, options):
    world = harness.world
    if "channel" in options:
        options = {"channel": world.gallery}
    record = await dm_slash(harness, world.guild.owner, name, options)
    await harness.answered(record)

    if options:  # discord.py cannot resolve a server's channel in a DM: refused before us
        assert record.latest is not None and record.latest.ephemeral
        assert "not valid" in record.said()
    else:
        refused_as_outside_a_server(record)
    assert await harness.bot.services.gallery.channel(world.guild.id) is None
