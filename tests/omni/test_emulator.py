"""The Omniinfer emulator's promises, driven over real HTTP with a plain aiohttp session."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from omni import emulator_images, rules
from omni.emulator import MALFORMED_BODY, MODELS, TASK_RETENTION, Emulator, Fault

ROOT = Path(__file__).resolve().parents[2]
KEY = "test-key"
HEADERS = {"X-Omni-Key": KEY}
BODY: dict[str, Any] = {
    "prompt": "a lighthouse at dusk",
    "negative_prompt": "blurry",
    "model_name": rules.SDXL_MODEL,
    "sampler_name": "DPM++ SDE Karras",
    "steps": 20,
    "cfg_scale": 7,
    "seed": 1234,
    "width": 96,
    "height": 64,
    "batch_size": 1,
    "n_iter": 1,
}


class SteppedClock:
    """The emulator's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(api_key=KEY, duration=0.4) as emulator:
        yield emulator


@pytest.fixture
def clock() -> SteppedClock:
    return SteppedClock()


@pytest.fixture
async def stepped(clock: SteppedClock) -> AsyncIterator[Emulator]:
    async with Emulator(api_key=KEY, duration=10, clock=clock) as emulator:
        yield emulator


async def call(
    session: aiohttp.ClientSession, emu: Emulator, path: str, body: Any = None, **get: str
) -> dict[str, Any]:
    """One API call; the JSON envelope back."""
    url = f"{emu.base_url}{path}"
    if body is None:
        request = session.get(url, params=get, headers=HEADERS)
    else:
        request = session.post(url, json=body, headers=HEADERS)
    async with request as response:
        assert response.status == 200
        return await response.json()


async def submit(session: aiohttp.ClientSession, emu: Emulator, **changes: Any) -> dict[str, Any]:
    return await call(session, emu, "/v2/txt2img", {**BODY, **changes})


async def submitted(session: aiohttp.ClientSession, emu: Emulator, **changes: Any) -> str:
    reply = await submit(session, emu, **changes)
    assert reply["code"] == 0, reply
    return reply["data"]["task_id"]


async def progress(session: aiohttp.ClientSession, emu: Emulator, task_id: str) -> dict[str, Any]:
    reply = await call(session, emu, "/v2/progress", task_id=task_id)
    assert reply["code"] == 0, reply
    return reply["data"]


async def until_final(
    session: aiohttp.ClientSession, emu: Emulator, task_id: str, interval: float = 0.02
) -> dict[str, Any]:
    for _ in range(200):
        data = await progress(session, emu, task_id)
        if data["status"] >= 2:
            return data
        await asyncio.sleep(interval)
    raise AssertionError("the task never became final")


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with session.get(url) as response:
        return response.status, await response.read()


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


async def control(
    session: aiohttp.ClientSession, emu: Emulator, path: str, payload: Any = None
) -> tuple[int, dict[str, Any]]:
    url = f"{emu.base_url}/_emulator/{path}"
    request = session.get(url) if payload is None else session.post(url, json=payload)
    async with request as response:
        return response.status, await response.json()


# -- authentication and validation --------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"X-Omni-Key": "wrong"}, {"X-Omni-Key": ""}])
async def test_a_missing_or_wrong_key_is_refused_with_code_4_on_every_endpoint(
    emu, session, headers
):
    for method, path, body in [
        ("POST", "/v2/txt2img", BODY),
        ("POST", "/v2/upscale", {}),
        ("GET", "/v2/progress?task_id=x", None),
        ("GET", "/v2/models", None),
    ]:
        async with session.request(
            method, f"{emu.base_url}{path}", json=body, headers=headers
        ) as response:
            assert response.status == 200
            assert await response.json() == {
                "code": 4,
                "msg": "invalid X-Omni-Key: missing or not a valid key",
                "data": None,
            }
    assert emu.stats.tasks_created == 0


async def test_envelopes_are_served_as_exactly_application_json(emu, session):
    async with session.get(f"{emu.base_url}/v2/models", headers=HEADERS) as response:
        assert response.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("raw", [b"{", b"not json", b"[1, 2]", b"\xff\xfe"])
async def test_a_body_that_is_not_a_json_object_gets_code_1(emu, session, raw):
    async with session.post(f"{emu.base_url}/v2/txt2img", data=raw, headers=HEADERS) as r:
        assert (await r.json())["code"] == 1


