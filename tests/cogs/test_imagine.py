"""/imagine end to end: what a member sees in Discord."""

from __future__ import annotations

from tests.harness import image_bytes


async def test_happy_path_defers_shows_progress_and_posts_the_emulators_pngs(harness):
    emulator = harness.emulator
    emulator.duration = 2.0
    record = await harness.imagine(prompt="a red fox in snow", images=2, seed=42)
    await harness.finished(record)
    assert record.response_type == 5  # deferred at once: "thinking"
    assert record.history[0].loading
    progress = [s for s in record.history[1:-1]]
    assert progress, "the reply was edited with progress before the images"
    assert all("Status" in s.text for s in progress)
    final = record.latest
    assert "Images ready" in final.text
    assert "42, 43" in final.text
    pngs = image_bytes(record)
    assert len(pngs) == 2
    async with __import__("aiohttp").ClientSession() as session:
        task_id = next(iter(emulator.stats.polls_by_task))
        for index, data in enumerate(pngs):
            async with session.get(f"{emulator.base_url}/images/{task_id}-{index}.png") as r:
                assert data == await r.read()
    assert harness.fake.rate_limited_count == 0
    assert harness.fake.unhandled == []
