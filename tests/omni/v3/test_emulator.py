"""The Novita v3 emulator's promises, driven over real HTTP with a plain aiohttp session."""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from omni import emulator_images, rules
from omni.v3.emulator import MALFORMED_BODY, TASK_RETENTION, Emulator, Fault, NextTask

ROOT = Path(__file__).resolve().parents[3]
KEY = "sk-emulator-test-5a4b3c"
BEARER = {"Authorization": f"Bearer {KEY}"}
TXT2IMG = "/v3/async/txt2img"
IMG2IMG = "/v3/async/img2img"
RESULT = "/v3/async/task-result"
BODY: dict[str, Any] = {
    "extra": {"response_image_type": "png"},
    "request": {
        "model_name": rules.SDXL_MODEL,
        "prompt": "a lighthouse at dusk",
        "negative_prompt": "blurry",
        "width": 192,
        "height": 128,
        "image_num": 1,
        "steps": 20,
        "seed": 1234,
        "guidance_scale": 7.5,
        "sampler_name": "DPM++ SDE Karras",
    },
}


def body(**request: Any) -> dict[str, Any]:
    """BODY with some `request` fields replaced (None removes one)."""
    copied = copy.deepcopy(BODY)
    for name, value in request.items():
        if value is None:
            copied["request"].pop(name, None)
        else:
            copied["request"][name] = value
    return copied


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
def clock() -> SteppedClock:
    return SteppedClock()


@pytest.fixture
async def emu(clock: SteppedClock) -> AsyncIterator[Emulator]:
    """Tasks take 10 s of the stepped clock: 2 s queued, then 8 s running."""
    async with Emulator(api_key=KEY, duration=10.0, clock=clock) as emulator:
        yield emulator


async def submit(
    session: aiohttp.ClientSession,
    emu: Emulator,
    payload: dict[str, Any] | None = None,
    *,
    path: str = TXT2IMG,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], aiohttp.typedefs.LooseHeaders]:
    async with session.post(
        emu.base_url + path, json=BODY if payload is None else payload, headers=headers or BEARER
    ) as response:
        return response.status, await response.json(), response.headers


async def task_result(
    session: aiohttp.ClientSession, emu: Emulator, task_id: str
) -> tuple[int, dict[str, Any]]:
    async with session.get(
        emu.base_url + RESULT, params={"task_id": task_id}, headers=BEARER
    ) as response:
        return response.status, await response.json()


async def control(
    session: aiohttp.ClientSession, emu: Emulator, path: str, payload: dict | None = None
) -> tuple[int, dict[str, Any]]:
    url = f"{emu.base_url}/_emulator/{path}"
    if payload is None:
        async with session.get(url) as response:
            return response.status, await response.json()
    async with session.post(url, json=payload) as response:
        return response.status, await response.json()


async def accepted(session: aiohttp.ClientSession, emu: Emulator, **request: Any) -> str:
    status, reply, _ = await submit(session, emu, body(**request))
    assert status == 200, reply
    assert set(reply) == {"task_id"}
    return reply["task_id"]


def assert_error(status: int, reply: dict[str, Any], expected: int, reason: str) -> None:
    assert status == expected, reply
    assert set(reply) == {"code", "reason", "message", "metadata"}
    assert (reply["code"], reply["reason"]) == (expected, reason)


# -- authentication ------------------------------------------------------------------------


async def test_bearer_and_bare_keys_are_accepted(session, emu):
    assert (await submit(session, emu))[0] == 200
    assert (await submit(session, emu, headers={"Authorization": KEY}))[0] == 200
    assert emu.stats.auth_schemes == {"bearer": 1, "bare": 1}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}, {"X-Key": KEY}],
)
async def test_a_wrong_or_missing_key_is_403_invalid_api_key(session, emu, headers):
    async with session.post(emu.base_url + TXT2IMG, json=BODY, headers=headers) as response:
        assert_error(response.status, await response.json(), 403, "INVALID_API_KEY")
    async with session.get(emu.base_url + RESULT, params={"task_id": "x"}, headers=headers) as r:
        assert_error(r.status, await r.json(), 403, "INVALID_API_KEY")
    assert emu.stats.tasks_created == 0


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"model_name": "nope.safetensors"}, "model_name"),
        ({"width": 127}, "width"),
        ({"height": 2049}, "height"),
        ({"width": "1024"}, "width"),
        ({"image_num": 0}, "image_num"),
        ({"image_num": 9}, "image_num"),
        ({"steps": 101}, "steps"),
        ({"steps": None}, "steps"),
        ({"seed": -2}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"guidance_scale": 0.5}, "guidance_scale"),
        ({"guidance_scale": 31}, "guidance_scale"),
        ({"sampler_name": "Karras Supreme"}, "sampler_name"),
        ({"clip_skip": 13}, "clip_skip"),
    ],
)
async def test_invalid_fields_are_400_naming_the_field(session, emu, change, field):
    status, reply, _ = await submit(session, emu, body(**change))
    assert_error(status, reply, 400, "INVALID_REQUEST_BODY")
    assert reply["message"].startswith(f"request.{field}:")
    assert emu.stats.tasks_created == 0


