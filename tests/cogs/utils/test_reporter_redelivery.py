"""A delivery taken up again (after a restart or a takeover) does not post twice: the reply is
edited in place, and follow-ups already recorded are not sent again."""

from __future__ import annotations

from cogs.utils.buttons import result_view
from cogs.utils.reporter import DiscordReporter
from tests.harness import image_bytes, one_image_per_message


async def test_a_delivery_cut_short_after_one_follow_up_posts_only_the_missing_one(harness):
    harness.world.guild.upload_limit = one_image_per_message("a lighthouse at dusk", 5, 3)
    record = await harness.imagine(images=3, seed=5)
    await harness.finished(record)
    await harness.fake.wait_for(lambda: len(record.followups) == 2)
    images = [image_bytes(record)[0]] + [m.attachments[0].data for m in record.followups]
    services = harness.bot.services
    [job] = await services.jobs.history(harness.world.guild.id, harness.world.alice.id, limit=1)
    recorded: list[tuple[int, ...]] = []

    async def record_followups(ids: tuple[int, ...]) -> None:
        recorded.append(ids)

    reporter = DiscordReporter(
        harness.bot,
        result_view=lambda j: result_view(j, services.backend.capabilities),
        moderator_channels=services.moderation.modlog_channels,
        clock=harness.clock,
    )
    first_followup = job.followup_message_ids[0]
    cut_short = job.with_(followup_message_ids=(first_followup,))  # as a crash would leave it

    posted = await reporter.deliver(cut_short, images, record=record_followups)

    assert posted.message_id == job.message_id  # the same reply, edited in place
    assert len(record.followups) == 3  # one more follow-up, not two
    assert posted.followup_message_ids[0] == first_followup
    assert recorded == [posted.followup_message_ids]
