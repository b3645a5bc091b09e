"""Community sharing end to end: gallery, votes, history, variations and upscale."""

from __future__ import annotations

import asyncio
import io

from PIL import Image, ImageStat

from cogs.utils.buttons import vote_view
from quota import ledger
from sharing.gallery import TOP_PAGE
from tests.fakes.discord import Channel
from tests.harness import image_bytes, one_image_per_message


async def finished_job(harness, member=None, channel=None, **options):
    record = await harness.imagine(member=member, channel=channel, **options)
    await harness.finished(record)
    assert "Images ready" in record.latest.text
    return record


async def set_gallery(harness, channel=None):
    record = await harness.command(
        harness.world.mod, "gallery channel", channel=channel or harness.world.gallery
    )
    await harness.answered(record)
    return record


def gallery_posts(harness, channel=None):
    return [
        m
        for m in harness.fake.channel_messages(channel or harness.world.gallery)
        if m.webhook_id is None
    ]


async def share(harness, member, record):
    click = await harness.click(member, record, "share")
    await harness.answered(click)
    return click


async def test_sharing_posts_once_with_images_author_and_a_link_back(harness):
    await set_gallery(harness)
    record = await finished_job(harness, prompt="a heron at dawn", images=2)
    click = await share(harness, harness.world.alice, record)
    assert "Shared to" in click.said()
    [post] = gallery_posts(harness)
    assert [a.data for a in post.attachments] == [data for _, data in record.latest.attachments]
    embed = post.embeds[0]
    assert "a heron at dawn" in embed["description"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["By"] == f"<@{harness.world.alice.id}>"
    assert str(record.original.id) in fields["Original"]
    again = await share(harness, harness.world.alice, record)
    assert "already in the gallery" in again.said()
    assert len(gallery_posts(harness)) == 1


async def test_only_the_author_may_share_and_only_once_a_gallery_is_set(harness):
    record = await finished_job(harness)
    no_gallery = await share(harness, harness.world.alice, record)
    assert "no gallery channel" in no_gallery.said()
    await set_gallery(harness)
    not_yours = await share(harness, harness.world.bob, record)
    assert "Only the member who made" in not_yours.said()
    assert gallery_posts(harness) == []


async def test_members_cannot_choose_the_gallery_channel(harness):
    record = await harness.command(
        harness.world.alice, "gallery channel", channel=harness.world.gallery
    )
    await harness.answered(record)
    assert "Only moderators" in record.latest.text


async def test_votes_are_one_per_member_and_not_for_yourself(harness):
    await set_gallery(harness)
    record = await finished_job(harness)
    await share(harness, harness.world.alice, record)
    [post] = gallery_posts(harness)
    gallery = harness.world.gallery
    vote_id = post.custom_ids()[0]
    first = await harness.fake.click(harness.world.guild, gallery, harness.world.bob, post, vote_id)
    await harness.fake.wait_for(lambda: first.acknowledged)
    await harness.fake.wait_for(lambda: "Vote (1)" in str(post.components))
    again = await harness.fake.click(harness.world.guild, gallery, harness.world.bob, post, vote_id)
    await harness.answered(again)
    assert "already voted" in again.said()
    own = await harness.fake.click(harness.world.guild, gallery, harness.world.alice, post, vote_id)
    await harness.answered(own)
    assert "your own images" in own.said()
    second = await harness.fake.click(
        harness.world.guild, gallery, harness.world.mod, post, vote_id
    )
    await harness.fake.wait_for(lambda: second.acknowledged and "Vote (2)" in str(post.components))
    top = await harness.command(harness.world.bob, "gallery top", period="day")
    await harness.answered(top)
    assert "⭐ 2" in top.latest.text and str(post.id) in top.latest.text


async def test_deleting_a_job_removes_its_gallery_post(harness):
    await set_gallery(harness)
    record = await finished_job(harness)
    await share(harness, harness.world.alice, record)
    [post] = gallery_posts(harness)
    delete = await harness.click(harness.world.alice, record, "delete")
    await harness.answered(delete)
    await harness.fake.wait_for(lambda: post.deleted)
    assert gallery_posts(harness) == []
    again = await share(harness, harness.world.alice, record)
    assert "deleted" in again.said() or "no longer" in again.said()


async def test_age_restricted_images_only_go_to_an_age_restricted_gallery(harness):
    await set_gallery(harness)
    record = await finished_job(harness, member=harness.world.bob, channel=harness.world.nsfw)
    refused = await share(harness, harness.world.bob, record)
    assert "age-restricted" in refused.said()
    await set_gallery(harness, harness.world.nsfw)
    allowed = await share(harness, harness.world.bob, record)
    assert "Shared to" in allowed.said()


async def test_history_lists_my_jobs_and_is_for_moderators_about_others(harness):
    await finished_job(harness, prompt="first picture")
    harness.clock.advance(11)
    await finished_job(harness, prompt="second picture")
    mine = await harness.command(harness.world.alice, "history")
    await harness.answered(mine)
    assert mine.latest.ephemeral
    text = mine.latest.text
    assert text.index("second picture") < text.index("first picture")
    assert "Page 1 of 1" in text
    refused = await harness.command(harness.world.bob, "history", user=harness.world.alice)
    await harness.answered(refused)
    assert "Only moderators" in refused.latest.text
    allowed = await harness.command(harness.world.mod, "history", user=harness.world.alice)
    await harness.answered(allowed)
    assert "first picture" in allowed.latest.text


async def test_a_variation_starts_from_the_chosen_image_with_the_same_options(harness):
    # Omniinfer v2 has no variation seed, so a variation is image-to-image of that picture:
    # a neighbouring seed would give an unrelated image, not a variation.
    assert not harness.bot.services.backend.capabilities.subseed
    record = await finished_job(harness, prompt="a fox", seed=1000, images=2, steps=22)
    labels = [c.split(":", 2)[2] for c in record.original.custom_ids() if ":variation:" in c]
    assert sorted(label.split(":", 1)[1] for label in labels) == [
        "0:strong",
        "0:subtle",
        "1:strong",
        "1:subtle",
    ]
    harness.clock.advance(11)
    variation = await harness.click(harness.world.alice, record, "variation", nth=1)
    await harness.finished(variation)
    assert "Steps: 22" in variation.latest.text
    assert harness.emulator.stats.requests["img2img"] == 1
    details = await harness.click(harness.world.alice, variation, "details")
    await harness.answered(details)
    assert "Denoising strength: 0.35" in details.latest.text  # image 2, subtle


async def test_upscale_makes_the_chosen_image_twice_as_big_through_the_same_limits(harness):
    record = await finished_job(harness, images=2)
    harness.clock.advance(11)
    upscale = await harness.click(harness.world.alice, record, "upscale")
    await harness.finished(upscale, timeout=20)
    [(_, data)] = upscale.latest.attachments
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (2048, 2048)
    too_soon = await harness.click(harness.world.alice, record, "upscale")
    await harness.finished(too_soon)
    assert "between jobs" in too_soon.said()  # the cooldown applies to upscales too


async def test_upscale_finds_an_image_that_did_not_fit_in_the_first_message(harness):
    harness.world.guild.upload_limit = one_image_per_message("a lighthouse at dusk", 5, 3)
    record = await harness.imagine(images=3, seed=5)
    await harness.finished(record, timeout=30)
    await harness.fake.wait_for(lambda: len(record.followups) == 2, timeout=30)
    sources = [image_bytes(record)[0]] + [m.attachments[0].data for m in record.followups]
    harness.world.guild.upload_limit = 10 * 1024 * 1024  # the upscale itself need not shrink
    harness.clock.advance(11)
    upscale = await harness.click(harness.world.alice, record, "upscale", nth=2)
    await harness.finished(upscale, timeout=20)
    [(_, data)] = upscale.latest.attachments
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (2048, 2048)
        colour = ImageStat.Stat(image.convert("RGB").resize((1024, 1024))).mean

    def distance(source: bytes) -> float:
        with Image.open(io.BytesIO(source)) as original:
            mean = ImageStat.Stat(original.convert("RGB")).mean
        return sum(abs(a - b) for a, b in zip(mean, colour, strict=True))

    assert min(range(3), key=lambda i: distance(sources[i])) == 2


async def test_upscaling_an_image_whose_message_was_just_deleted_says_so_and_charges_nothing(
    harness,
):
    record = await finished_job(harness, images=2)
    harness.clock.advance(11)
    record.original.deleted = True  # removed in Discord while the member's client still shows it
    upscale = await harness.click(harness.world.alice, record, "upscale")
    await harness.finished(upscale)
    assert "no longer in Discord" in upscale.latest.text
    assert harness.emulator.stats.requests["upscale"] == 0
    balance = await ledger.balance(harness.bot.services.db)
    assert (balance.spent, balance.reserved) == (2, 0)


async def test_sharing_buttons_work_after_a_restart(harness):
    await set_gallery(harness)
    record = await finished_job(harness)
    await harness.restart_bot()
    click = await share(harness, harness.world.alice, record)
    assert "Shared to" in click.said()


# -- Share through Discord when the gallery channel is deleted (issue 12.5) ---------------------


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
    """The member is told, nothing is held, and Share works once a moderator sets a new
    gallery (the claim used to be taken before the channel was looked up, and never given
    back)."""
    world = harness.world
    await set_gallery(harness)
    record = await finished_job(harness)
    await delete_channel(harness, world.gallery)

    gone = await share(harness, world.alice, record)

    assert gone.latest.ephemeral
    assert "gallery channel no longer exists" in gone.said()
    new_gallery = await create_channel(harness, "gallery-2")
    await set_gallery(harness, new_gallery)
    shared = await share(harness, world.alice, record)
    assert "Shared to" in shared.said()
    [post] = gallery_posts(harness, new_gallery)
    assert post.attachments
    again = await share(harness, world.alice, record)
    assert "already in the gallery" in again.said()
    assert len(gallery_posts(harness, new_gallery)) == 1


# -- /gallery top ---------------------------------------------------------------------------


async def vote(harness, member, post):
    click = await harness.fake.click(
        harness.world.guild, harness.world.gallery, member, post, post.custom_ids()[0]
    )
    await harness.fake.wait_for(lambda: click.acknowledged)
    return click


async def test_gallery_top_shows_prompt_author_votes_link_and_image_of_each_entry(harness):
    world = harness.world
    await set_gallery(harness)
    heron = await finished_job(harness, prompt="a heron at dawn " + "in the mist " * 30)
    fox = await finished_job(harness, member=world.bob, prompt="a red fox in snow")
    await share(harness, world.alice, heron)
    await share(harness, world.bob, fox)
    heron_post, fox_post = gallery_posts(harness)
    await vote(harness, world.bob, heron_post)
    await vote(harness, world.mod, heron_post)
    await vote(harness, world.alice, fox_post)
    await harness.fake.wait_for(lambda: "Vote (2)" in str(heron_post.components))

    top = await harness.command(world.bob, "gallery top", period="day")
    await harness.answered(top)

    assert not top.latest.ephemeral and "page 1 of 1" in top.latest.content
    first, second = top.latest.embeds
    assert first["description"].startswith("**1.** ⭐ 2 · a heron at dawn")
    assert len(first["description"]) < 400  # the long prompt is shortened
    assert f"<@{world.alice.id}>" in first["description"]
    jump = f"/channels/{world.guild.id}/{world.gallery.id}/{heron_post.id}"
    assert jump in first["description"]
    assert first["image"]["url"] == heron_post.attachments[0].url
    assert second["description"].startswith("**2.** ⭐ 1 · a red fox in snow")
    assert f"<@{world.bob.id}>" in second["description"]
    assert second["image"]["url"] == fox_post.attachments[0].url


async def test_gallery_top_turns_pages_past_ten_entries(harness):
    world = harness.world
    await set_gallery(harness)
    for number in range(TOP_PAGE + 1):
        record = await finished_job(harness, prompt=f"picture number {number}")
        await share(harness, world.alice, record)
        harness.clock.advance(11)  # past the cooldown between jobs
    first = await harness.command(world.bob, "gallery top", period="all")
    await harness.answered(first)
    assert len(first.latest.embeds) == TOP_PAGE
    assert "page 1 of 2" in first.latest.content
    second = await harness.command(world.bob, "gallery top", period="all", page=2)
    await harness.answered(second)
    [last] = second.latest.embeds
    assert last["description"].startswith(f"**{TOP_PAGE + 1}.** ⭐ 0 · picture number 10")


async def test_gallery_top_without_shared_images_says_so(harness):
    top = await harness.command(harness.world.bob, "gallery top")
    await harness.answered(top)
    assert top.latest.ephemeral and "No images were shared" in top.latest.text


# -- a result split over several messages -------------------------------------------------------


async def test_sharing_a_result_split_over_three_messages_posts_every_image_and_delete_removes_all(
    harness,
):
    world = harness.world
    await set_gallery(harness)
    world.guild.upload_limit = one_image_per_message("a lighthouse at dusk", 5, 3)
    record = await harness.imagine(images=3, seed=5)
    await harness.finished(record, timeout=30)
    await harness.fake.wait_for(lambda: len(record.followups) == 2, timeout=30)
    made = [image_bytes(record)[0]] + [m.attachments[0].data for m in record.followups]

    click = await share(harness, world.alice, record)

    assert "Shared to" in click.said()
    posts = gallery_posts(harness)
    assert [a.data for post in posts for a in post.attachments] == made
    assert len(posts) == 3  # one image per message fits this server's upload limit
    assert posts[0].custom_ids() == [
        f"gallery:vote:{record.original.custom_ids()[0].split(':')[2]}"
    ]
    delete = await harness.click(world.alice, record, "delete")
    await harness.answered(delete)
    await harness.fake.wait_for(lambda: all(post.deleted for post in posts))
    assert gallery_posts(harness) == []


# -- buttons act on what the database says -------------------------------------------------------


def job_id_of(record) -> str:
    return record.original.custom_ids()[0].split(":")[2]


async def test_a_vote_on_a_post_whose_job_was_deleted_is_refused_and_stores_nothing(harness):
    world = harness.world
    await set_gallery(harness)
    record = await finished_job(harness)
    await share(harness, world.alice, record)
    [post] = gallery_posts(harness)
    delete = await harness.click(world.alice, record, "delete")
    await harness.answered(delete)
    await harness.fake.wait_for(lambda: post.deleted)

    late = await vote(harness, world.bob, post)  # bob's client still shows the post
    await harness.answered(late)

    assert late.latest.ephemeral and "not in the gallery" in late.said()
    assert await harness.bot.services.gallery.post_for(job_id_of(record)) is None
    top = await harness.command(world.bob, "gallery top", period="all")
    await harness.answered(top)
    assert "No images were shared" in top.latest.text


async def test_a_forged_vote_for_a_job_never_shared_is_refused_and_stores_nothing(harness):
    world = harness.world
    record = await finished_job(harness)
    job_id = job_id_of(record)
    # A Vote button for a job nobody shared, on a message of the bot's own.
    channel = harness.bot.get_channel(world.general.id)
    sent = await channel.send("vote!", view=vote_view(job_id, 0))
    forged = world.general.messages[sent.id]

    click = await harness.fake.click(
        world.guild, world.general, world.bob, forged, forged.custom_ids()[0]
    )
    await harness.answered(click)

    assert click.latest.ephemeral and "not in the gallery" in click.said()
    assert await harness.bot.services.gallery.post_for(job_id) is None
    assert "Vote (1)" not in str(forged.components)


# -- Share and Delete pressed together ---------------------------------------------------------


async def test_share_and_delete_pressed_together_never_leave_a_gallery_post(harness):
    world = harness.world
    await set_gallery(harness)
    harness.fake.upload_delay = 0.2  # a slow gallery upload: Delete lands while it is posted
    for _ in range(4):
        record = await finished_job(harness)
        shared, deleted = await asyncio.gather(
            harness.click(world.alice, record, "share"),
            harness.click(world.alice, record, "delete"),
        )
        await harness.answered(shared)
        await harness.answered(deleted)
        assert "Deleted" in deleted.said()
        assert "Shared to" in shared.said() or "deleted" in shared.said()
        assert "went wrong" not in shared.said() + deleted.said()
        await harness.fake.wait_for(lambda: gallery_posts(harness) == [])
        assert await harness.bot.services.gallery.post_for(job_id_of(record)) is None
        harness.clock.advance(11)


async def test_two_deletes_at_once_give_one_deleted_and_no_error(harness):
    world = harness.world
    record = await finished_job(harness)
    first, second = await asyncio.gather(
        harness.click(world.alice, record, "delete"),
        harness.click(world.alice, record, "delete"),
    )
    await harness.answered(first)
    await harness.answered(second)
    said = sorted([first.said(), second.said()])
    assert sum("🗑️ Deleted." in s for s in said) == 1
    assert sum("already deleted" in s for s in said) == 1
