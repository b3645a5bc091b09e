"""The A1111 emulator's promises, over real HTTP with a plain aiohttp session."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from a1111.emulator import DEFAULT_SAMPLERS, PREVIEWS, Emulator, Fault
from tests.a1111 import b64png, image_size, running, within

ROOT = Path(__file__).resolve().parents[2]
AUTH = aiohttp.encode_basic_auth("bot", "hunter2-long-password")
BODY: dict[str, Any] = {
    "prompt": "a lighthouse at dusk",
    "sampler_name": "Euler a",
    "steps": 20,
    "width": 96,
    "height": 64,
    "seed": 1234,
}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(duration=0.4, auth="bot:hunter2-long-password") as emulator:
        yield emulator


async def call(
    session: aiohttp.ClientSession,
    emulator: Emulator,
    method: str,
    path: str,
    body: Any = None,
    *,
    auth: str | None = AUTH,
) -> tuple[int, Any]:
    """One request; `auth` is an Authorization header value (None: none)."""
    headers = {"Authorization": auth} if auth else {}
    async with session.request(
        method, emulator.base_url + path, json=body, headers=headers
    ) as reply:
        return reply.status, await reply.json(content_type=None)


# -- generation ----------------------------------------------------------------------------


async def test_txt2img_blocks_and_returns_real_pngs_with_a1111_seeds(session, emu):
    status, reply = await call(session, emu, "POST", "/sdapi/v1/txt2img", {**BODY, "batch_size": 3})
    assert status == 200
    assert [image_size(i) for i in reply["images"]] == [(96, 64)] * 3
    info = json.loads(reply["info"])  # a JSON *string*, as A1111 sends it
    assert info["seed"] == 1234
    assert info["all_seeds"] == [1234, 1235, 1236]  # counting up per image
    assert info["all_subseeds"] == [info["subseed"] + i for i in range(3)]
    assert info["index_of_first_image"] == 0
    assert reply["parameters"]["prompt"] == BODY["prompt"]
    assert emu.stats.jobs_finished == 1


async def test_a_variation_strength_keeps_one_seed_and_changes_the_picture(session, emu):
    base = {**BODY, "batch_size": 2, "subseed": 99}
    _, plain = await call(session, emu, "POST", "/sdapi/v1/txt2img", base)
    _, varied = await call(
        session, emu, "POST", "/sdapi/v1/txt2img", {**base, "subseed_strength": 0.6}
    )
    info = json.loads(varied["info"])
    assert info["all_seeds"] == [1234, 1234]  # processing.py: variations share the seed
    assert info["all_subseeds"] == [99, 100]
    assert varied["images"][0] != plain["images"][0]
    assert varied["images"][0] != varied["images"][1]


async def test_saving_a_batch_puts_the_grid_first_as_a1111_does(session, emu):
    body = {**BODY, "batch_size": 2, "save_images": True}
    _, reply = await call(session, emu, "POST", "/sdapi/v1/txt2img", body)
    info = json.loads(reply["info"])
    assert info["index_of_first_image"] == 1
    assert image_size(reply["images"][0]) == (192, 64)  # two 96×64 pictures side by side
    assert len(reply["images"]) == 3


async def test_img2img_draws_at_the_requested_size_from_the_init_image(session, emu):
    body = {**BODY, "init_images": [b64png(50, 50)], "denoising_strength": 0.3}
    status, reply = await call(session, emu, "POST", "/sdapi/v1/img2img", body)
    assert status == 200
    assert image_size(reply["images"][0]) == (96, 64)
    assert "init_images" not in reply["parameters"]


async def test_one_job_at_a_time_in_arrival_order_and_the_queue_is_visible(session, emu):
    bodies = [{**BODY, "force_task_id": f"t{i}"} for i in range(3)]
    first = asyncio.ensure_future(call(session, emu, "POST", "/sdapi/v1/txt2img", bodies[0]))
    await within(emu.wait_until(lambda e: e.current_task == "t0"))
    rest = [
        asyncio.ensure_future(call(session, emu, "POST", "/sdapi/v1/txt2img", body))
        for body in bodies[1:]
    ]
    await within(emu.wait_until(lambda e: len(e.queued_tasks) == 2))
    _, seen = await call(session, emu, "POST", "/internal/progress", {"id_task": "t2"})
    assert seen["queued"] is True and seen["active"] is False
    assert seen["textinfo"] == "In queue: 2/2"
    replies = await within(asyncio.gather(first, *rest))
    assert all(status == 200 for status, _ in replies)
    assert emu.stats.max_concurrent == 1 and emu.stats.max_waiting == 2
    assert emu.stats.started_tasks == ["t0", "t1", "t2"]
    _, done = await call(session, emu, "POST", "/internal/progress", {"id_task": "t0"})
    assert done["completed"] is True and done["active"] is False


async def test_a_job_goes_on_when_its_client_leaves(session, emu):
    leaving = asyncio.ensure_future(
        call(session, emu, "POST", "/sdapi/v1/txt2img", {**BODY, "force_task_id": "gone"})
    )
    await within(emu.wait_until(lambda e: e.current_task == "gone"))
    leaving.cancel()
    await within(emu.wait_until(lambda e: e.stats.jobs_finished == 1))
    assert emu.stats.jobs_abandoned == 0


async def test_per_task_progress_sends_a_new_live_preview_only_when_it_changed(session):
    async with running(1, duration=1.2) as (emu,):
        job = asyncio.ensure_future(
            call(session, emu, "POST", "/sdapi/v1/txt2img", {**BODY, "force_task_id": "p"})
        )

        async def look(last: int) -> dict[str, Any]:
            body = {"id_task": "p", "id_live_preview": last, "live_preview": True}
            return (await call(session, emu, "POST", "/internal/progress", body))[1]

        await within(emu.wait_until(lambda e: e.current_task == "p"))
        seen = [await look(-1)]
        for preview in range(1, PREVIEWS + 1):
            await within(emu.wait_until(lambda e, p=preview: e.preview_id >= p))
            seen.append(await look(seen[-1]["id_live_preview"]))
            again = await look(seen[-1]["id_live_preview"])  # nothing new since
            assert again["live_preview"] is None
            assert again["id_live_preview"] == seen[-1]["id_live_preview"]
        await within(job)
        finished = await look(-1)
    assert all(s["active"] for s in seen)
    fractions = [s["progress"] for s in seen]
    assert fractions == sorted(fractions) and 0 <= fractions[0] < fractions[-1] <= 1
    assert all(s["eta"] is None or s["eta"] >= 0 for s in seen)
    previews = [s["live_preview"] for s in seen[1:]]
    assert [s["id_live_preview"] for s in seen[1:]] == list(range(1, PREVIEWS + 1))
    assert all(p.startswith("data:image/png;base64,") for p in previews)
    assert all(max(image_size(p)) == 128 for p in previews)
    assert len(set(previews)) == PREVIEWS
    assert finished["completed"] is True and finished["active"] is False


async def test_global_progress_describes_the_running_job_and_hides_its_task_id(session, emu):
    _, idle = await call(session, emu, "GET", "/sdapi/v1/progress")
    assert idle["state"]["job_count"] == 0 and idle["current_image"] is None
    job = asyncio.ensure_future(call(session, emu, "POST", "/sdapi/v1/txt2img", BODY))
    await within(emu.wait_until(lambda e: e.current_task is not None))
    _, busy = await call(session, emu, "GET", "/sdapi/v1/progress?skip_current_image=true")
    assert busy["state"]["job_count"] == 1 and busy["state"]["sampling_steps"] == 20
    assert 0 < busy["progress"] <= 1 and busy["current_image"] is None
    assert busy["current_task"] is None  # A1111 binds it at import time: always null
    await within(job)


async def test_interrupt_ends_the_running_job_early_with_its_images(session):
    async with running(1, duration=30.0) as (emu,):
        job = asyncio.ensure_future(call(session, emu, "POST", "/sdapi/v1/txt2img", BODY))
        await within(emu.wait_until(lambda e: e.current_task is not None))
        assert await call(session, emu, "POST", "/sdapi/v1/interrupt") == (200, {})
        status, reply = await within(job, 10)  # far less than the 30 s the job would take
    assert status == 200 and len(reply["images"]) == 1
    assert emu.stats.jobs_interrupted == 1 and emu.stats.interrupts == 1


async def test_extra_single_image_upscales_a_real_png(session, emu):
    body = {"image": b64png(40, 30), "upscaling_resize": 2.5, "upscaler_1": "R-ESRGAN 4x+"}
    status, reply = await call(session, emu, "POST", "/sdapi/v1/extra-single-image", body)
    assert status == 200
    assert image_size(reply["image"]) == (100, 75)
    assert "R-ESRGAN 4x+" in reply["html_info"]


async def test_lists(session, emu):
    _, samplers = await call(session, emu, "GET", "/sdapi/v1/samplers")
    assert [s["name"] for s in samplers] == list(DEFAULT_SAMPLERS)
    assert all(isinstance(s["aliases"], list) for s in samplers)
    _, models = await call(session, emu, "GET", "/sdapi/v1/sd-models")
    assert models[0]["model_name"] == "sd_xl_base_1.0"
    _, upscalers = await call(session, emu, "GET", "/sdapi/v1/upscalers")
    assert "R-ESRGAN 4x+" in [u["name"] for u in upscalers]


# -- errors in the real shapes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("steps", "many", "type_error.integer"),
        ("steps", 151, "value_error.number.not_le"),
        ("width", 32, "value_error.number.not_ge"),
        ("cfg_scale", "high", "type_error.float"),
        ("prompt", 5, "type_error.str"),
    ],
)
async def test_a_bad_field_is_fastapis_422_naming_it(session, emu, field, value, kind):
    status, reply = await call(session, emu, "POST", "/sdapi/v1/txt2img", {**BODY, field: value})
    assert status == 422
    (error,) = reply["detail"]
    assert error["loc"] == ["body", field] and error["type"] == kind and error["msg"]
    assert emu.stats.jobs_started == 0


async def test_a1111s_own_refusals(session, emu):
    unknown = {**BODY, "sampler_name": "Nonexistent"}
    status, reply = await call(session, emu, "POST", "/sdapi/v1/txt2img", unknown)
    assert (status, reply["detail"], reply["error"]) == (400, "Sampler not found", "HTTPException")
    status, reply = await call(session, emu, "POST", "/sdapi/v1/img2img", BODY)
    assert (status, reply["detail"]) == (404, "Init image not found")
    broken = {**BODY, "init_images": ["not an image"]}
    status, reply = await call(session, emu, "POST", "/sdapi/v1/img2img", broken)
    assert (status, reply["detail"]) == (500, "Invalid encoded image")
    status, reply = await call(
        session,
        emu,
        "POST",
        "/sdapi/v1/extra-single-image",
        {"image": b64png(8, 8), "upscaling_resize": 9},
    )
    assert status == 422 and reply["detail"][0]["loc"] == ["body", "upscaling_resize"]
    status, reply = await call(session, emu, "GET", "/sdapi/v1/nothing-here")
    assert (status, reply) == (404, {"detail": "Not Found"})
    async with session.post(
        emu.base_url + "/sdapi/v1/txt2img", data=b"{", headers={"Authorization": AUTH}
    ) as raw:
        assert raw.status == 422
        assert (await raw.json())["detail"][0]["type"] == "value_error.jsondecode"
    assert emu.stats.jobs_started == 0


async def test_basic_auth_on_sdapi_only(session, emu):
    status, reply = await call(session, emu, "GET", "/sdapi/v1/samplers", auth=None)
    assert (status, reply) == (401, {"detail": "Not authenticated"})
    wrong = aiohttp.encode_basic_auth("bot", "wrong")
    status, reply = await call(session, emu, "GET", "/sdapi/v1/samplers", auth=wrong)
    assert status == 401 and reply["detail"] == "Incorrect username or password"
    status, _ = await call(session, emu, "POST", "/internal/progress", {"id_task": "x"}, auth=None)
    assert status == 200  # the progress route is the web UI's, outside --api-auth
    assert emu.stats.auth_failures == 2
    assert "hunter2" not in repr(emu)


async def test_without_internal_routes_it_answers_404_like_an_older_server(session):
    async with running(1, duration=0.2, internal_progress=False) as (emu,):
        status, reply = await call(session, emu, "POST", "/internal/progress", {"id_task": "x"})
        assert (status, reply) == (404, {"detail": "Not Found"})
        status, _ = await call(session, emu, "GET", "/internal/ping")
        assert status == 404


# -- faults and control --------------------------------------------------------------------


async def test_down_refuses_connections_and_comes_back_on_the_same_port(session, emu):
    url = emu.base_url
    await emu.go_down()
    with pytest.raises(aiohttp.ClientConnectorError):
        await call(session, emu, "GET", "/sdapi/v1/samplers")
    assert await emu.come_back() == url
    assert (await call(session, emu, "GET", "/sdapi/v1/samplers"))[0] == 200


async def test_going_down_cuts_the_running_job_and_its_connection(session, emu):
    emu.duration = 30.0
    job = asyncio.ensure_future(call(session, emu, "POST", "/sdapi/v1/txt2img", BODY))
    await within(emu.wait_until(lambda e: e.current_task is not None))
    await emu.go_down()
    with pytest.raises(aiohttp.ClientError):
        await within(job)
    assert emu.stats.jobs_abandoned == 1 and emu.current_task is None


async def test_faults_strike_the_next_requests(session, emu):
    emu.faults.add(Fault("samplers", "status", status=503, times=2, message="warming up"))
    for _ in range(2):
        status, reply = await call(session, emu, "GET", "/sdapi/v1/samplers")
        assert status == 503 and reply["errors"] == "warming up"
    assert (await call(session, emu, "GET", "/sdapi/v1/samplers"))[0] == 200
    emu.faults.add(Fault("txt2img", "drop", after_start=True))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(session, emu, "POST", "/sdapi/v1/txt2img", BODY)
    assert emu.stats.jobs_started == 1 and emu.stats.jobs_finished == 0
    assert emu.stats.faults_fired == {"samplers/status": 2, "txt2img/drop": 1}


async def test_control_routes(session, emu):
    async def control(method: str, path: str, body: Any = None) -> Any:
        status, reply = await call(session, emu, method, "/_emulator/" + path, body, auth=None)
        assert status == 200 and reply["ok"] is True, reply
        return reply

    await control("POST", "faults", {"endpoint": "sd-models", "kind": "status", "status": 500})
    assert (await call(session, emu, "GET", "/sdapi/v1/sd-models"))[0] == 500
    settings = await control("POST", "settings", {"internal_progress": False, "duration": 0.1})
    assert settings == {
        "ok": True,
        "duration": 0.1,
        "internal_progress": False,
        "live_previews": True,
    }
    assert (await call(session, emu, "POST", "/internal/progress", {}))[0] == 404
    await call(session, emu, "POST", "/sdapi/v1/txt2img", BODY)
    stats = await control("GET", "stats")
    assert stats["jobs_finished"] == 1 and stats["max_concurrent"] == 1
    async with session.post(emu.base_url + "/_emulator/faults", json={"kind": "nope"}) as bad:
        assert bad.status == 400
    await control("POST", "down", {"seconds": 0.1})
    await within(emu.wait_until(lambda e: not e.is_up))
    await within(emu.wait_until(lambda e: e.is_up))
    assert (await call(session, emu, "GET", "/sdapi/v1/samplers"))[0] == 200
    await control("POST", "reset")
    assert emu.stats.jobs_finished == 0


async def test_command_line_serves_on_the_port_it_prints():
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "a1111.emulator",
        "--port",
        "0",
        "--auth",
        "cli:secret-password",
        "--duration",
        "0.1",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await within(process.stdout.readline())).decode()
        assert line.startswith("A1111 emulator listening on http://127.0.0.1:")
        assert "secret" not in line
        url = line.split()[-1]
        async with aiohttp.ClientSession() as session:
            auth = {"Authorization": aiohttp.encode_basic_auth("cli", "secret-password")}
            async with session.get(url + "/sdapi/v1/samplers", headers=auth) as reply:
                assert reply.status == 200
    finally:
        process.terminate()
        assert await within(process.wait()) == 0


def test_command_line_refuses_credentials_without_a_colon():
    done = subprocess.run(
        [sys.executable, "-m", "a1111.emulator", "--auth", "nocolon"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1 and "user:password" in done.stderr
    assert "nocolon" not in done.stderr