async def test_the_api_ranges_edges_are_accepted(session, emu):
    for change in (
        {"width": 128, "height": 2048, "steps": 100, "guidance_scale": 30, "image_num": 8},
        {"width": 2048, "height": 128, "steps": 1, "guidance_scale": 1, "seed": 2**32 - 1},
        {"seed": -1, "negative_prompt": None},
    ):
        await accepted(session, emu, **change)


async def test_bodies_that_are_not_requests_are_400(session, emu):
    async with session.post(emu.base_url + TXT2IMG, data=b"{not json", headers=BEARER) as r:
        assert_error(r.status, await r.json(), 400, "INVALID_REQUEST_BODY")
    for payload in ([1, 2], {"extra": {}}, {"request": [], "extra": {}}, {**BODY, "extra": 1}):
        status, reply, _ = await submit(session, emu, payload)
        assert_error(status, reply, 400, "INVALID_REQUEST_BODY")
    status, reply, _ = await submit(session, emu, {**BODY, "extra": {"response_image_type": "gif"}})
    assert_error(status, reply, 400, "INVALID_REQUEST_BODY")
    assert "response_image_type" in reply["message"]


# -- a task's life -------------------------------------------------------------------------


async def test_a_task_moves_queued_processing_succeed_with_drifting_types(session, emu, clock):
    task_id = await accepted(session, emu, image_num=3)

    status, reply = await task_result(session, emu, task_id)
    assert status == 200
    assert reply["task"] == {
        "task_id": task_id,
        "task_type": "TXT_TO_IMG",
        "status": "TASK_STATUS_QUEUED",
        "reason": "",
        "eta": 10,
        "progress_percent": 0,
    }
    assert reply["images"] == []

    clock.now += 6.0  # 4 s into 8 s of running
    _, reply = await task_result(session, emu, task_id)
    assert reply["task"]["status"] == "TASK_STATUS_PROCESSING"
    assert (reply["task"]["progress_percent"], reply["task"]["eta"]) == (50, 4)

    clock.now += 4.0
    _, reply = await task_result(session, emu, task_id)
    task = reply["task"]
    # As in the reference's example: a finished task reports eta 0 and progress_percent 0.
    assert (task["status"], task["eta"], task["progress_percent"]) == ("TASK_STATUS_SUCCEED", 0, 0)
    assert reply["extra"]["seed"] == "1234"  # a string, one seed for the batch
    debug = reply["extra"]["debug_info"]
    assert json.loads(debug["request_info"])["seeds"] == [1234]
    assert all(isinstance(debug[k], str) for k in ("submit_time_ms", "complete_time_ms"))
    assert [image["image_url_ttl"] for image in reply["images"]] == [3600, "3600", "0"]
    assert [image["image_type"] for image in reply["images"]] == ["png"] * 3
    assert emu.stats.polls_by_task[task_id] == 3

    pictures = []
    for image in reply["images"]:
        async with session.get(image["image_url"]) as response:  # no key: S3-style
            assert (response.status, response.content_type) == (200, "image/png")
            pictures.append(await response.read())
    for data in pictures:
        with Image.open(io.BytesIO(data)) as picture:
            assert (picture.format, picture.size) == ("PNG", (192, 128))
    assert len(set(pictures)) == 3  # the same seed, three different pictures


async def test_string_numbers_setting(session, emu, clock):
    assert (await control(session, emu, "settings", {"string_numbers": True}))[0] == 200
    task_id = await accepted(session, emu)
    clock.now += 6.0
    _, reply = await task_result(session, emu, task_id)
    assert (reply["task"]["eta"], reply["task"]["progress_percent"]) == ("4", "50")


async def test_random_seed_is_resolved_and_reported_as_a_string(session, emu, clock):
    task_id = await accepted(session, emu, seed=-1)
    clock.now += 10.0
    _, reply = await task_result(session, emu, task_id)
    assert reply["extra"]["seed"].isdigit() and 0 <= int(reply["extra"]["seed"]) < 2**32