@pytest.mark.parametrize("model", ["sd_xl_base_0.9.safetensors", "", None, "sdxl_vae.safetensors"])
async def test_a_model_that_is_not_one_of_its_checkpoints_gets_code_2(emu, session, model):
    reply = await submit(session, emu, model_name=model)
    assert reply["code"] == 2 and "model_name" in reply["msg"]


async def test_an_unknown_sampler_gets_code_8(emu, session):
    reply = await submit(session, emu, sampler_name="DPM++ Karras")
    assert reply["code"] == 8 and "sampler_name" in reply["msg"]


async def test_every_sampler_of_the_api_wide_list_is_accepted_even_those_sdxl_lacks(emu, session):
    assert len(rules.API_SAMPLERS) == 30
    for sampler in rules.API_SAMPLERS:
        assert (await submit(session, emu, sampler_name=sampler))["code"] == 0, sampler


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", ""),
        ("prompt", "   "),
        ("prompt", None),
        ("steps", 0),
        ("steps", 51),
        ("cfg_scale", 0),
        ("cfg_scale", 30.5),
        ("width", 0),
        ("width", 2049),
        ("height", 4096),
        ("batch_size", 9),
        ("batch_size", -1),
        ("n_iter", 9),
        ("seed", -2),
        ("seed", 2**32),
        ("img_expire_ttl", 604_801),
        ("img_expire_ttl", -1),
    ],
)
async def test_out_of_range_fields_get_code_6_naming_the_field(emu, session, field, value):
    reply = await submit(session, emu, **{field: value})
    assert reply["code"] == 6
    assert reply["msg"].startswith(f"{field}:")
    assert reply["data"] is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", 5),
        ("negative_prompt", 5),
        ("steps", 20.5),
        ("steps", "20"),
        ("extra", "nsfw"),
        ("sd_refiner", "sd_xl_refiner_1.0.safetensors"),
    ],
)
async def test_fields_of_the_wrong_json_type_get_code_1_invalid_parameter(
    emu, session, field, value
):
    reply = await submit(session, emu, **{field: value})
    assert reply["code"] == 1
    assert reply["msg"].startswith(f"{field}: invalid parameter")
    assert reply["data"] is None


async def test_values_on_the_documented_bounds_are_accepted(emu, session):
    edges = [
        {"steps": 1},
        {"steps": 50},
        {"cfg_scale": 0.1},
        {"cfg_scale": 30},
        {"width": 1, "height": 2048},
        {"batch_size": 0, "n_iter": 0},
        {"batch_size": 8, "n_iter": 8},
        {"seed": -1},
        {"seed": 0},
        {"seed": 2**32 - 1},
        {"img_expire_ttl": 0},
        {"img_expire_ttl": 604_800},
        {"extra": {"enable_nsfw_detection": True}},
    ]
    for edge in edges:
        assert (await submit(session, emu, **edge))["code"] == 0, edge


async def test_an_unknown_task_id_gets_code_3(emu, session):
    for params in ({"task_id": "00000000-0000-0000-0000-000000000000"}, {}):
        reply = await call(session, emu, "/v2/progress", **params)
        assert (reply["code"], reply["data"]) == (3, None)


# -- credit -------------------------------------------------------------------------------


async def test_credit_runs_out_with_code_7_and_a_refused_submit_spends_nothing(session):
    async with Emulator(api_key=KEY, credit=3) as emu:
        assert (await submit(session, emu, batch_size=2))["code"] == 0
        refused = await submit(session, emu, batch_size=1, n_iter=2)
        assert refused["code"] == 7 and refused["data"] is None
        assert emu.credit == 1  # not partially spent
        assert (await submit(session, emu))["code"] == 0
        assert emu.credit == 0
        assert (await submit(session, emu))["code"] == 7
        assert (emu.stats.tasks_created, emu.stats.images_generated) == (2, 3)
        emu.credit = None
        assert (await submit(session, emu, batch_size=8, n_iter=8))["code"] == 0


async def test_a_batch_of_zero_is_billed_as_one_image(session):
    async with Emulator(api_key=KEY, credit=1) as emu:
        assert (await submit(session, emu, batch_size=0, n_iter=0))["code"] == 0
        assert emu.credit == 0


