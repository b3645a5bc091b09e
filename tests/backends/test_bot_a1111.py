"""The whole bot with `BACKEND=a1111`: /imagine through the real discord.py, the fake Discord
and emulated AUTOMATIC1111 servers (one, or a pool of three), for every way it can end."""

from __future__ import annotations

import asyncio
import io

from PIL import Image

from a1111.emulator import Emulator, Fault
from tests.backends.conftest import A1111_AUTH, DONE, finished, job_states, settled
from tests.harness import image_bytes

PASSWORD = A1111_AUTH.partition(":")[2]


def buttons(record) -> list[str]:
    return [c.split(":")[1] for c in record.original.custom_ids()]


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.format == "PNG"
        return image.size


async def quota_text(harness, member) -> str:
    record = await harness.command(member, "quota")
    await harness.answered(record)
    return record.latest.text


async def test_imagine_shows_progress_and_a_preview_then_pngs_with_a1111s_seeds(
    a1111_harness,
):
    server = a1111_harness.servers[0]
    server.duration = 3.0
    record = await a1111_harness.imagine(
        prompt="a red fox in snow", images=2, seed=42, size="1216x832"
    )
    await finished(a1111_harness, record, timeout=20)
    assert record.history[0].loading
    running = [s for s in record.history if "Generating" in s.text]
    assert running and any("%" in s.text for s in running), [s.text for s in record.history]
    assert any(e.get("image") for s in running for e in s.embeds)  # A1111's live preview
    final = record.latest
    assert "Images ready" in final.text and "a red fox in snow" in final.text
    assert "42, 43" in final.text  # A1111's info: one seed per image, counting up
    assert [png_size(data) for data in image_bytes(record)] == [(1216, 832)] * 2
    [sent] = server.history
    assert (sent.prompt, sent.seed, sent.width, sent.height) == ("a red fox in snow", 42, 1216, 832)
    assert server.stats.max_concurrent == 1
    assert a1111_harness.fake.unhandled == []
    await settled(a1111_harness)


async def test_a1111_offers_upscale_and_variations_and_both_deliver(a1111_harness):
    record = await a1111_harness.imagine(images=2)
    await finished(a1111_harness, record)
    labels = buttons(record)
    assert {"reroll", "share", "details", "delete"} <= set(labels)
    assert labels.count("upscale") == 2 and labels.count("variation") == 4
    a1111_harness.clock.advance(60)  # past the cooldown
    upscale = await a1111_harness.click(a1111_harness.world.alice, record, "upscale", 1)
    await finished(a1111_harness, upscale)
    [upscaled] = image_bytes(upscale)
    assert png_size(upscaled) == (2048, 2048)
    a1111_harness.clock.advance(60)
    variation = await a1111_harness.click(a1111_harness.world.alice, record, "variation")
    await finished(a1111_harness, variation)
    assert "Images ready" in variation.latest.text
    server = a1111_harness.servers[0]
    assert server.stats.requests["extra-single-image"] == 1
    assert server.history[-1].subseed_strength > 0  # by A1111's variation seed
    assert server.stats.requests["img2img"] == 0


async def test_a_second_job_waits_for_the_busy_server_then_is_delivered(a1111_harness):
    server = a1111_harness.servers[0]
    server.duration = 1.5
    first = await a1111_harness.imagine()
    second = await a1111_harness.imagine(member=a1111_harness.world.bob)
    await asyncio.gather(finished(a1111_harness, first), finished(a1111_harness, second, 20))
    assert "Images ready" in first.latest.text and "Images ready" in second.latest.text
    assert server.stats.max_concurrent == 1
    assert server.stats.max_waiting == 0  # the bot held it back rather than queue it there
    assert (await settled(a1111_harness)).spent == 2  # images made count against the budget


async def test_a_sampler_the_server_no_longer_has_is_named(a1111_harness):
    server = a1111_harness.servers[0]
    server.samplers = tuple(s for s in server.samplers if s != "DPM++ SDE Karras")
    record = await a1111_harness.imagine(sampler="DPM++ SDE Karras")
    await finished(a1111_harness, record)
    assert "refused an option" in record.latest.text
    assert "Sampler not found" in record.latest.text
    await settled(a1111_harness)