@pytest.mark.parametrize(("kind", "pil_format"), [("jpeg", "JPEG"), ("webp", "WEBP")])
async def test_other_image_types_are_served_as_asked(session, emu, clock, kind, pil_format):
    payload = {**body(), "extra": {"response_image_type": kind}}
    _, reply, _ = await submit(session, emu, payload)
    clock.now += 10.0
    _, result = await task_result(session, emu, reply["task_id"])
    url = result["images"][0]["image_url"]
    async with session.get(url) as response:
        assert response.content_type == f"image/{kind}"
        data = await response.read()
    with Image.open(io.BytesIO(data)) as picture:
        assert (picture.format, picture.size) == (pil_format, (192, 128))


async def test_img2img_takes_a_base64_image_and_strength(session, emu, clock):
    source = emulator_images.render("source", 1, 64, 64)
    payload = body(image_base64=base64.b64encode(source).decode(), strength=0.3)
    status, reply, _ = await submit(session, emu, payload, path=IMG2IMG)
    assert status == 200, reply
    clock.now += 10.0
    _, result = await task_result(session, emu, reply["task_id"])
    assert result["task"]["task_type"] == "IMG_TO_IMG"
    async with session.get(result["images"][0]["image_url"]) as response:
        with Image.open(io.BytesIO(await response.read())) as picture:
            assert picture.size == (192, 128)

    for change, field in [
        ({"image_base64": None}, "image_base64"),
        ({"image_base64": "not base64!"}, "image_base64"),
        ({"image_base64": base64.b64encode(b"not an image").decode()}, "image_base64"),
        ({"image_base64": base64.b64encode(source).decode(), "strength": 1.5}, "strength"),
    ]:
        status, reply, _ = await submit(session, emu, body(**change), path=IMG2IMG)
        assert_error(status, reply, 400, "INVALID_REQUEST_BODY")
        assert reply["message"].startswith(f"request.{field}:")


async def test_a_scripted_failure_reports_its_reason(session, emu, clock):
    assert (await control(session, emu, "tasks/next", {"outcome": "fail", "reason": "NSFW"}))[0]
    task_id = await accepted(session, emu)
    clock.now += 10.0
    _, reply = await task_result(session, emu, task_id)
    assert (reply["task"]["status"], reply["task"]["reason"]) == ("TASK_STATUS_FAILED", "NSFW")
    assert reply["images"] == []


# -- result URLs ---------------------------------------------------------------------------


async def test_urls_expire_with_an_s3_xml_403_and_signatures_are_checked(session, clock):
    async with Emulator(api_key=KEY, duration=1.0, image_ttl=30.0, clock=clock) as emu:
        task_id = await accepted(session, emu)
        clock.now += 1.0
        _, reply = await task_result(session, emu, task_id)
        url = reply["images"][0]["image_url"]
        assert "X-Amz-Signature=" in url and "X-Amz-Expires=30" in url

        async with session.get(url.replace("X-Amz-Signature=", "X-Amz-Signature=0")) as r:
            assert r.status == 403 and "SignatureDoesNotMatch" in await r.text()
        async with session.get(url) as response:
            assert response.status == 200

        clock.now = emu.task_expiry_time(task_id)
        async with session.get(url) as response:
            assert (response.status, response.content_type) == (403, "application/xml")
            text = await response.text()
        assert "<Code>AccessDenied</Code>" in text and "Request has expired" in text


async def test_an_image_before_the_task_ends_does_not_exist(session, emu, clock):
    task_id = await accepted(session, emu)
    clock.now += 10.0
    _, reply = await task_result(session, emu, task_id)
    url = reply["images"][0]["image_url"]
    clock.now -= 5.0  # the same signed link, asked for before the image exists
    async with session.get(url) as response:
        assert response.status == 404 and "NoSuchKey" in await response.text()


# -- rate limit and balance ----------------------------------------------------------------


async def test_rate_limit_counts_images_in_a_sliding_minute(session, clock):
    async with Emulator(api_key=KEY, images_per_minute=3, clock=clock) as emu:
        await accepted(session, emu, image_num=2)
        clock.now += 20.0
        await accepted(session, emu, image_num=1)

        status, reply, headers = await submit(session, emu, body(image_num=1))
        assert_error(status, reply, 429, "RATE_LIMIT_EXCEEDED")
        assert headers["Retry-After"] == "40"  # the first two images leave the window then
        assert emu.stats.tasks_created == 2  # refused: nothing created, nothing billed
        assert emu.stats.images_generated == 3

        clock.now += 39.0
        assert (await submit(session, emu, body(image_num=1)))[0] == 429
        clock.now += 1.0
        await accepted(session, emu, image_num=2)
        assert emu.stats.refusals["RATE_LIMIT_EXCEEDED"] == 2