# -- a task's life ------------------------------------------------------------------------


async def test_a_task_goes_queued_running_done_with_rising_progress_and_previews(emu, session):
    task_id = await submitted(session, emu, width=320, height=192)
    readings = []
    while not readings or readings[-1]["status"] < 2:
        readings.append(await progress(session, emu, task_id))
        await asyncio.sleep(0.015)
    statuses = [r["status"] for r in readings]
    assert statuses == sorted(statuses) and {0, 1, 2} <= set(statuses)
    running = [r for r in readings if r["status"] == 1]
    fractions = [r["progress"] for r in running]
    assert all(isinstance(f, float) and 0 <= f < 1 for f in fractions)
    assert fractions == sorted(fractions) and fractions[0] < fractions[-1]
    etas = [r["eta_relative"] for r in readings]
    assert etas == sorted(etas, reverse=True)
    assert all(0 < r["eta_relative"] <= 0.4 for r in readings if r["status"] < 2)
    for reading in running:
        assert (reading["current_images"] is not None) == (reading["progress"] >= 0.3)
    assert all(r["imgs"] is None for r in readings if r["status"] < 2)
    [preview_url] = next(r["current_images"] for r in running if r["current_images"])
    status, preview = await fetch(session, preview_url)
    assert status == 200 and png_size(preview) == (256, 154)
    done = readings[-1]
    assert (done["progress"], done["eta_relative"], done["failed_reason"]) == (1, 0, "")
    assert done["current_images"] is None
    for stamp in ("submit_time", "execution_time", "txt2img_time", "finish_time"):
        time.strptime(done[stamp], "%Y-%m-%d %H:%M:%S")
    assert emu.stats.polls_by_task[task_id] == len(readings)


async def test_on_a_stepped_clock_progress_and_eta_are_exact(stepped, clock, session):
    task_id = await submitted(session, stepped)
    queued = await progress(session, stepped, task_id)
    assert (queued["status"], queued["progress"], queued["eta_relative"]) == (0, 0, 10)
    assert queued["execution_time"] == ""
    clock.now += 6  # queued for the first 2 s, then 8 s running: half way
    running = await progress(session, stepped, task_id)
    assert (running["status"], running["progress"], running["eta_relative"]) == (1, 0.5, 4)
    assert running["current_images"][0] == f"{stepped.base_url}/images/{task_id}-preview.png"
    clock.now += 4
    done = await progress(session, stepped, task_id)
    assert (done["status"], done["progress"], done["eta_relative"]) == (2, 1, 0)
    assert stepped.task_final_time(task_id) == 1010


async def test_previews_can_be_turned_off_with_extra_enable_progress_info(stepped, clock, session):
    task_id = await submitted(session, stepped, extra={"enable_progress_info": False})
    clock.now += 8
    assert (await progress(session, stepped, task_id))["current_images"] is None
    status, _ = await fetch(session, f"{stepped.base_url}/images/{task_id}-preview.png")
    assert status == 404


async def test_results_are_batch_times_n_iter_real_pngs_of_the_requested_size(
    stepped, clock, session
):
    task_id = await submitted(session, stepped, batch_size=2, n_iter=2, width=120, height=80)
    clock.now += 10
    done = await progress(session, stepped, task_id)
    assert done["imgs"] == [f"{stepped.base_url}/images/{task_id}-{i}.png" for i in range(4)]
    for url in done["imgs"]:
        async with session.get(url) as response:  # no key: plain object-store links
            assert response.status == 200
            assert response.headers["Content-Type"] == "image/png"
            assert png_size(await response.read()) == (120, 80)


async def test_info_is_a_json_string_carrying_the_real_seed(stepped, clock, session):
    task_id = await submitted(session, stepped, seed=-1, batch_size=2, n_iter=2)
    clock.now += 10
    info_text = (await progress(session, stepped, task_id))["info"]
    assert isinstance(info_text, str)
    info = json.loads(info_text)
    seed = info["seed"]
    assert 0 <= seed < 2**32
    assert info["all_seeds"] == [(seed + i) % 2**32 for i in range(4)]
    assert (info["width"], info["height"], info["steps"], info["cfg_scale"]) == (96, 64, 20, 7.0)
    assert info["sampler_name"] == "DPM++ SDE Karras"
    assert info["prompt"] == BODY["prompt"] and len(info["all_prompts"]) == 4
    assert info["negative_prompt"] == "blurry"
    assert info["sd_model_hash"] == "31e35c80fc"
    assert f"Seed: {seed + 1}," in info["infotexts"][1]
    assert {"subseed", "batch_size", "job_timestamp", "clip_skip"} <= info.keys()


