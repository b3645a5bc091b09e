"""The fault matrix: whatever Omniinfer or Discord does, the member gets their images or a
clear message, exactly once, and the ledger balances (nothing left reserved)."""

from __future__ import annotations

import asyncio

import pytest

from jobs.model import JobState
from omni.emulator import Fault
from quota import ledger


async def settled(harness) -> ledger.Balance:
    await harness.bot.services.runner.wait_idle()
    balance = await ledger.balance(harness.bot.services.db)
    assert balance.reserved == 0
    unfinished = await harness.bot.services.jobs.unfinished()
    assert unfinished == []
    return balance


async def commands_handled(timeout: float = 10.0) -> None:
    """Wait until the bot has finished handling every command it was sent: discord.py runs
    each in a task of its own, named "CommandTree-invoker" (none left: all handled)."""
    handling = [t for t in asyncio.all_tasks() if t.get_name() == "CommandTree-invoker"]
    if handling:
        _, pending = await asyncio.wait(handling, timeout=timeout)
        assert not pending, f"still handling a command after {timeout} s"


async def run_with(harness, *faults: Fault, **options):
    for fault in faults:
        harness.emulator.faults.add(fault)
    record = await harness.imagine(**options)
    await harness.finished(record, timeout=30)
    return record


@pytest.mark.parametrize("code", [-1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 99])
async def test_every_envelope_code_on_submit_ends_with_a_message_and_no_charge(harness, code):
    record = await run_with(harness, Fault("txt2img", "code", code=code, times=10))
    assert "❌" in record.latest.text
    balance = await settled(harness)
    assert balance.spent == 0


@pytest.mark.parametrize("code", [-1, 5, 9])
async def test_transient_codes_while_polling_are_ridden_out(harness, code):
    record = await run_with(harness, Fault("progress", "code", code=code, times=3))
    assert "Images ready" in record.latest.text
    assert (await settled(harness)).spent == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault("progress", "http_status", status=502, times=4),
        Fault("progress", "drop", times=3),
        Fault("progress", "malformed", times=3),
        Fault("progress", "delay", seconds=3, times=1),
    ],
    ids=["5xx-burst", "dropped", "malformed", "slower-than-timeout"],
)
async def test_faults_while_polling_still_deliver_the_images(harness, fault):
    record = await run_with(harness, fault)
    assert "Images ready" in record.latest.text
    assert (await settled(harness)).spent == 1


@pytest.mark.parametrize("kind", ["drop", "malformed", "http_status"])
async def test_a_submit_fault_after_acceptance_is_never_resubmitted_and_counted(harness, kind):
    record = await run_with(harness, Fault("txt2img", kind, after_accept=True))
    assert "did not confirm" in record.latest.text
    assert harness.emulator.stats.tasks_created == 1
    assert (await settled(harness)).spent == 1  # Omniinfer may have billed it


async def test_a_task_unknown_to_omniinfer_ends_cleanly(harness):
    record = await run_with(harness, Fault("progress", "code", code=3, times=50))
    assert "lost track" in record.latest.text
    assert (await settled(harness)).spent == 0


async def test_image_downloads_that_fail_say_so_and_count_as_spent(harness):
    record = await run_with(harness, Fault("image", "http_status", status=500, times=50))
    assert "could not be fetched" in record.latest.text
    assert (await settled(harness)).spent == 1


async def test_discord_5xx_on_the_upload_is_retried(harness):
    harness.fake.fail_next("PATCH", r"/webhooks/.*/messages/\d+", status=502, times=2)
    record = await harness.imagine()
    await harness.finished(record, timeout=30)
    assert "Images ready" in record.latest.text
    assert (await settled(harness)).spent == 1


async def test_discord_429_on_edits_is_waited_out(harness):
    harness.fake.force_rate_limit(r"/webhooks/.*/messages/", retry_after=0.5, times=3)
    record = await harness.imagine()
    await harness.finished(record)
    assert "Images ready" in record.latest.text
    await settled(harness)


async def test_an_acknowledgement_too_late_reserves_nothing(harness):
    harness.fake.ack_deadline = 0.0
    record = await harness.imagine()
    await harness.fake.wait_for(lambda: 10062 in record.errors)
    await commands_handled()  # a broken bot would have admitted a job by now, and queued it
    balance = await settled(harness)
    assert await harness.bot.services.db.fetchval("SELECT COUNT(*) FROM jobs") == 0
    assert harness.emulator.stats.tasks_created == 0
    assert balance.spent == 0


async def test_an_expired_token_sends_the_result_to_the_channel_mentioning_the_member(harness):
    harness.emulator.duration = 3
    record = await harness.imagine(prompt="a slow boat")
    await harness.fake.wait_for(lambda: harness.emulator.stats.tasks_created == 1)
    harness.fake.advance(16 * 60)
    harness.clock.advance(16 * 60)
    channel = harness.world.general
    await harness.fake.wait_for(
        lambda: any(m.attachments for m in harness.fake.channel_messages(channel)), timeout=20
    )
    [posted] = [m for m in harness.fake.channel_messages(channel) if m.attachments]
    assert f"<@{harness.world.alice.id}>" in posted.content
    assert not record.latest.attachments
    assert (await settled(harness)).spent == 1


async def test_a_submitted_job_resumes_after_a_restart_without_resubmitting(harness):
    harness.emulator.duration = 3
    record = await harness.imagine()
    await harness.fake.wait_for(lambda: harness.emulator.stats.tasks_created == 1)
    await harness.restart_bot()
    await harness.finished(record, timeout=20)
    assert "Images ready" in record.latest.text
    assert harness.emulator.stats.tasks_created == 1
    assert (await settled(harness)).spent == 1


async def test_a_queued_job_whose_reply_expired_is_refunded_and_explained(harness):
    harness.settings_overrides = {"max_jobs_in_flight": 1}
    await harness.restart_bot()
    harness.emulator.duration = 2
    await harness.imagine()
    second = await harness.imagine(member=harness.world.bob)
    await harness.fake.wait_for(
        lambda: second.latest is not None and "Waiting" in second.latest.text
    )
    await harness.stop_bot()
    assert "restarting" in second.latest.text
    harness.clock.advance(16 * 60)
    harness.fake.advance(16 * 60)
    await harness.start_bot()
    channel = harness.world.general
    await harness.fake.wait_for(
        lambda: any(
            "waited too long" in str(m.embeds) for m in harness.fake.channel_messages(channel)
        )
    )
    jobs = await harness.bot.services.db.fetch("SELECT state, charge, user_id FROM jobs")
    bobs = [j for j in jobs if j["user_id"] == harness.world.bob.id]
    assert [(j["state"], j["charge"]) for j in bobs] == [(JobState.FAILED.value, "released")]
    await settled(harness)


async def test_past_the_maximum_queue_length_imagine_answers_busy_and_reserves_nothing(harness):
    running, waiting = await harness.one_running_one_waiting(task_seconds=2, max_queue_length=1)
    busy = await harness.imagine(member=harness.world.mod)
    await harness.finished(busy)
    assert busy.followups[0].ephemeral
    assert "busy" in busy.followups[0].content and "<t:" in busy.followups[0].content
    await harness.finished(running)
    await harness.finished(waiting, timeout=20)
    assert (await settled(harness)).spent == 2