async def test_rate_limit_retry_after_can_be_left_out(session, clock):
    async with Emulator(api_key=KEY, images_per_minute=1, clock=clock) as emu:
        await control(session, emu, "settings", {"send_retry_after": False})
        await accepted(session, emu)
        status, _, headers = await submit(session, emu)
        assert status == 429 and "Retry-After" not in headers


async def test_default_rate_limit_is_twenty_images_a_minute(session, emu):
    for _ in range(5):
        await accepted(session, emu, image_num=4)
    assert (await submit(session, emu, body(image_num=1)))[0] == 429


async def test_balance_runs_out_with_the_configured_status(session, emu):
    assert (await control(session, emu, "balance", {"images": 3}))[1]["balance"] == 3
    await accepted(session, emu, image_num=2)
    status, reply, _ = await submit(session, emu, body(image_num=2))
    assert_error(status, reply, 400, "BILLING_BALANCE_NOT_ENOUGH")
    await control(session, emu, "settings", {"billing_status": 403})
    status, reply, _ = await submit(session, emu, body(image_num=2))
    assert_error(status, reply, 403, "BILLING_BALANCE_NOT_ENOUGH")
    await accepted(session, emu, image_num=1)
    assert (await control(session, emu, "stats"))[1]["balance"] == 0


# -- unknown tasks -------------------------------------------------------------------------


async def test_unknown_forgotten_and_evicted_tasks_are_404_task_not_found(session, emu, clock):
    status, reply = await task_result(session, emu, "00000000-0000-0000-0000-000000000000")
    assert_error(status, reply, 404, "TASK_NOT_FOUND")

    forgotten = await accepted(session, emu)
    assert (await control(session, emu, "tasks/forget", {"task_id": forgotten}))[1] == {
        "ok": True,
        "forgotten": True,
    }
    assert_error(*(await task_result(session, emu, forgotten)), 404, "TASK_NOT_FOUND")

    evicted = await accepted(session, emu)
    clock.now += 10.0 + TASK_RETENTION - 1
    assert (await task_result(session, emu, evicted))[0] == 200
    clock.now += 1
    assert_error(*(await task_result(session, emu, evicted)), 404, "TASK_NOT_FOUND")


# -- faults --------------------------------------------------------------------------------


async def test_http_status_fault_answers_html_then_recovers(session, emu):
    emu.faults.add(Fault("txt2img", "http_status", status=502))
    async with session.post(emu.base_url + TXT2IMG, json=BODY, headers=BEARER) as response:
        assert (response.status, response.content_type) == (502, "text/html")
    assert emu.stats.tasks_created == 0
    await accepted(session, emu)
    assert emu.stats.faults_fired == {"txt2img/http_status": 1}


async def test_refuse_fault_answers_novitas_error_body(session, emu):
    await control(
        session,
        emu,
        "faults",
        {"endpoint": "txt2img", "kind": "refuse", "status": 400, "reason": "X", "message": "y"},
    )
    status, reply, _ = await submit(session, emu)
    assert (status, reply) == (400, {"code": 400, "reason": "X", "message": "y", "metadata": {}})
    assert emu.stats.tasks_created == 0


async def test_after_accept_fault_creates_and_bills_the_task(session, emu):
    emu.faults.add(Fault("txt2img", "http_status", status=500, after_accept=True))
    async with session.post(emu.base_url + TXT2IMG, json=BODY, headers=BEARER) as response:
        assert response.status == 500
    assert (emu.stats.tasks_created, emu.stats.images_generated) == (1, 1)


async def test_drop_fault_closes_without_a_reply(session, emu):
    await control(session, emu, "faults", {"endpoint": "txt2img", "kind": "drop"})
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with session.post(emu.base_url + TXT2IMG, json=BODY, headers=BEARER):
            pass
    assert emu.stats.tasks_created == 0


async def test_malformed_fault_is_a_200_that_is_not_json(session, emu):
    task_id = await accepted(session, emu)
    emu.faults.add(Fault("task-result", "malformed"))
    async with session.get(
        emu.base_url + RESULT, params={"task_id": task_id}, headers=BEARER
    ) as response:
        assert response.status == 200
        assert await response.read() == MALFORMED_BODY


