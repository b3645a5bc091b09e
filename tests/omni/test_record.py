"""Faithful to the record (docs/backends.md, "Omniinfer v2 — corrections"): for each reported
behaviour of the real API, the emulator reproduces it and the client (and the bot's adapter)
survive it."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from backends.omniinfer import OmniinferBackend
from jobs.backend import BadOutput, Generation, TaskState
from omni import (
    AuthenticationError,
    DownloadFailed,
    InvalidRequest,
    OmniClient,
    PollPolicy,
    RetryPolicy,
    TaskNotFound,
    TaskStatus,
    TaskTimedOut,
    Txt2ImgRequest,
    rules,
)
from omni.emulator import Emulator, Fault, NextTask
from omni.errors import error_for_code

ROOT = Path(__file__).resolve().parents[2]
KEY = "record-key-0c1d"
HEADERS = {"X-Omni-Key": KEY}
FAST_POLL = PollPolicy(first_delay=0.02, min_interval=0.02, max_running_interval=0.05)
FAST_RETRY = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)
TIMEOUT = aiohttp.ClientTimeout(total=5)
UNKNOWN_TASK = "00000000-0000-0000-0000-000000000000"

# What the official Python SDK (omniinfer-client 0.3.5) posts for a Txt2ImgRequest with only
# prompt, model, size and cfg_scale set: every unset optional field as null, cfg_scale a float,
# sampler_name null (the SDK's default).
SDK_BODY: dict[str, Any] = {
    "prompt": "a dog flying in the sky",
    "negative_prompt": None,
    "model_name": rules.SDXL_MODEL,
    "sampler_name": None,
    "batch_size": 1,
    "n_iter": 1,
    "steps": 20,
    "cfg_scale": 7.5,
    "height": 1024,
    "width": 1024,
    "seed": -1,
    "restore_faces": False,
    "sd_vae": None,
    "clip_skip": 1,
    "controlnet_units": None,
    "controlnet_no_detectmap": False,
    "enable_hr": False,
    "hr_upscaler": "R-ESRGAN 4x+",
    "hr_scale": 2.0,
    "hr_resize_x": None,
    "hr_resize_y": None,
    "sd_refiner": None,
}
BODY: dict[str, Any] = {**SDK_BODY, "sampler_name": "Euler a", "width": 64, "height": 64}


class SteppedClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def clock() -> SteppedClock:
    return SteppedClock()


@pytest.fixture
async def emu(clock) -> AsyncIterator[Emulator]:
    """Tasks move only when the test steps `clock`: 10 s each, 2 s of them queued."""
    async with Emulator(api_key=KEY, duration=10, image_ttl=60, clock=clock) as emulator:
        yield emulator


@pytest.fixture
async def client(emu, session) -> OmniClient:
    return OmniClient(KEY, base_url=emu.base_url, session=session, poll=FAST_POLL, retry=FAST_RETRY)


@pytest.fixture
def backend(emu, session) -> OmniinferBackend:
    return OmniinferBackend(
        KEY,
        base_url=emu.base_url,
        session=session,
        timeout=TIMEOUT,
        max_wait_poll=FAST_POLL,
        retry=FAST_RETRY,
    )


async def raw(
    session: aiohttp.ClientSession,
    emu: Emulator,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] = HEADERS,
) -> tuple[int, dict[str, Any]]:
    async with session.request(
        method, f"{emu.base_url}{path}", json=body, headers=headers
    ) as response:
        return response.status, await response.json(content_type=None)


async def submitted(session: aiohttp.ClientSession, emu: Emulator, **changes: Any) -> str:
    status, reply = await raw(session, emu, "POST", "/v2/txt2img", {**BODY, **changes})
    assert (status, reply["code"]) == (200, 0), reply
    return reply["data"]["task_id"]


async def progress_data(session: aiohttp.ClientSession, emu: Emulator, task: str) -> Any:
    status, reply = await raw(session, emu, "GET", f"/v2/progress?task_id={task}")
    assert (status, reply["code"]) == (200, 0), reply
    return reply["data"]


# -- errors are HTTP 200 envelopes with data null, on every endpoint -----------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "code"),
    [
        ("POST", "/v2/txt2img", {**BODY, "sampler_name": "DPM++ Karras"}, HEADERS, 8),
        ("POST", "/v2/txt2img", {**BODY, "steps": 51}, HEADERS, 6),
        ("POST", "/v2/txt2img", BODY, {"X-Omni-Key": "wrong"}, 4),
        ("POST", "/v2/upscale", {"image": "!!"}, HEADERS, 6),
        ("POST", "/v2/img2img", {**BODY, "init_images": []}, HEADERS, 6),
        ("GET", f"/v2/progress?task_id={UNKNOWN_TASK}", None, HEADERS, 3),
        ("GET", f"/v2/progress?task_id={UNKNOWN_TASK}", None, {"X-Omni-Key": "wrong"}, 4),
        ("GET", "/v2/models", None, {}, 4),
    ],
)
async def test_errors_are_http_200_with_a_code_and_null_data(
    emu, session, method, path, body, headers, code
):
    status, reply = await raw(session, emu, method, path, body, headers)
    assert status == 200
    assert reply["code"] == code and reply["data"] is None and reply["msg"]


async def test_the_client_reads_a_bad_key_on_progress_and_an_unknown_task(emu, session, client):
    task = await submitted(session, emu)
    wrong = OmniClient("not-the-key", base_url=emu.base_url, session=session, retry=FAST_RETRY)
    with pytest.raises(AuthenticationError) as caught:
        await wrong.progress(task)
    assert caught.value.code == 4 and "not-the-key" not in str(caught.value)
    with pytest.raises(TaskNotFound):
        await client.progress(UNKNOWN_TASK)


# -- info: "", null or not JSON ------------------------------------------------------------


@pytest.mark.parametrize(("shape", "value"), [("empty", ""), ("null", None), ("text", str)])
async def test_info_that_is_empty_null_or_not_json_is_survived(
    emu, clock, session, client, backend, shape, value
):
    emu.faults.script_next_task(NextTask(info=shape))
    handle = await backend.submit(Generation(prompt="a fox", seed=4242, width=1024))
    clock.now += 10
    data = await progress_data(session, emu, handle)
    assert data["status"] == 2
    if value is str:
        assert isinstance(data["info"], str) and "Seed: 4242" in data["info"]
        with pytest.raises(ValueError):
            json.loads(data["info"])
    else:
        assert data["info"] == value
    final = await client.wait_until_done(handle, max_wait=5)
    assert final.status is TaskStatus.SUCCEEDED and final.info is None
    async for _ in backend.follow(handle, max_wait=5):
        pass
    output = await backend.result(handle, expected=1)
    assert output.seeds == (4242,)  # the seed asked for
    assert output.info == {}


async def test_without_info_a_random_seed_is_not_invented(emu, clock, session, backend):
    emu.faults.script_next_task(NextTask(info="empty"))
    handle = await backend.submit(Generation(prompt="a fox"))  # seed -1
    clock.now += 10
    output = await backend.result(handle, expected=1)
    assert output.seeds == ()
    assert len(output.images) == 1


async def test_without_info_after_a_restart_no_seed_is_reported(emu, clock, session, backend):
    emu.faults.script_next_task(NextTask(info="null"))
    handle = await backend.submit(Generation(prompt="a fox", seed=9))
    clock.now += 10
    restarted = OmniinferBackend(
        KEY, base_url=emu.base_url, session=session, timeout=TIMEOUT, retry=FAST_RETRY
    )
    assert (await restarted.result(handle, expected=1)).seeds == ()


# -- current_images: null, [""] or URLs ----------------------------------------------------


@pytest.mark.parametrize(("shape", "value"), [("null", None), ("blank", [""])])
async def test_previews_that_are_null_or_blank_are_ignored(
    emu, clock, session, client, backend, shape, value
):
    emu.faults.script_next_task(NextTask(previews=shape))
    task = await submitted(session, emu)
    clock.now += 8
    data = await progress_data(session, emu, task)
    assert (data["status"], data["current_images"]) == (1, value)
    reading = await client.progress(task)
    assert reading.status is TaskStatus.RUNNING and reading.preview_images == ()
    async for found in backend.follow(task, max_wait=5):
        assert found.preview_url is None
        break


async def test_preview_urls_are_kept(emu, clock, session, client):
    task = await submitted(session, emu)
    clock.now += 8
    reading = await client.progress(task)
    assert reading.preview_images == (f"{emu.base_url}/images/{task}-preview.png",)


# -- progress and eta are floats; an unknown status is not final ---------------------------


async def test_progress_and_eta_are_read_as_floats(emu, clock, session, client):
    task = await submitted(session, emu)
    clock.now += 2 + 0.35 * 8  # 35 % through the 8 s of running
    data = await progress_data(session, emu, task)
    assert isinstance(data["progress"], float) and isinstance(data["eta_relative"], float)
    reading = await client.progress(task)
    assert reading.progress == pytest.approx(0.35)
    assert reading.eta_relative == pytest.approx(5.2)


async def test_an_unknown_status_is_not_final_and_does_not_raise(emu, clock, session, client):
    emu.faults.script_next_task(NextTask(running_status=7))
    task = await submitted(session, emu)
    clock.now += 5
    assert (await progress_data(session, emu, task))["status"] == 7
    reading = await client.progress(task)
    assert reading.status is TaskStatus.UNKNOWN and not reading.status.is_final
    with pytest.raises(TaskTimedOut) as caught:  # our own bounded wait ends it
        async for seen in client.wait(task, max_wait=0.3):
            assert seen.status is TaskStatus.UNKNOWN
    assert caught.value.by_server is False
    clock.now += 5
    assert (await client.wait_until_done(task, max_wait=5)).status is TaskStatus.SUCCEEDED


async def test_the_adapter_shows_an_unknown_status_as_running(emu, clock, session, backend):
    emu.faults.script_next_task(NextTask(running_status=-3))
    handle = await backend.submit(Generation(prompt="x"))
    clock.now += 5
    async for reading in backend.follow(handle, max_wait=5):
        assert reading.state is TaskState.RUNNING and reading.progress == pytest.approx(0.375)
        break


# -- an expired image URL answers 403 with XML ---------------------------------------------


async def test_an_expired_image_is_403_xml_and_is_never_taken_for_an_image(
    emu, clock, session, client, backend
):
    handle = await backend.submit(Generation(prompt="x"))
    clock.now += 10
    final = await client.wait_until_done(handle, max_wait=5)
    assert len(await client.download(final.images)) == 1
    clock.now += 60
    async with session.get(final.images[0]) as response:
        assert response.status == 403
        assert response.content_type == "application/xml"
        body = await response.read()
    assert b"<Code>AccessDenied</Code>" in body and b"expired" in body
    with pytest.raises(DownloadFailed):
        await client.download(final.images)
    with pytest.raises(BadOutput):
        await backend.result(handle, expected=1)


async def test_the_client_refuses_a_200_that_is_not_an_image(emu, clock, session, client):
    """An XML page served with status 200 (as a misconfigured proxy might) is still refused."""
    app_url = f"{emu.base_url}/v2/models"  # JSON, HTTP 200: not an image either
    with pytest.raises(DownloadFailed):
        await client.download([app_url])


# -- what the official SDK sends is accepted -----------------------------------------------


async def test_the_sdks_nulls_and_float_cfg_scale_are_accepted(emu, clock, session):
    task = await submitted(session, emu, **{k: SDK_BODY[k] for k in ("width", "height")})
    clock.now += 10
    info = json.loads((await progress_data(session, emu, task))["info"])
    assert info["cfg_scale"] == 7.5
    assert info["sampler_name"] == "Euler a"  # null sampler: A1111's default
    assert info["negative_prompt"] == ""
    assert (info["width"], info["height"]) == (1024, 1024)


async def test_the_clients_own_payload_is_accepted(emu, session):
    payload = Txt2ImgRequest(prompt="x", cfg_scale=7).to_payload()
    assert isinstance(payload["cfg_scale"], float)
    _, reply = await raw(session, emu, "POST", "/v2/txt2img", payload)
    assert reply["code"] == 0


# -- code 1 is "invalid parameter"; names match exactly (code 2) ---------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("steps", "20"), ("steps", 20.5), ("seed", "1"), ("cfg_scale", "7"), ("prompt", 5)],
)
async def test_a_field_of_the_wrong_json_type_is_code_1(emu, session, field, value):
    _, reply = await raw(session, emu, "POST", "/v2/txt2img", {**BODY, field: value})
    assert reply["code"] == 1 and reply["msg"].startswith(f"{field}:")
    assert "invalid parameter" in reply["msg"]


def test_code_1_means_invalid_parameter():
    error = error_for_code(1, "steps: wrong type")
    assert isinstance(error, InvalidRequest)
    assert error.message == "invalid parameter: steps: wrong type"


async def test_the_client_reports_code_1_as_an_invalid_request(emu, client):
    emu.faults.add(Fault("txt2img", "code", code=1))
    with pytest.raises(InvalidRequest) as caught:
        await client.txt2img(Txt2ImgRequest(prompt="x"))
    assert caught.value.code == 1 and "invalid parameter" in caught.value.message


@pytest.mark.parametrize(
    "name", ["SD_XL_BASE_1.0.safetensors", "sd_xl_base_1.0", "sd_xl_base_1.0.safetensors "]
)
async def test_model_names_match_exactly(emu, session, name):
    _, reply = await raw(session, emu, "POST", "/v2/txt2img", {**BODY, "model_name": name})
    assert reply["code"] == 2


async def test_an_unknown_refiner_is_code_2_worded_as_the_api_words_it(emu, session):
    refiner = {"checkpoint": "sd_xl_refiner_1.0", "switch_at": 0.8}
    _, reply = await raw(session, emu, "POST", "/v2/txt2img", {**BODY, "sd_refiner": refiner})
    assert reply == {
        "code": 2,
        "msg": "Refiner checkpoint model `sd_xl_refiner_1.0` not allowed",
        "data": None,
    }
    refiner["checkpoint"] = "sd_xl_refiner_1.0.safetensors"
    _, reply = await raw(session, emu, "POST", "/v2/txt2img", {**BODY, "sd_refiner": refiner})
    assert reply["code"] == 0


async def test_the_client_reports_a_refused_model_as_an_invalid_request(emu, client):
    with pytest.raises(InvalidRequest) as caught:
        await client.txt2img(Txt2ImgRequest(prompt="x", model_name="sd_xl_base_1.0"))
    assert caught.value.code == 2 and caught.value.field == "model_name"


# -- python -m omni.emulator --api v3 --------------------------------------------------------


async def test_api_v2_is_the_default_and_can_be_named(session):
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "omni.emulator",
        "--api",
        "v2",
        "--port",
        "0",
        "--key",
        KEY,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert line.startswith("Omniinfer emulator listening on http://127.0.0.1:")
        base_url = line.rsplit(" ", 1)[-1].strip()
        async with session.get(f"{base_url}/v2/models", headers=HEADERS) as response:
            assert (await response.json())["code"] == 0
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 10) == 0


@pytest.mark.skipif(
    importlib.util.find_spec("omni.v3.emulator") is None,
    reason="omni.v3.emulator is not written yet",
)
async def test_api_v3_runs_the_novita_emulator_with_the_other_arguments():
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "omni.emulator",
        "--api",
        "v3",
        "--help",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err
    text = out.decode()
    assert "v3" in text.lower() or "novita" in text.lower()
    assert "--shared-pictures" not in text  # the v2 emulator's own option