async def test_images_are_deterministic_from_prompt_and_seed(stepped, clock, session):
    same = [await submitted(session, stepped, seed=77) for _ in range(2)]
    other_seed = await submitted(session, stepped, seed=78)
    other_prompt = await submitted(session, stepped, seed=77, prompt="a red barn")
    clock.now += 10
    bodies = []
    for task_id in [*same, other_seed, other_prompt]:
        [url] = (await progress(session, stepped, task_id))["imgs"]
        bodies.append((await fetch(session, url))[1])
    assert bodies[0] == bodies[1]
    assert len(set(bodies)) == 3
    assert bodies[0] == emulator_images.render(BODY["prompt"], 77, 96, 64)


async def test_with_shared_pictures_every_task_of_a_size_gets_the_same_png(clock, session):
    async with Emulator(api_key=KEY, duration=10, clock=clock, draw_each_image=False) as emu:
        tasks = [await submitted(session, emu, seed=seed) for seed in (1, 2)]
        other_size = await submitted(session, emu, seed=3, width=64, height=96)
        clock.now += 10
        bodies = []
        for task_id in [*tasks, other_size]:
            [url] = (await progress(session, emu, task_id))["imgs"]
            bodies.append((await fetch(session, url))[1])
    assert bodies[0] == bodies[1]
    assert png_size(bodies[0]) == (96, 64)
    assert png_size(bodies[2]) == (64, 96)


async def test_a_scripted_failure_ends_with_status_3_and_its_reason(stepped, clock, session):
    stepped.faults.fail_next_task("NSFW content detected")
    task_id = await submitted(session, stepped)
    clock.now += 10
    done = await progress(session, stepped, task_id)
    assert (done["status"], done["failed_reason"], done["imgs"]) == (
        3,
        "NSFW content detected",
        None,
    )
    status, _ = await fetch(session, f"{stepped.base_url}/images/{task_id}-0.png")
    assert status == 404


async def test_a_scripted_timeout_ends_with_status_4_after_its_own_duration(
    stepped, clock, session
):
    stepped.faults.timeout_next_task(duration=30)
    slow = await submitted(session, stepped)
    normal = await submitted(session, stepped)
    clock.now += 10
    assert (await progress(session, stepped, normal))["status"] == 2
    assert (await progress(session, stepped, slow))["status"] == 1
    clock.now += 20
    assert (await progress(session, stepped, slow))["status"] == 4
    assert stepped.task_final_time(slow) == 1030


# -- images: expiry, upscale, cache -------------------------------------------------------


async def test_images_404_before_they_exist_and_403_after_their_ttl(stepped, clock, session):
    task_id = await submitted(session, stepped, img_expire_ttl=60)
    default_ttl = await submitted(session, stepped)
    url, other = (f"{stepped.base_url}/images/{t}-0.png" for t in (task_id, default_ttl))
    assert (await fetch(session, url))[0] == 404  # not final yet
    clock.now += 10
    assert (await fetch(session, url))[0] == 200
    assert (await fetch(session, f"{stepped.base_url}/images/{task_id}-1.png"))[0] == 404
    clock.now += 60
    status, body = await fetch(session, url)
    assert status == 403 and b"<Code>AccessDenied</Code>" in body and b"expired" in body
    assert (await fetch(session, other))[0] == 200  # an hour by default
    for name in ("nope.png", f"{task_id}.png", f"{task_id}-0.jpg"):
        assert (await fetch(session, f"{stepped.base_url}/images/{name}"))[0] == 404


async def test_tasks_long_past_expiry_are_forgotten_and_then_unknown(stepped, clock, session):
    task_id = await submitted(session, stepped)
    clock.now += 10 + TASK_RETENTION
    await submitted(session, stepped)  # submits sweep out old tasks
    reply = await call(session, stepped, "/v2/progress", task_id=task_id)
    assert reply["code"] == 3
    assert task_id not in stepped.stats.polls_by_task


