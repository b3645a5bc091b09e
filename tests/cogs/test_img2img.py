"""`/imagine image:` — image-to-image from a member's picture, checked before any credit is
spent and fitted to the SDXL size nearest its shape."""

from __future__ import annotations

import io

from PIL import Image

from quota import ledger


def png(width: int, height: int, colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


async def test_a_picture_starts_the_job_at_the_nearest_sdxl_size_and_strength(harness):
    record = await harness.imagine(
        prompt="the same scene at night", image=("photo.png", png(1600, 900)), strength=0.4
    )
    await harness.finished(record, timeout=20)
    assert "Images ready" in record.latest.text
    assert "Size: 1344×768" in record.latest.text  # 16:9 → SDXL's 1344×768 bucket
    assert harness.emulator.stats.requests["img2img"] == 1
    [task] = harness.emulator._tasks.values()
    assert task.job.denoising_strength == 0.4
    [(_, data)] = record.latest.attachments
    with Image.open(io.BytesIO(data)) as made:
        assert made.size == (1344, 768)


async def test_an_attachment_that_is_not_a_picture_is_refused_before_anything_is_spent(harness):
    record = await harness.imagine(image=("notes.txt", b"just some text"))
    await harness.fake.wait_for(lambda: record.followups and record.original_deleted)
    [said] = record.followups  # after the "thinking" reply, which is removed
    assert said.ephemeral and "**image**" in said.content
    assert "not a PNG, JPEG or WebP" in said.content
    assert harness.emulator.stats.tasks_created == 0
    assert (await ledger.balance(harness.bot.services.db)).reserved == 0


async def test_a_picture_over_the_pixel_cap_is_refused_without_decoding_it(harness):
    record = await harness.imagine(image=("huge.png", png(5000, 4000, (0, 0, 0))))
    await harness.fake.wait_for(lambda: record.followups and record.original_deleted)
    [said] = record.followups
    assert said.ephemeral and "too many pixels" in said.content
    assert harness.emulator.stats.tasks_created == 0