async def test_unknown_status_fault_then_the_real_status(session, emu):
    task_id = await accepted(session, emu)
    emu.faults.add(Fault("task-result", "unknown_status", times=2))
    for _ in range(2):
        _, reply = await task_result(session, emu, task_id)
        assert reply["task"]["status"] == "TASK_STATUS_UNKNOWN"
    assert emu.stats.faults_fired == {"task-result/unknown_status": 2}
    _, reply = await task_result(session, emu, task_id)
    assert reply["task"]["status"] == "TASK_STATUS_QUEUED"


async def test_unknown_status_fault_still_checks_the_key(session, emu):
    emu.faults.add(Fault("task-result", "unknown_status"))
    async with session.get(
        emu.base_url + RESULT, params={"task_id": "x"}, headers={"Authorization": "Bearer no"}
    ) as response:
        assert response.status == 403


async def test_delay_fault_then_a_normal_reply(session, emu):
    emu.faults.add(Fault("txt2img", "delay", seconds=0.2))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await submit(session, emu))[0] == 200
    assert loop.time() - started >= 0.2


@pytest.mark.parametrize(
    "payload",
    [
        {"endpoint": "upscale", "kind": "drop"},
        {"endpoint": "txt2img", "kind": "explode"},
        {"endpoint": "task-result", "kind": "drop", "after_accept": True},
        {"endpoint": "txt2img", "kind": "unknown_status"},
        {"endpoint": "txt2img", "kind": "http_status", "status": 200},
        {"endpoint": "txt2img", "kind": "drop", "times": 0},
        {"endpoint": "txt2img", "kind": "drop", "surprise": 1},
        {"endpoint": "txt2img", "kind": "refuse", "reason": 5},
    ],
)
async def test_control_routes_refuse_bad_faults(session, emu, payload):
    status, reply = await control(session, emu, "faults", payload)
    assert status == 400 and reply["ok"] is False


async def test_control_routes_refuse_bad_settings(session, emu):
    for path, payload in [
        ("settings", {"billing_status": 402}),
        ("settings", {"images_per_minute": 0}),
        ("settings", {"string_numbers": "yes"}),
        ("settings", {"colour": "blue"}),
        ("balance", {"images": -1}),
        ("tasks/next", {"outcome": "timeout"}),
        ("tasks/forget", {}),
    ]:
        status, reply = await control(session, emu, path, payload)
        assert status == 400 and reply["ok"] is False, (path, payload)


async def test_reset_restores_the_start(session, clock):
    async with Emulator(api_key=KEY, balance=5, images_per_minute=2, clock=clock) as emu:
        task_id = await accepted(session, emu, image_num=2)
        await control(session, emu, "settings", {"images_per_minute": 100, "string_numbers": True})
        emu.faults.script_next_task(NextTask("fail"))
        assert (await control(session, emu, "reset", {}))[0] == 200
        _, stats = await control(session, emu, "stats")
        assert (stats["tasks_created"], stats["balance"], stats["requests"]) == (0, 5, {})
        assert (emu.images_per_minute, emu.string_numbers) == (2, False)
        assert (await task_result(session, emu, task_id))[0] == 404
        await accepted(session, emu, image_num=2)  # the window was emptied too


def test_constructor_refuses_nonsense():
    for kwargs in ({"api_key": ""}, {"balance": -1}, {"images_per_minute": 0}, {"duration": -1}):
        with pytest.raises(ValueError):
            Emulator(**{"api_key": KEY, **kwargs})
    assert KEY not in repr(Emulator(api_key=KEY))


# -- command line --------------------------------------------------------------------------


async def test_main_serves_on_the_given_port_with_the_given_key(session):
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from omni.v3.emulator import main; main(sys.argv[1:])",
        "--api",
        "v3",
        "--port",
        "0",
        "--key",
        KEY,
        "--balance",
        "1",
        "--duration",
        "0.1",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert line.startswith("Novita v3 emulator listening on http://127.0.0.1:")
        base_url = line.rsplit(" ", 1)[-1].strip()
        async with session.post(base_url + TXT2IMG, json=BODY, headers=BEARER) as response:
            assert response.status == 200
        async with session.post(base_url + TXT2IMG, json=BODY, headers=BEARER) as response:
            assert (await response.json())["reason"] == "BILLING_BALANCE_NOT_ENOUGH"
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 20) == 0