def png_b64(width: int, height: int) -> str:
    return base64.b64encode(emulator_images.render("source", 1, width, height)).decode()


async def test_upscale_returns_one_png_of_the_scaled_size_and_costs_one_image(session):
    async with Emulator(api_key=KEY, duration=0.2, credit=2) as emu:
        by_factor = await call(
            session, emu, "/v2/upscale", {"image": png_b64(100, 60), "upscaling_resize": 2}
        )
        to_size = await call(
            session,
            emu,
            "/v2/upscale",
            {
                "image": png_b64(100, 60),
                "upscaler_1": "R-ESRGAN 4x+",
                "resize_mode": 1,
                "upscaling_resize_w": 300,
                "upscaling_resize_h": 150,
            },
        )
        assert emu.credit == 0
        for reply, size in ((by_factor, (200, 120)), (to_size, (300, 150))):
            done = await until_final(session, emu, reply["data"]["task_id"])
            assert done["status"] == 2 and len(done["imgs"]) == 1
            status, data = await fetch(session, done["imgs"][0])
            assert status == 200 and png_size(data) == size


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"image": "!!not base64!!"},
        {"image": base64.b64encode(b"GIF89a, or so it says").decode()},
        {"image": png_b64(10, 10), "upscaling_resize": 5},
        {"image": png_b64(10, 10), "upscaling_resize": 0.5},
        {"image": png_b64(2048, 8), "upscaling_resize": 2.5},
        {"image": png_b64(10, 10), "resize_mode": 1, "upscaling_resize_w": 20},
        {"image": png_b64(10, 10), "resize_mode": 2},
        {"image": png_b64(10, 10), "upscaler_1": "Magic 8x"},
    ],
    ids=[
        "no-image",
        "bad-base64",
        "not-an-image",
        "factor-5",
        "factor-half",
        "over-4096",
        "no-height",
        "bad-mode",
        "bad-upscaler",
    ],
)
async def test_bad_upscale_requests_get_code_6_and_cost_nothing(session, body):
    async with Emulator(api_key=KEY, credit=1) as emu:
        reply = await call(session, emu, "/v2/upscale", body)
        assert reply["code"] == 6, reply
        assert emu.credit == 1


async def test_the_png_cache_is_bounded_and_shares_one_render_per_key():
    cache = emulator_images.PngCache(max_items=2)
    renders: list[str] = []

    def render(name: str) -> bytes:
        renders.append(name)
        time.sleep(0.05)
        return name.encode()

    results = await asyncio.gather(*(cache.get("a", lambda: render("a")) for _ in range(5)))
    assert results == [b"a"] * 5 and renders == ["a"]
    await cache.get("b", lambda: render("b"))
    await cache.get("c", lambda: render("c"))
    assert len(cache) == 2
    await cache.get("a", lambda: render("a"))
    assert renders == ["a", "b", "c", "a"]


# -- models -------------------------------------------------------------------------------


async def test_models_lists_checkpoints_and_filters_by_type(emu, session):
    everything = (await call(session, emu, "/v2/models"))["data"]["models"]
    assert len(everything) == len(MODELS)
    checkpoints = {m["sd_name"] for m in everything if m["type"] == "checkpoint"}
    assert {rules.SDXL_MODEL, "sd_xl_refiner_1.0.safetensors"} <= checkpoints
    assert any("v1-5" in name for name in checkpoints)
    assert all({"name", "sd_name", "hash", "type"} <= m.keys() for m in everything)
    for kind in ("vae", "controlnet"):
        some = (await call(session, emu, "/v2/models", type=kind))["data"]["models"]
        assert some and {m["type"] for m in some} == {kind}


# -- faults -------------------------------------------------------------------------------


async def test_an_http_status_fault_answers_with_a_non_json_body_then_recovers(emu, session):
    emu.faults.add(Fault("models", "http_status", status=502, times=2))
    for expected in (502, 502, 200):
        async with session.get(f"{emu.base_url}/v2/models", headers=HEADERS) as response:
            assert response.status == expected
            if expected == 502:
                assert response.content_type == "text/html"
                with pytest.raises(ValueError):
                    json.loads(await response.read())
    assert emu.stats.faults_fired["models/http_status"] == 2


