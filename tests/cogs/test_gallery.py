"""Community sharing end to end: gallery, votes, history, variations and upscale."""

from __future__ import annotations

import io

from PIL import Image, ImageStat

from quota import ledger
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