async def test_a_generation_that_fails_on_the_server_gives_its_words_not_the_password(
    a1111_harness,
):
    a1111_harness.servers[0].faults.add(
        Fault("txt2img", "status", after_start=True, message=f"CUDA out of memory {PASSWORD}")
    )
    record = await a1111_harness.imagine()
    await finished(a1111_harness, record)
    assert "generation failed" in record.latest.text
    assert "CUDA out of memory" in record.latest.text
    assert PASSWORD not in record.said()
    assert "40 of 40" in await quota_text(a1111_harness, a1111_harness.world.alice)
    await settled(a1111_harness)


async def test_credentials_changed_on_the_server_say_so_without_echoing_them(a1111_harness):
    server = a1111_harness.servers[0]
    port = int(server.base_url.rsplit(":", 1)[1])
    await server.stop()  # restarted by its owner with another --api-auth
    replacement = Emulator(duration=0.3, auth="admin:another-password")
    await replacement.start(port=port)
    try:
        record = await a1111_harness.imagine()
        await finished(a1111_harness, record)
        assert "was refused" in record.latest.text
        assert PASSWORD not in record.said() and "another-password" not in record.said()
        await settled(a1111_harness)
    finally:
        await replacement.stop()


async def test_a_server_lost_mid_run_tells_the_member_and_charges_nothing(a1111_harness):
    server = a1111_harness.servers[0]
    server.duration = 30.0  # still running when the new process looks, however slow the restart
    record = await a1111_harness.imagine()
    async with asyncio.timeout(10):
        await server.wait_until(lambda emulator: emulator.current_task is not None)
    await server.go_down()
    await finished(a1111_harness, record, timeout=20)
    assert "lost track" in record.latest.text and "Nothing was charged" in record.latest.text
    assert "40 of 40" in await quota_text(a1111_harness, a1111_harness.world.alice)
    await settled(a1111_harness)


async def test_a_restart_mid_job_tells_the_member_and_does_not_count(a1111_harness):
    server = a1111_harness.servers[0]
    server.duration = 30.0  # still running when the new process looks, however slow the restart
    record = await a1111_harness.imagine()
    async with asyncio.timeout(10):
        await server.wait_until(lambda emulator: emulator.current_task is not None)
    await a1111_harness.restart_bot()
    await finished(a1111_harness, record, timeout=20)
    assert "lost track" in record.latest.text and "Nothing was charged" in record.latest.text
    assert not record.latest.attachments
    async with asyncio.timeout(10):  # the server's own event: the orphan job is stopped
        await server.wait_until(lambda emulator: emulator.stats.jobs_interrupted == 1)
    assert "40 of 40" in await quota_text(a1111_harness, a1111_harness.world.alice)
    await settled(a1111_harness)
    assert await job_states(a1111_harness) == [("failed", "released")]


async def test_a_pool_keeps_delivering_when_one_server_goes_down_mid_run(a1111_pool_harness):
    harness = a1111_pool_harness
    servers = harness.servers
    for server in servers:
        server.duration = 2.0
    members = [harness.world.guild.add_member(f"member{i}") for i in range(6)]
    await harness.fake.sync_guild(harness.world.guild)
    records = [await harness.imagine(member=m) for m in members]
    await harness.fake.wait_for(lambda: all(s.current_task is not None for s in servers))
    down = servers[0]
    await down.go_down()
    await asyncio.gather(*(finished(harness, r, timeout=30) for r in records))
    texts = [r.latest.text for r in records]
    assert sum("lost track" in t for t in texts) == 1  # the job that server was running
    assert sum("Images ready" in t for t in texts) == 5
    assert down.stats.jobs_started == 1
    assert sum(s.stats.jobs_finished for s in servers[1:]) == 5
    assert all(s.stats.max_concurrent == 1 and s.stats.max_waiting == 0 for s in servers)
    assert (await settled(harness)).spent == 5  # the lost job counts for nothing
    states = await job_states(harness)
    assert states.count((DONE, "committed")) == 5