async def test_a_delay_fault_holds_the_reply_then_answers_normally(emu, session):
    emu.faults.add(Fault("models", "delay", seconds=0.3))
    started = time.monotonic()
    assert (await call(session, emu, "/v2/models"))["code"] == 0
    assert time.monotonic() - started >= 0.3


async def test_a_dropped_submit_surfaces_as_server_disconnected(emu, session):
    emu.faults.add(Fault("txt2img", "drop"))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await submit(session, emu)
    assert emu.stats.tasks_created == 0
    assert (await submit(session, emu))["code"] == 0  # the next connection is fine


async def test_aiohttp_retries_a_dropped_get_once_so_a_visible_drop_needs_two(emu, session):
    emu.faults.add(Fault("models", "drop"))
    assert (await call(session, emu, "/v2/models"))["code"] == 0
    assert emu.stats.requests["models"] == 2
    emu.faults.add(Fault("models", "drop", times=2))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(session, emu, "/v2/models")
    assert emu.stats.faults_fired["models/drop"] == 3


async def test_a_malformed_fault_is_http_200_json_that_does_not_parse(emu, session):
    emu.faults.add(Fault("progress", "malformed"))
    url = f"{emu.base_url}/v2/progress?task_id=x"
    async with session.get(url, headers=HEADERS) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        with pytest.raises(ValueError):
            json.loads(await response.read())


@pytest.mark.parametrize("code", [-1, 5, 9, 10, 11, 42])
async def test_a_code_fault_answers_with_that_envelope_code(emu, session, code):
    emu.faults.add(Fault("txt2img", "code", code=code))
    reply = await submit(session, emu)
    assert (reply["code"], reply["data"]) == (code, None)
    assert emu.stats.tasks_created == 0


async def post_raw(session: aiohttp.ClientSession, emu: Emulator) -> tuple[int, bytes]:
    async with session.post(f"{emu.base_url}/v2/txt2img", json=BODY, headers=HEADERS) as r:
        return r.status, await r.read()


@pytest.mark.parametrize(
    ("kind", "reply"),
    [("http_status", (500, None)), ("malformed", (200, MALFORMED_BODY)), ("drop", None)],
)
async def test_a_fault_after_acceptance_still_creates_and_bills_the_task(session, kind, reply):
    async with Emulator(api_key=KEY, credit=5) as emu:
        emu.faults.add(Fault("txt2img", kind, after_accept=True))
        if reply is None:
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await post_raw(session, emu)
        else:
            status, body = await post_raw(session, emu)
            assert status == reply[0] and (reply[1] is None or body == reply[1])
        assert (emu.stats.tasks_created, emu.credit) == (1, 4)
        assert (await submit(session, emu))["code"] == 0


async def test_an_after_accept_fault_waits_for_a_submit_that_is_accepted(emu, session):
    emu.faults.add(Fault("txt2img", "code", code=-1, after_accept=True))
    assert (await submit(session, emu, steps=0))["code"] == 6  # refused: fault not used
    assert (await submit(session, emu))["code"] == -1
    assert emu.stats.tasks_created == 1


async def test_image_downloads_can_fault_too(stepped, clock, session):
    task_id = await submitted(session, stepped)
    clock.now += 10
    stepped.faults.add(Fault("image", "http_status", status=503))
    url = f"{stepped.base_url}/images/{task_id}-0.png"
    assert (await fetch(session, url))[0] == 503
    assert (await fetch(session, url))[0] == 200


@pytest.mark.parametrize(
    "options",
    [
        {"endpoint": "nope", "kind": "drop"},
        {"endpoint": "models", "kind": "explode"},
        {"endpoint": "models", "kind": "code", "code": 0},
        {"endpoint": "models", "kind": "http_status", "status": 200},
        {"endpoint": "models", "kind": "drop", "times": 0},
        {"endpoint": "progress", "kind": "drop", "after_accept": True},
    ],
)
def test_nonsensical_faults_are_refused(options):
    with pytest.raises(ValueError):
        Fault(**options)


# -- control routes -----------------------------------------------------------------------


