"""Privacy end to end: Delete erases a job's texts, `/privacy forget` erases a member's, and
jobs older than RETENTION_DAYS lose theirs; what the limits and the ledger count stays."""

from __future__ import annotations

from jobs.model import JobState
from jobs.retention import DAY


async def finished_job(harness, member=None, **options):
    harness.clock.advance(3600)  # past the cooldown and the hourly limits
    record = await harness.imagine(member=member, **options)
    await harness.finished(record)
    assert "Images ready" in record.latest.text
    await harness.bot.services.runner.wait_idle()  # its end is recorded
    return record


async def stored_jobs(harness, member):
    """The member's jobs as the database holds them, newest first."""
    return await harness.bot.services.jobs.history(harness.world.guild.id, member.id, limit=100)


async def history_seen_by_mod(harness, member):
    record = await harness.command(harness.world.mod, "history", user=member)
    await harness.answered(record)
    return record.latest.text


def assert_erased(job):
    assert job.request.prompt == "" and job.request.negative_prompt == ""
    assert job.request.init_image is None
    assert job.origin.interaction_token is None


async def forget(harness, member, answer: str):
    question = await harness.command(member, "privacy forget")
    await harness.answered(question)
    assert "cannot be undone" in question.latest.text and question.latest.ephemeral
    message = question.original
    [custom_id] = [
        c["custom_id"]
        for row in message.components
        for c in row["components"]
        if c.get("label") == answer
    ]
    click = await harness.fake.click(
        harness.world.guild, harness.world.general, member, message, custom_id
    )
    await harness.fake.wait_for(lambda: click.acknowledged)
    await harness.fake.wait_for(lambda: "Continue?" not in question.original.content)
    return question.original.content


async def test_delete_erases_the_prompts_and_token_but_keeps_the_counts(harness):
    record = await finished_job(harness, prompt="my secret garden", negative_prompt="fog", steps=25)
    delete = await harness.click(harness.world.alice, record, "delete")
    await harness.answered(delete)
    [job] = await stored_jobs(harness, harness.world.alice)
    assert job.deleted_at is not None
    assert_erased(job)
    assert job.request.steps == 25 and job.cost == 1 and job.state is JobState.DONE
    seen = await history_seen_by_mod(harness, harness.world.alice)
    assert "secret garden" not in seen and "fog" not in seen
    assert "25 steps" in seen


async def test_forget_after_confirm_erases_only_that_members_finished_jobs(harness):
    await finished_job(harness, prompt="alice one")
    await finished_job(harness, prompt="alice two")
    await finished_job(harness, member=harness.world.bob, prompt="bob's own")
    said = await forget(harness, harness.world.alice, "Confirm")
    assert "Erased the texts of 2 job(s)" in said
    for job in await stored_jobs(harness, harness.world.alice):
        assert_erased(job)
    [bobs] = await stored_jobs(harness, harness.world.bob)
    assert bobs.request.prompt == "bob's own"
    seen = await history_seen_by_mod(harness, harness.world.alice)
    assert "alice one" not in seen and "alice two" not in seen


async def test_forget_cancelled_erases_nothing(harness):
    await finished_job(harness, prompt="keep me")
    said = await forget(harness, harness.world.alice, "Cancel")
    assert "Nothing was erased" in said
    [job] = await stored_jobs(harness, harness.world.alice)
    assert job.request.prompt == "keep me"


async def test_forget_leaves_running_jobs_alone(harness):
    harness.emulator.duration = 30
    running = await harness.imagine(prompt="still drawing")
    await harness.fake.wait_for(lambda: harness.emulator.stats.tasks_created == 1)
    said = await forget(harness, harness.world.alice, "Confirm")
    assert "Erased the texts of 0 job(s)" in said and "1 job(s) still running" in said
    [job] = await stored_jobs(harness, harness.world.alice)
    assert job.request.prompt == "still drawing" and job.origin.interaction_token
    assert running.latest is not None and "Images ready" not in running.latest.text


async def test_texts_are_erased_after_the_retention_period(harness):
    harness.settings_overrides = {"retention_days": 30}
    await harness.restart_bot()
    await finished_job(harness, prompt="an old one")
    harness.clock.advance(29 * DAY)
    await finished_job(harness, prompt="a newer one")
    privacy = harness.bot.get_cog("Privacy")
    assert await privacy.sweep_now() == 0
    harness.clock.advance(2 * DAY)
    assert await privacy.sweep_now() == 1
    newer, older = await stored_jobs(harness, harness.world.alice)
    assert_erased(older)
    assert newer.request.prompt == "a newer one"


async def test_the_retention_sweep_runs_at_start(harness):
    await finished_job(harness, prompt="from long ago")
    harness.clock.advance(91 * DAY)  # RETENTION_DAYS is 90 by default
    await harness.restart_bot()
    [job] = await stored_jobs(harness, harness.world.alice)
    assert_erased(job)


async def test_reroll_or_vary_an_erased_job_is_refused_instead_of_an_empty_prompt(harness):
    record = await finished_job(harness, images=1)
    await forget(harness, harness.world.alice, "Confirm")
    harness.clock.advance(3600)
    for label in ("reroll", "variation"):
        click = await harness.click(harness.world.alice, record, label)
        await harness.answered(click)
        assert "not available any more" in click.said() and click.latest.ephemeral
    assert harness.emulator.stats.tasks_created == 1  # nothing new was submitted
