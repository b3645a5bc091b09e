"""The whole bot with `BACKEND=novita`: /imagine through the real discord.py, the fake
Discord and the Novita v3 emulator, from the click to the images, for every way it can end."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from omni.v3.emulator import Fault
from tests.backends.conftest import DONE, job_states, settled
from tests.harness import image_bytes

pytestmark = pytest.mark.usefixtures("novita_harness")


def buttons(record) -> list[str]:
    return [c.split(":")[1] for c in record.original.custom_ids()]


async def test_imagine_shows_progress_then_posts_the_emulators_pngs_and_the_seed(
    novita_harness, novita
):
    novita.duration = 3.0
    record = await novita_harness.imagine(prompt="a red fox in snow", images=2, seed=42)
    await novita_harness.finished(record, timeout=20)
    assert record.history[0].loading
    progress = [s for s in record.history[1:-1] if "Status" in s.text]
    assert progress, [s.text for s in record.history]
    final = record.latest
    assert "Images ready" in final.text and "a red fox in snow" in final.text
    assert "Seed: 42\n" in final.text  # the one seed Novita reports, no invented 43
    [task] = novita._tasks.values()
    assert task.job.seed == 42 and task.job.image_num == 2
    assert image_bytes(record) == [task.job.render(i) for i in range(2)]
    assert novita_harness.fake.unhandled == []
    assert (await settled(novita_harness)).spent == 2


async def test_a_size_is_sent_and_the_images_are_pngs_of_that_size(novita_harness, novita):
    record = await novita_harness.imagine(size="1216x832")
    await novita_harness.finished(record)
    [data] = image_bytes(record)
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.size) == ("PNG", (1216, 832))


async def test_novita_has_no_preview_and_no_upscale_but_variations_by_img2img(
    novita_harness, novita
):
    novita.duration = 2.0
    record = await novita_harness.imagine(images=2)
    await novita_harness.finished(record)
    assert not any(e.get("image") for s in record.history[:-1] for e in s.embeds)
    labels = buttons(record)
    assert {"reroll", "share", "details", "delete", "variation"} <= set(labels)
    assert "upscale" not in labels
    assert labels.count("variation") == 4  # subtle and strong, for each of the 2 images
    novita_harness.clock.advance(60)  # past the cooldown
    variation = await novita_harness.click(novita_harness.world.alice, record, "variation")
    await novita_harness.finished(variation)
    assert "Images ready" in variation.latest.text
    assert [t.job.task_type for t in novita._tasks.values()] == ["TXT_TO_IMG", "IMG_TO_IMG"]


async def test_reroll_and_details_work_through_novita(novita_harness, novita):
    first = await novita_harness.imagine(prompt="a cat", seed=9)
    await novita_harness.finished(first)
    details = await novita_harness.click(novita_harness.world.bob, first, "details")
    await novita_harness.answered(details)
    assert details.latest.ephemeral and "Seeds: 9" in details.latest.text
    reroll = await novita_harness.click(novita_harness.world.bob, first, "reroll")
    await novita_harness.finished(reroll)
    assert "Images ready" in reroll.latest.text
    assert novita.stats.tasks_created == 2


async def test_a_refused_key_says_so_and_charges_nothing(novita_harness, novita):
    novita.api_key = "sk-rotated-elsewhere"
    record = await novita_harness.imagine()
    await novita_harness.finished(record)
    assert "key was refused" in record.latest.text
    assert "sk-rotated" not in record.said() and "Traceback" not in record.said()
    assert (await settled(novita_harness)).spent == 0


async def test_balance_not_enough_pauses_generation_for_everyone(novita_harness, novita):
    modlog = await novita_harness.command(
        novita_harness.world.mod, "modlog channel", channel=novita_harness.world.modlog
    )
    await novita_harness.answered(modlog)
    novita.balance = 0
    record = await novita_harness.imagine()
    await novita_harness.finished(record)
    assert "out of credit" in record.latest.text
    balance = await settled(novita_harness)
    assert balance.spent == 0 and balance.paused_reason
    refused = await novita_harness.imagine(member=novita_harness.world.bob)
    await novita_harness.finished(refused)
    assert "paused" in refused.said()
    assert novita.stats.tasks_created == 0
    await novita_harness.fake.wait_for(
        lambda: any(
            "out of credit" in m.content
            for m in novita_harness.fake.channel_messages(novita_harness.world.modlog)
        )
    )


async def test_a_429_makes_the_job_wait_then_it_is_delivered(novita_harness, novita):
    novita.faults.add(
        Fault("txt2img", "refuse", status=429, reason="RATE_LIMIT_EXCEEDED", message="slow")
    )
    record = await novita_harness.imagine()
    await novita_harness.finished(record, timeout=30)
    assert "Images ready" in record.latest.text
    assert novita.stats.faults_fired["txt2img/refuse"] == 1
    assert novita.stats.requests["txt2img"] == 2 and novita.stats.tasks_created == 1
    assert (await settled(novita_harness)).spent == 1


async def test_an_option_novita_refuses_is_named(novita_harness, novita):
    novita.faults.add(
        Fault(
            "txt2img",
            "refuse",
            status=400,
            reason="INVALID_REQUEST_BODY",
            message="request.guidance_scale: must be in [1, 30]",
        )
    )
    record = await novita_harness.imagine()
    await novita_harness.finished(record)
    assert "refused an option" in record.latest.text
    assert "guidance_scale" in record.latest.text
    assert (await settled(novita_harness)).spent == 0


async def test_a_failed_task_gives_novitas_reason_and_charges_nothing(novita_harness, novita):
    novita.faults.fail_next_task("NSFW content detected")
    record = await novita_harness.imagine()
    await novita_harness.finished(record)
    assert "generation failed" in record.latest.text
    assert "NSFW content detected" in record.latest.text
    assert (await settled(novita_harness)).spent == 0


async def test_a_task_novita_no_longer_knows_ends_with_a_message(novita_harness, novita):
    novita.duration = 3.0
    record = await novita_harness.imagine()
    await novita_harness.fake.wait_for(lambda: novita.stats.tasks_created == 1)
    [task_id] = novita._tasks
    novita.forget(task_id)
    await novita_harness.finished(record, timeout=20)
    assert "lost track" in record.latest.text
    assert not record.latest.attachments
    balance = await settled(novita_harness)
    assert balance.spent == 1  # Novita took (and billed) the task before forgetting it


async def test_a_restart_mid_job_resumes_the_task_and_delivers_it_once(novita_harness, novita):
    novita.duration = 3.0
    record = await novita_harness.imagine()
    await novita_harness.fake.wait_for(lambda: novita.stats.tasks_created == 1)
    await novita_harness.restart_bot()
    await novita_harness.finished(record, timeout=20)
    assert "Images ready" in record.latest.text
    assert novita.stats.tasks_created == 1  # followed again, never resubmitted
    assert sum(bool(s.attachments) for s in record.history) == 1
    assert record.followups == []
    assert (await settled(novita_harness)).spent == 1
    assert await job_states(novita_harness) == [(DONE, "committed")]