async def test_control_routes_script_faults_outcomes_and_credit(emu, session):
    status, reply = await control(
        session, emu, "faults", {"endpoint": "txt2img", "kind": "code", "code": 5, "times": 2}
    )
    assert (status, reply) == (200, {"ok": True})
    assert [(await submit(session, emu))["code"] for _ in range(3)] == [5, 5, 0]

    await control(session, emu, "tasks/next", {"outcome": "fail", "reason": "boom"})
    await control(session, emu, "tasks/next", {"outcome": "timeout", "duration": 0.05})
    failed, timed_out = [await submitted(session, emu) for _ in range(2)]
    assert (await until_final(session, emu, timed_out))["status"] == 4
    assert (await until_final(session, emu, failed))["failed_reason"] == "boom"

    assert (await control(session, emu, "credit", {"images": 1}))[1]["credit"] == 1
    assert (await submit(session, emu, batch_size=2))["code"] == 7
    await control(session, emu, "credit", {"images": None})
    assert (await submit(session, emu, batch_size=2))["code"] == 0

    status, stats = await control(session, emu, "stats")
    assert status == 200
    assert stats["tasks_created"] == 4 and stats["images_generated"] == 5
    assert stats["requests"]["txt2img"] == 7 and stats["credit"] is None
    assert stats["polls_by_task"][failed] >= 1


async def test_control_reset_forgets_faults_tasks_stats_and_restores_credit(session):
    async with Emulator(api_key=KEY, credit=3, duration=0.1) as emu:
        task_id = await submitted(session, emu)
        await control(session, emu, "faults", {"endpoint": "models", "kind": "drop"})
        await control(session, emu, "tasks/next", {"outcome": "fail"})
        assert (await control(session, emu, "reset", {}))[1] == {"ok": True}
        assert (await call(session, emu, "/v2/progress", task_id=task_id))["code"] == 3
        assert (await call(session, emu, "/v2/models"))["code"] == 0
        assert emu.credit == 3 and emu.stats.tasks_created == 0
        assert (await until_final(session, emu, await submitted(session, emu)))["status"] == 2


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("faults", {"endpoint": "models"}),
        ("faults", {"endpoint": "models", "kind": "drop", "bogus": 1}),
        ("tasks/next", {"outcome": "explode"}),
        ("credit", {"images": -1}),
        ("credit", [1]),
    ],
)
async def test_control_routes_refuse_bad_payloads_with_400(emu, session, path, payload):
    status, reply = await control(session, emu, path, payload)
    assert status == 400 and reply["ok"] is False and reply["error"]


# -- running it ---------------------------------------------------------------------------


async def test_public_host_names_the_host_in_base_url_and_result_urls(clock, session):
    async with Emulator(api_key=KEY, duration=0, public_host="localhost", clock=clock) as emu:
        assert emu.base_url.startswith("http://localhost:")
        task_id = await submitted(session, emu)
        [url] = (await progress(session, emu, task_id))["imgs"]
        assert url == f"{emu.base_url}/images/{task_id}-0.png"
        assert "sandbox" not in repr(Emulator()) and KEY not in repr(emu)


async def test_five_hundred_concurrent_tasks_poll_through_one_session(session):
    async with Emulator(api_key=KEY, duration=0.5) as emu:
        task_ids = await asyncio.gather(*(submitted(session, emu) for _ in range(500)))

        started = time.monotonic()
        finals = await asyncio.gather(*(until_final(session, emu, t, 0.1) for t in task_ids))
        assert {final["status"] for final in finals} == {2}
        assert time.monotonic() - started < 5
        assert emu.stats.tasks_created == 500


async def test_the_cli_prints_its_url_and_serves_until_terminated(session):
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "omni.emulator",
        "--port",
        "0",
        "--key",
        KEY,
        "--credit",
        "1",
        "--duration",
        "0.1",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert line.startswith("Omniinfer emulator listening on http://127.0.0.1:")
        base_url = line.rsplit(" ", 1)[-1].strip()
        async with session.get(f"{base_url}/v2/models", headers=HEADERS) as response:
            assert (await response.json())["code"] == 0
        async with session.post(f"{base_url}/v2/txt2img", json=BODY, headers=HEADERS) as r:
            assert (await r.json())["code"] == 0
        async with session.post(f"{base_url}/v2/txt2img", json=BODY, headers=HEADERS) as r:
            assert (await r.json())["code"] == 7  # --credit 1
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 10) == 0
