"""`A1111Backend` end to end against emulated AUTOMATIC1111 servers: readings, results,
restarts, cancelling, full and failing pools, every error."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest
from PIL import Image

from a1111.client import A1111Client
from a1111.emulator import DEFAULT_SAMPLERS, Emulator, Fault
from a1111.models import GenerationRequest
from backends.a1111 import SDXL_SIZES, TASK_PREFIX, A1111Backend
from jobs.backend import (
    Bounds,
    CredentialsRefused,
    Generation,
    NotAccepted,
    OptionRefused,
    Reading,
    TaskFailed,
    TaskLost,
    TaskState,
    TaskTimedOut,
    Unavailable,
)
from tests.a1111 import png, running, within

PASSWORD = "gpu-box-password-42"
AUTH = f"bot:{PASSWORD}"
FAST_CHECKS = (0.05, 0.2)
REQUEST = Generation(
    prompt="a lighthouse at dusk, oil painting",
    sampler="Euler a",
    steps=20,
    seed=42,
    width=1024,
    height=1024,
    images=2,
)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def emus() -> AsyncIterator[list[Emulator]]:
    async with running(2, duration=1.0, auth=AUTH) as emulators:
        yield emulators


def make_backend(
    session: aiohttp.ClientSession, emulators: list[Emulator], *, auth: str | None = AUTH
) -> A1111Backend:
    return A1111Backend(
        [e.base_url for e in emulators],
        auth=auth,
        session=session,
        timeout=5,
        poll_interval=0.05,
        health_backoff=FAST_CHECKS,
    )


@pytest.fixture
async def backend(session, emus) -> AsyncIterator[A1111Backend]:
    backend = make_backend(session, emus)
    await backend.start()
    yield backend
    await backend.close()


async def follow_all(backend: A1111Backend, handle: str, max_wait: float = 15) -> list[Reading]:
    return [r async for r in backend.follow(handle, max_wait=max_wait)]


async def run(backend: A1111Backend, handle: str) -> list[Reading]:
    return await within(follow_all(backend, handle))


def size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.format == "PNG"
        return image.size


def task_id(handle: str) -> str:
    return handle.split(":", 2)[2]


async def long_jobs(emus: list[Emulator]) -> None:
    for emu in emus:
        emu.duration = 30.0


# -- what it offers ------------------------------------------------------------------------


async def test_capabilities_come_from_the_servers(backend):
    caps = backend.capabilities
    assert caps.name == "a1111"
    assert caps.samplers == DEFAULT_SAMPLERS
    assert caps.default_sampler == "DPM++ 2M Karras"
    assert (caps.steps, caps.cfg_scale) == (Bounds(1, 150), Bounds(1, 30))
    assert caps.sizes == SDXL_SIZES and len(caps.sizes) == 9
    assert all(0.9e6 <= w * h <= 1.1e6 for w, h in caps.sizes)
    assert caps.max_images == 4
    assert caps.upscale and caps.img2img and caps.subseed and caps.cancel
    assert not caps.costs_credit
    assert backend.capacity == 2
    assert PASSWORD not in repr(backend)


async def test_the_default_sampler_is_the_best_one_the_servers_share(session):
    samplers = ("Euler a", "DPM++ SDE Karras", "DDIM")
    async with running(2, samplers=samplers) as emulators:
        backend = make_backend(session, emulators, auth=None)
        await backend.start()
        try:
            assert backend.capabilities.samplers == samplers
            assert backend.capabilities.default_sampler == "DPM++ SDE Karras"
        finally:
            await backend.close()


# -- the whole path ------------------------------------------------------------------------


async def test_submit_follow_result(backend, emus):
    handle = await within(backend.submit(REQUEST))
    index, url_hash, task = handle.split(":")
    assert index in ("0", "1") and len(url_hash) == 8 and task.startswith(TASK_PREFIX)
    readings = await run(backend, handle)
    assert readings[-1].state is TaskState.SUCCEEDED
    assert all(r.state is not TaskState.SUCCEEDED for r in readings[:-1])
    running_ = [r for r in readings if r.state is TaskState.RUNNING]
    assert running_ and all(0 <= r.progress <= 1 for r in running_)
    assert any(0 < r.progress < 1 for r in running_)
    progress = [r.progress for r in running_]
    assert progress == sorted(progress)
    previews = [r.preview_image for r in readings if r.preview_image]
    assert previews, "a live preview while it ran"
    assert len(set(previews)) == len(previews)  # sent again only when it changed
    assert all(max(size(p)) == 128 for p in previews)
    output = await within(backend.result(handle, expected=2))
    assert [size(i) for i in output.images] == [(1024, 1024)] * 2
    assert output.seeds == (42, 43)
    assert output.info["all_seeds"] == [42, 43] and output.info["sampler_name"] == "Euler a"
    server = emus[int(index)]
    assert server.stats.started_tasks == [task]  # the force_task_id we follow
    assert emus[1 - int(index)].stats.jobs_started == 0


async def test_random_seeds_are_read_from_info(backend):
    handle = await backend.submit(replace(REQUEST, seed=-1, images=3, width=832, height=1216))
    await run(backend, handle)
    output = await backend.result(handle, expected=3)
    first = output.seeds[0]
    assert output.seeds == (first, first + 1, first + 2)
    assert [size(i) for i in output.images] == [(832, 1216)] * 3


async def test_fewer_images_than_made_when_fewer_are_expected(backend):
    handle = await backend.submit(replace(REQUEST, images=3, width=640, height=1536))
    await run(backend, handle)
    output = await backend.result(handle, expected=2)
    assert len(output.images) == 2 and output.seeds == (42, 43)


async def test_variation_seeds(backend):
    variation = replace(REQUEST, subseed=7, subseed_strength=0.4)
    handle = await backend.submit(variation)
    await run(backend, handle)
    output = await backend.result(handle, expected=2)
    assert output.seeds == (42, 42)  # A1111: a variation keeps the seed, moves the subseed
    assert output.info["all_subseeds"] == [7, 8]
    assert output.info["subseed_strength"] == 0.4
    assert output.images[0] != output.images[1]


async def test_img2img(backend):
    source = png(512, 512)
    handle = await backend.submit(
        replace(REQUEST, images=1, init_image=source, denoising_strength=0.5)
    )
    await run(backend, handle)
    output = await backend.result(handle, expected=1)
    assert [size(i) for i in output.images] == [(1024, 1024)]


async def test_upscale(backend, emus):
    handle = await backend.upscale(png(256, 128), 2)
    readings = await run(backend, handle)
    assert readings[-1].state is TaskState.SUCCEEDED
    output = await backend.result(handle, expected=1)
    assert [size(i) for i in output.images] == [(512, 256)]
    assert "R-ESRGAN 4x+" in output.info["html_info"]
    with pytest.raises(OptionRefused) as refused:
        await backend.upscale(png(8, 8), 9)
    assert refused.value.option == "factor"


async def test_the_safety_terms_join_the_negative_prompt(backend, emus):
    request = replace(REQUEST, images=1, negative_prompt="blurry", safety_negative_prompt="nsfw")
    handle = await backend.submit(request)
    await run(backend, handle)
    assert (await backend.result(handle, expected=1)).images
    (sent,) = [g for e in emus for g in e.history]
    assert sent.negative_prompt == "blurry, nsfw"
    assert sent.prompt == REQUEST.prompt


async def test_without_internal_progress_it_follows_the_global_progress(session):
    async with running(1, duration=1.0, internal_progress=False) as emulators:
        backend = make_backend(session, emulators, auth=None)
        await backend.start()
        try:
            handle = await backend.submit(replace(REQUEST, images=1))
            readings = await run(backend, handle)
            assert any(r.state is TaskState.RUNNING and r.progress > 0 for r in readings)
            previews = [r.preview_image for r in readings if r.preview_image]
            assert previews and len(set(previews)) == len(previews)  # only when it changed
            assert (await backend.result(handle, expected=1)).seeds == (42,)
        finally:
            await backend.close()
    assert emulators[0].stats.global_polls > 0


async def test_result_before_the_end_is_unavailable_and_a_retry_after_it_works(backend):
    handle = await backend.submit(replace(REQUEST, images=1))
    with pytest.raises(Unavailable):
        await backend.result(handle, expected=1)
    await run(backend, handle)
    first = await backend.result(handle, expected=1)
    again = await backend.result(handle, expected=1)
    assert first.images == again.images


# -- restarts ------------------------------------------------------------------------------


async def test_a_handle_from_before_a_restart_is_lost_unspent_and_its_job_stopped(
    session, emus, backend
):
    await long_jobs(emus)
    handle = await backend.submit(REQUEST)
    stored = str(handle)  # as the jobs table keeps it
    server = emus[int(stored.split(":")[0])]
    await within(server.wait_until(lambda e: e.current_task == task_id(stored)))
    restarted = make_backend(session, emus)  # the bot's next process
    await restarted.start()
    try:
        with pytest.raises(TaskLost) as lost:
            await within(follow_all(restarted, stored))
        assert lost.value.spent is False
        # Nobody can collect its images, so the server was told to stop it.
        await within(server.wait_until(lambda e: e.stats.jobs_interrupted == 1))
        with pytest.raises(TaskLost) as lost:
            await restarted.result(stored, expected=2)
        assert lost.value.spent is False
        for garbage in ("", "nonsense", "9:abcdefgh:task", "0:00000000:" + task_id(stored)):
            with pytest.raises(TaskLost):
                await within(follow_all(restarted, garbage))
        assert server.stats.interrupts == 1  # only the matching handle touched the server
    finally:
        await restarted.close()


# -- cancelling ----------------------------------------------------------------------------


async def test_cancel_interrupts_only_that_tasks_server(backend, emus):
    await long_jobs(emus)
    handles = [await backend.submit(REQUEST) for _ in range(2)]
    servers = {h: emus[int(h.split(":")[0])] for h in handles}
    assert len(set(servers.values())) == 2
    for handle, emu in servers.items():
        ours = task_id(handle)
        await within(emu.wait_until(lambda e, t=ours: e.current_task == t))
    cancelled, other = handles
    await backend.cancel(cancelled)
    with pytest.raises(TaskFailed) as failed:
        await within(follow_all(backend, cancelled), 10)
    assert failed.value.reason == "cancelled"
    assert servers[cancelled].stats.interrupts == 1
    assert servers[other].stats.interrupts == 0
    assert servers[other].current_task == task_id(other)  # still generating
    await backend.cancel(other)
    await within(servers[other].wait_until(lambda e: e.stats.jobs_interrupted == 1))
    await backend.cancel(other)  # after the end: nothing to do, no error


async def test_cancel_of_a_task_queued_behind_someone_elses_waits_for_it_to_start(session):
    async with running(1, duration=30.0) as (emu,):
        backend = make_backend(session, [emu], auth=None)
        await backend.start()
        try:
            # Someone using the server's web UI holds it.
            someone = A1111Client(emu.base_url, session=session)
            theirs = asyncio.ensure_future(
                someone.txt2img(GenerationRequest("theirs", force_task_id="theirs"))
            )
            await within(emu.wait_until(lambda e: e.current_task == "theirs"))
            handle = await backend.submit(replace(REQUEST, images=1))
            await within(emu.wait_until(lambda e: task_id(handle) in e.queued_tasks))
            await backend.cancel(handle)
            assert emu.stats.interrupts == 0  # theirs is not ours to stop
            await someone.interrupt()
            await within(theirs)
            await within(emu.wait_until(lambda e: e.stats.jobs_interrupted == 2))
            assert emu.stats.interrupts == 2  # ours, once it started
            with pytest.raises(TaskFailed):
                await within(follow_all(backend, handle))
        finally:
            await backend.close()


# -- a full or failing pool ----------------------------------------------------------------


async def test_not_accepted_while_every_server_is_busy(backend, emus):
    await long_jobs(emus)
    handles = [await backend.submit(REQUEST) for _ in range(2)]
    assert {h.split(":")[0] for h in handles} == {"0", "1"}
    with pytest.raises(NotAccepted) as refused:
        await backend.submit(REQUEST)
    assert refused.value.retry_after is not None and refused.value.retry_after > 0
    assert "busy" in refused.value.message
    for emu in emus:
        await within(emu.wait_until(lambda e: e.stats.jobs_started == 1))
        assert emu.stats.requests["txt2img"] == 1 and emu.stats.max_waiting == 0
    assert backend.capacity == 2
    for handle in handles:
        await backend.cancel(handle)


async def test_a_refused_connection_moves_the_job_to_another_server(backend, emus):
    await emus[0].go_down()
    await long_jobs(emus)
    handle = await within(backend.submit(REQUEST))
    assert handle.startswith("1:")
    assert backend.capacity == 1  # server 0 marked down by the refusal
    with pytest.raises(NotAccepted):
        await backend.submit(REQUEST)  # the only server up is busy
    await emus[1].go_down()
    with pytest.raises(TaskLost):
        await within(follow_all(backend, handle))
    with pytest.raises(NotAccepted) as refused:
        await backend.submit(REQUEST)
    assert "no A1111 server is up" in refused.value.message
    assert refused.value.retry_after is not None and refused.value.retry_after >= 1
    for emu in emus:
        await emu.come_back()
    await within(backend.pool.wait_until(lambda: backend.capacity == 2))


async def test_a_server_going_down_mid_run_loses_that_task_without_moving_it(backend, emus):
    await long_jobs(emus)
    handle = await backend.submit(REQUEST)
    server, other = (emus[0], emus[1]) if handle.startswith("0:") else (emus[1], emus[0])
    await within(server.wait_until(lambda e: e.current_task is not None))
    await server.go_down()
    with pytest.raises(TaskLost) as lost:
        await within(follow_all(backend, handle))
    assert lost.value.spent is False
    assert other.stats.jobs_started == 0  # it had started: never re-sent elsewhere
    assert backend.capacity == 1
    other.duration = 0.3
    moved = await backend.submit(replace(REQUEST, images=1))
    assert moved.startswith("1:" if handle.startswith("0:") else "0:")
    await run(backend, moved)
    await server.come_back()
    await within(backend.pool.wait_until(lambda: backend.capacity == 2))


async def test_a_dropped_connection_mid_run_is_lost_and_the_server_rechecked(backend, emus):
    for emu in emus:
        emu.faults.add(Fault("txt2img", "drop", after_start=True))
    handle = await backend.submit(REQUEST)
    with pytest.raises(TaskLost) as lost:
        await within(follow_all(backend, handle))
    assert lost.value.spent is False
    # The server is still there: the health check puts it back at once.
    await within(backend.pool.wait_until(lambda: backend.capacity == 2))


# -- refusals and failures -----------------------------------------------------------------


async def test_options_no_server_can_run_are_refused_before_sending(backend, emus):
    with pytest.raises(OptionRefused) as refused:
        await backend.submit(replace(REQUEST, sampler="Imaginary Sampler"))
    assert refused.value.option == "sampler"
    with pytest.raises(OptionRefused) as refused:
        await backend.submit(replace(REQUEST, images=5))
    assert refused.value.option == "images"
    assert all(emu.stats.requests["txt2img"] == 0 for emu in emus)


@pytest.mark.parametrize(
    ("change", "option"),
    [({"steps": 151}, "steps"), ({"width": 4096}, "size"), ({"cfg_scale": 0.5}, "cfg_scale")],
)
async def test_a_field_the_server_refuses_names_the_option(backend, change, option):
    handle = await backend.submit(replace(REQUEST, **change))
    with pytest.raises(OptionRefused) as refused:
        await within(follow_all(backend, handle))
    assert refused.value.option == option
    assert backend.capacity == 2  # a refusal is not an outage


async def test_credentials_refused_at_start_and_after_a_server_restart(session, emus):
    wrong = make_backend(session, emus, auth="bot:not-the-right-one")
    with pytest.raises(CredentialsRefused) as refused:
        await wrong.start()
    assert "not-the-right-one" not in str(refused.value)
    await wrong.close()

    backend = make_backend(session, emus[:1])
    await backend.start()
    try:
        port = int(emus[0].base_url.rsplit(":", 1)[1])
        await emus[0].stop()  # restarted with another --api-auth
        replacement = Emulator(duration=0.2, auth="admin:changed-password")
        await replacement.start(port=port)
        try:
            handle = await backend.submit(replace(REQUEST, images=1))
            with pytest.raises(CredentialsRefused) as refused:
                await within(follow_all(backend, handle))
            assert PASSWORD not in str(refused.value)
        finally:
            await replacement.stop()
    finally:
        await backend.close()


async def test_a_failure_mid_run_keeps_the_servers_words_without_the_password(backend, emus):
    for emu in emus:
        emu.faults.add(
            Fault(
                "txt2img",
                "status",
                after_start=True,
                message=f"CUDA out of memory; request was from bot:{PASSWORD}",
            )
        )
    handle = await backend.submit(REQUEST)
    with pytest.raises(TaskFailed) as failed:
        await within(follow_all(backend, handle))
    assert "CUDA out of memory" in failed.value.reason
    assert PASSWORD not in failed.value.reason and PASSWORD not in failed.value.message
    assert "[redacted]" in failed.value.reason
    assert backend.capacity == 2


async def test_following_stops_after_max_wait(backend, emus):
    await long_jobs(emus)
    handle = await backend.submit(REQUEST)
    with pytest.raises(TaskTimedOut) as timed_out:
        await within(follow_all(backend, handle, max_wait=0.3))
    assert timed_out.value.by_server is False
    await backend.cancel(handle)
