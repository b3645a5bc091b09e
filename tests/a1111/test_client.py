"""The A1111 client against the emulator: every endpoint, every way a call can end."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest
from aiohttp import web

from a1111.client import A1111Client, parse_auth
from a1111.emulator import DEFAULT_SAMPLERS, PREVIEWS, Emulator, Fault
from a1111.errors import (
    ConnectionLost,
    CredentialsRefused,
    HTTPError,
    InvalidField,
    MalformedReply,
    ServerDown,
)
from a1111.models import GenerationRequest, GenerationResult
from tests.a1111 import b64png, image_size, running, within

PASSWORD = "correct-horse-battery"
AUTH = f"bot:{PASSWORD}"
SMALL = GenerationRequest("a red fox in snow", sampler_name="Euler a", width=96, height=64)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(duration=0.3, auth=AUTH) as emulator:
        yield emulator


@pytest.fixture
def client(session, emu) -> A1111Client:
    return A1111Client(emu.base_url, session=session, auth=AUTH, timeout=5)


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- lists ---------------------------------------------------------------------------------


async def test_lists(client):
    samplers = await client.samplers()
    assert [s.name for s in samplers] == list(DEFAULT_SAMPLERS)
    assert samplers[0].aliases
    models = await client.sd_models()
    assert models[0].model_name == "sd_xl_base_1.0" and models[0].hash == "31e35c80fc"
    upscalers = [u.name for u in await client.upscalers()]
    assert "R-ESRGAN 4x+" in upscalers and "None" in upscalers


# -- generation ----------------------------------------------------------------------------


async def test_txt2img_returns_pngs_info_and_parameters(client):
    request = GenerationRequest(
        "a red fox", sampler_name="DPM++ 2M Karras", width=96, height=64, seed=77, batch_size=2
    )
    result = await client.txt2img(request)
    assert [image_size(i) for i in result.generated] == [(96, 64)] * 2
    assert result.info["all_seeds"] == [77, 78]
    assert isinstance(result.info["subseed"], int)
    assert result.parameters["sampler_name"] == "DPM++ 2M Karras"


async def test_variation_seeds_go_through(client):
    request = GenerationRequest(
        "a red fox", width=64, height=64, seed=5, subseed=9, subseed_strength=0.3, batch_size=2
    )
    result = await client.txt2img(request)
    assert result.info["all_seeds"] == [5, 5]
    assert result.info["all_subseeds"] == [9, 10]
    assert result.info["subseed_strength"] == 0.3


async def test_a_leading_grid_is_not_a_generated_image(client):
    # `save_images` is always False from this client, so the grid only appears when a
    # server is set to return one anyway; `generated` uses index_of_first_image to skip it.
    reply = {
        "images": ["grid", "one", "two", "controlnet-map"],
        "info": '{"index_of_first_image": 1, "all_seeds": [1, 2]}',
    }
    assert GenerationResult.parse(reply).generated == ("one", "two")


async def test_img2img(client):
    request = GenerationRequest(
        "a red fox",
        width=64,
        height=96,
        init_images=(b64png(32, 32),),
        denoising_strength=0.4,
    )
    result = await client.img2img(request)
    assert image_size(result.generated[0]) == (64, 96)
    with pytest.raises(ValueError, match="init_images"):
        await client.img2img(SMALL)


async def test_upscale(client):
    result = await client.upscale(b64png(30, 20), factor=3, upscaler="Lanczos")
    assert image_size(result.image) == (90, 60)
    assert "Lanczos" in result.html_info


async def test_interrupt_stops_the_running_generation(session):
    async with running(1, duration=30.0) as (emu,):
        client = A1111Client(emu.base_url, session=session, timeout=5)
        job = asyncio.ensure_future(client.txt2img(SMALL))
        await within(emu.wait_until(lambda e: e.current_task is not None))
        await client.interrupt()
        result = await within(job, 10)
    assert len(result.generated) == 1 and emu.stats.jobs_interrupted == 1


async def test_sent_is_set_once_the_request_is_on_its_way(client, emu):
    sent = asyncio.Event()
    job = asyncio.ensure_future(client.txt2img(SMALL, sent=sent))
    await within(sent.wait())
    await within(emu.wait_until(lambda e: e.stats.jobs_started == 1))
    await within(job)


# -- progress ------------------------------------------------------------------------------


async def test_task_progress_queued_then_running_with_previews_then_completed(session):
    async with running(1, duration=1.0) as (emu,):
        client = A1111Client(emu.base_url, session=session, timeout=5)
        blocker = asyncio.ensure_future(client.txt2img(SMALL))
        await within(emu.wait_until(lambda e: e.current_task is not None))
        ours = asyncio.ensure_future(client.txt2img(replace(SMALL, force_task_id="mine")))
        await within(emu.wait_until(lambda e: "mine" in e.queued_tasks))
        queued = await client.progress("mine")
        assert (queued.queued, queued.active, queued.completed) == (True, False, False)
        assert queued.progress is None and queued.per_task
        await within(blocker)
        await within(emu.wait_until(lambda e: e.current_task == "mine" and e.preview_id >= 1))
        first = await client.progress("mine")
        assert first.active and first.progress is not None and 0 < first.progress <= 1
        assert first.live_preview is not None and first.preview_id == emu.preview_id
        assert image_size(first.live_preview)[0] <= 128
        unchanged = await client.progress("mine", preview_id=first.preview_id)
        assert unchanged.live_preview is None
        await within(emu.wait_until(lambda e: e.preview_id == PREVIEWS))
        later = await client.progress("mine", preview_id=first.preview_id)
        assert later.live_preview not in (None, first.live_preview)
        assert later.progress >= first.progress
        await within(ours)
        done = await client.progress("mine")
        assert done.completed and not done.active


async def test_without_internal_progress_it_reads_the_global_progress(session):
    async with running(1, duration=1.0, internal_progress=False) as (emu,):
        client = A1111Client(emu.base_url, session=session, timeout=5)
        idle = await client.progress("mine")
        assert client.has_task_progress is False
        assert not idle.per_task and not idle.active and idle.queued
        job = asyncio.ensure_future(client.txt2img(replace(SMALL, force_task_id="mine")))
        await within(emu.wait_until(lambda e: e.preview_id >= 1))
        busy = await client.progress("mine")
        assert busy.active and busy.progress is not None and busy.progress > 0
        assert busy.live_preview is not None and image_size(busy.live_preview)[0] <= 128
        assert busy.eta is not None and busy.eta >= 0
        await within(job)
    assert emu.stats.requests["progress"] == 0  # asked once (404), then never again
    assert emu.stats.global_polls == 2


# -- authentication ------------------------------------------------------------------------


async def test_wrong_or_missing_credentials_are_refused_without_echoing_them(session, emu):
    for auth in ("bot:wrong-password-here", None):
        client = A1111Client(emu.base_url, session=session, auth=auth)
        with pytest.raises(CredentialsRefused) as refused:
            await client.samplers()
        assert "401" in refused.value.message
        assert "wrong-password" not in str(refused.value)
        assert "wrong-password" not in repr(client)


async def test_credentials_in_the_url_are_used_and_taken_out_of_it(session, emu):
    url = emu.base_url.replace("http://", f"http://bot:{PASSWORD}@")
    client = A1111Client(url, session=session)
    assert PASSWORD not in client.base_url and PASSWORD not in repr(client)
    assert len(await client.samplers()) == len(DEFAULT_SAMPLERS)


def test_credentials_must_have_a_colon():
    assert parse_auth("a:b:c") == ("a", "b:c")
    assert parse_auth(None) is None
    with pytest.raises(ValueError) as bad:
        parse_auth("no-colon-secret")
    assert "no-colon-secret" not in str(bad.value)


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "status"),
    [
        ({"steps": 500}, "steps", 422),
        ({"width": 4096}, "width", 422),
        ({"cfg_scale": 0.5}, "cfg_scale", 422),
        ({"sampler_name": "Nonexistent"}, "sampler_name", 400),
    ],
)
async def test_a_refused_field_is_named(client, emu, change, field, status):
    with pytest.raises(InvalidField) as refused:
        await client.txt2img(replace(SMALL, **change))
    assert (refused.value.field, refused.value.status) == (field, status)
    assert field in refused.value.message or "Sampler" in refused.value.message
    assert emu.stats.jobs_started == 0


async def test_a1111s_string_errors_name_their_field(client):
    with pytest.raises(InvalidField) as refused:
        await client.upscale(b64png(8, 8), factor=9, upscaler="Lanczos")
    assert refused.value.field == "upscaling_resize"
    broken = replace(SMALL, init_images=("bm90IGFuIGltYWdl",))
    with pytest.raises(HTTPError) as failed:
        await client.txt2img(broken)
    assert failed.value.status == 500 and failed.value.detail == "Invalid encoded image"
    assert not isinstance(failed.value, InvalidField)


async def test_a_server_error_keeps_the_servers_words(client, emu):
    emu.faults.add(Fault("txt2img", "status", after_start=True, message="CUDA out of memory"))
    with pytest.raises(HTTPError) as failed:
        await client.txt2img(SMALL)
    assert failed.value.status == 500 and "CUDA out of memory" in failed.value.message
    assert emu.stats.jobs_started == 1


# -- transport -----------------------------------------------------------------------------


async def test_connection_refused_is_server_down_and_nothing_was_sent(session):
    client = A1111Client(f"http://127.0.0.1:{free_port()}", session=session, timeout=5)
    sent = asyncio.Event()
    with pytest.raises(ServerDown) as down:
        await client.txt2img(SMALL, sent=sent)
    assert not sent.is_set()
    assert "cannot connect" in down.value.message


async def test_a_dropped_generation_is_connection_lost_after_it_was_sent(client, emu):
    emu.faults.add(Fault("txt2img", "drop", after_start=True))
    sent = asyncio.Event()
    with pytest.raises(ConnectionLost) as lost:
        await client.txt2img(SMALL, sent=sent)
    assert sent.is_set() and not lost.value.timed_out
    assert emu.stats.jobs_started == 1


async def test_a_server_going_down_mid_generation_is_connection_lost(session):
    async with running(1, duration=30.0) as (emu,):
        client = A1111Client(emu.base_url, session=session, timeout=5)
        job = asyncio.ensure_future(client.txt2img(SMALL))
        await within(emu.wait_until(lambda e: e.current_task is not None))
        await emu.go_down()
        with pytest.raises(ConnectionLost):
            await within(job)
        with pytest.raises(ServerDown):
            await client.samplers()


async def test_no_reply_in_time_is_a_timeout(session, emu):
    client = A1111Client(emu.base_url, session=session, auth=AUTH, timeout=0.2)
    emu.faults.add(Fault("sd-models", "delay", seconds=2))
    with pytest.raises(ConnectionLost) as lost:
        await client.sd_models()
    assert lost.value.timed_out
    short = A1111Client(emu.base_url, session=session, auth=AUTH, timeout=5, generation_timeout=0.1)
    with pytest.raises(ConnectionLost) as lost:
        await short.txt2img(SMALL)  # 0.3 s of generation
    assert lost.value.timed_out


async def test_a_reply_too_large_is_refused_not_buffered(session, emu):
    client = A1111Client(emu.base_url, session=session, auth=AUTH, max_reply_bytes=1000)
    with pytest.raises(MalformedReply, match="larger than 1000"):
        await client.txt2img(SMALL)


async def test_a_reply_that_is_not_json_is_malformed(session):
    async def proxy_page(request: web.Request) -> web.Response:
        return web.Response(text="<html>proxy</html>")

    app = web.Application()
    app.router.add_get("/sdapi/v1/samplers", proxy_page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        client = A1111Client(f"http://127.0.0.1:{port}", session=session)
        with pytest.raises(MalformedReply):
            await client.samplers()
    finally:
        await runner.cleanup()
