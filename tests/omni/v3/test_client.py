"""The Novita v3 client against the local emulator: every success and error path."""

from __future__ import annotations

import io
import socket

import aiohttp
import pytest
from PIL import Image

from omni import emulator_images
from omni.errors import (
    AuthenticationError,
    ConnectionFailed,
    InsufficientCredit,
    InvalidRequest,
    MalformedResponse,
    ServerError,
    SubmissionUncertain,
    TaskFailed,
    TaskNotFound,
    TaskTimedOut,
)
from omni.retry import RetryPolicy
from omni.v3 import (
    Img2ImgRequest,
    NovitaClient,
    PollPolicy,
    RateLimited,
    TaskResult,
    TaskStatus,
    Txt2ImgRequest,
)
from omni.v3.emulator import Emulator, Fault, NextTask

KEY = "sk-client-test-1f2e3d4c"
FAST_POLL = PollPolicy(first_delay=0.03, min_interval=0.03, max_running_interval=0.1)
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)
TIMEOUT = aiohttp.ClientTimeout(total=1.0)
SMALL = Txt2ImgRequest(prompt="a lighthouse at dusk", width=256, height=192, seed=1234)


class SteppedClock:
    """The emulator's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def emulator():
    async with Emulator(api_key=KEY, duration=0.4) as emu:
        yield emu


@pytest.fixture
def clock() -> SteppedClock:
    return SteppedClock()


@pytest.fixture
async def stepped(clock):
    """Tasks move only when the test steps `clock`: 10 s each."""
    async with Emulator(api_key=KEY, duration=10.0, clock=clock) as emu:
        yield emu


def client_for(emu: Emulator, key: str = KEY, **options) -> NovitaClient:
    options = {"poll": FAST_POLL, "retry": FAST_RETRY, "timeout": TIMEOUT, **options}
    return NovitaClient(key, base_url=emu.base_url, **options)


@pytest.fixture
async def client(emulator):
    async with client_for(emulator) as client:
        yield client


# -- success -------------------------------------------------------------------------------


async def test_txt2img_readings_rise_and_end_with_images_and_the_seed(emulator, client):
    emulator.duration = 1.0
    task_id = await client.txt2img(
        Txt2ImgRequest(prompt="a lighthouse", width=256, height=192, image_num=3, seed=77)
    )
    readings = [r async for r in client.wait(task_id, max_wait=10)]
    final = readings[-1]
    assert final.status is TaskStatus.SUCCEED and final.task_id == task_id
    running = [r.progress for r in readings if r.status is TaskStatus.PROCESSING]
    assert running and running == sorted(running) and all(0 <= p < 1 for p in running)
    assert all(r.eta is not None for r in readings)
    assert (final.seed, final.raw_seed) == (77, "77")
    assert [image.ttl for image in final.images] == [3600.0, 3600.0, None]  # 3600, "3600", "0"
    assert len(final.image_urls) == 3
    async with client.session.get(final.image_urls[0]) as response:
        data = await response.read()
    with Image.open(io.BytesIO(data)) as picture:
        assert (picture.format, picture.size) == ("PNG", (256, 192))
    assert emulator.stats.auth_schemes["bare"] == 0


async def test_the_payload_is_extra_and_request():
    payload = SMALL.to_payload()
    assert payload["extra"] == {"response_image_type": "png"}
    assert payload["request"]["guidance_scale"] == 7.0
    assert isinstance(payload["request"]["guidance_scale"], float)
    assert "clip_skip" not in payload["request"]
    assert {"image_base64", "strength"} <= set(
        Img2ImgRequest(prompt="x", image=b"png").to_payload()["request"]
    )


async def test_img2img(emulator, client):
    source = emulator_images.render("source", 1, 64, 64)
    task_id = await client.img2img(
        Img2ImgRequest(prompt="x", width=128, height=128, image=source, strength=0.4)
    )
    final = [r async for r in client.wait(task_id, max_wait=10)][-1]
    assert final.task_type == "IMG_TO_IMG" and len(final.images) == 1


async def test_bare_key_as_the_js_sdk_sends_it(emulator):
    async with client_for(emulator, bare_key=True) as client:
        await client.txt2img(SMALL)
    assert emulator.stats.auth_schemes == {"bare": 1}


async def test_numbers_sent_as_strings_are_read(stepped, clock):
    stepped.string_numbers = True
    async with client_for(stepped) as client:
        task_id = await client.txt2img(SMALL)
        clock.now += 6.0
        result = await client.task_result(task_id)
    assert (result.status, result.progress, result.eta) == (TaskStatus.PROCESSING, 0.5, 4.0)


def test_drifted_and_broken_fields_never_crash():
    result = TaskResult.parse(
        "t",
        {
            "task": {
                "status": "TASK_STATUS_SUCCEED",
                "progress_percent": "abc",
                "eta": "12.5",
                "reason": None,
            },
            "images": [
                {"image_url": "https://x/1.png", "image_url_ttl": "3600"},
                {"image_url": "https://x/2.png", "image_url_ttl": "0"},
                {"image_url": "https://x/3.png", "image_url_ttl": True},
                {"image_url": ""},
                {"image_url": 5},
                "not an object",
            ],
            "extra": {"seed": "392212448"},
        },
    )
    assert (result.progress, result.eta, result.reason) == (0.0, 12.5, "")
    assert [image.ttl for image in result.images] == [3600.0, None, None]
    assert result.seed == 392212448
    for seed in ("-1", "abc", -5, 2**32, 1.5, None, True, "1e3"):
        parsed = TaskResult.parse("t", {"task": {"status": "x"}, "extra": {"seed": seed}})
        assert parsed.seed is None, seed
    assert TaskResult.parse("t", {"task": {}, "extra": None, "images": None}).images == ()
    weird = TaskResult.parse("t", {"task": {"status": "TASK_STATUS_PAUSED", "eta": "NaN"}})
    assert (weird.status, weird.raw_status, weird.eta) == (
        TaskStatus.UNKNOWN,
        "TASK_STATUS_PAUSED",
        None,
    )
    assert not weird.status.is_final
    for broken in (None, [], {"task": "x"}, {"images": []}):
        with pytest.raises(MalformedResponse):
            TaskResult.parse("t", broken)


# -- local validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (Txt2ImgRequest(prompt=" "), "prompt"),
        (Txt2ImgRequest(prompt="x" * 1501), "prompt"),
        (Txt2ImgRequest(prompt="x", width=127), "width"),
        (Txt2ImgRequest(prompt="x", height=2049), "height"),
        (Txt2ImgRequest(prompt="x", image_num=9), "image_num"),
        (Txt2ImgRequest(prompt="x", steps=101), "steps"),
        (Txt2ImgRequest(prompt="x", seed=-2), "seed"),
        (Txt2ImgRequest(prompt="x", guidance_scale=0.9), "guidance_scale"),
        (Txt2ImgRequest(prompt="x", guidance_scale=float("nan")), "guidance_scale"),
        (Txt2ImgRequest(prompt="x", sampler_name="Nope"), "sampler_name"),
        (Txt2ImgRequest(prompt="x", clip_skip=0), "clip_skip"),
        (Txt2ImgRequest(prompt="x", response_image_type="gif"), "response_image_type"),
        (Img2ImgRequest(prompt="x"), "image"),
        (Img2ImgRequest(prompt="x", image=b"png", strength=1.1), "strength"),
    ],
)
async def test_invalid_requests_never_reach_the_api(emulator, client, request_, field):
    with pytest.raises(InvalidRequest) as caught:
        if isinstance(request_, Img2ImgRequest):
            await client.img2img(request_)
        else:
            await client.txt2img(request_)
    assert caught.value.field == field
    assert sum(emulator.stats.requests.values()) == 0


# -- refusals ------------------------------------------------------------------------------


async def test_a_wrong_key_is_an_authentication_error_without_the_key(emulator):
    async with client_for(emulator, key="sk-wrong-key-000") as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.txt2img(SMALL)
        assert "INVALID_API_KEY" in caught.value.message
        assert "sk-wrong-key-000" not in str(caught.value) and "sk-wrong" not in repr(client)
        with pytest.raises(AuthenticationError):
            await client.task_result("anything")
    assert emulator.stats.requests["txt2img"] == 1  # not retried


def test_an_empty_key_is_refused_up_front():
    with pytest.raises(AuthenticationError):
        NovitaClient("")


async def test_a_server_side_400_names_its_field(emulator, client):
    with pytest.raises(InvalidRequest) as caught:
        await client.txt2img(Txt2ImgRequest(prompt="x", model_name="unknown.safetensors"))
    assert caught.value.field == "model_name"
    assert "INVALID_REQUEST_BODY" in caught.value.message
    assert emulator.stats.requests["txt2img"] == 1


@pytest.mark.parametrize("status", [400, 403])
async def test_billing_is_decided_by_reason_not_status(emulator, client, status):
    emulator.balance = 0
    emulator.billing_status = status
    with pytest.raises(InsufficientCredit) as caught:
        await client.txt2img(SMALL)
    assert f"HTTP {status} BILLING_BALANCE_NOT_ENOUGH" in caught.value.message


async def test_unknown_task_is_task_not_found(client):
    with pytest.raises(TaskNotFound):
        await client.task_result("00000000-0000-0000-0000-000000000000")


async def test_rate_limited_submit_is_not_retried_then_succeeds_after_retry_after(stepped, clock):
    stepped.images_per_minute = 2
    async with client_for(stepped) as client:
        await client.txt2img(Txt2ImgRequest(prompt="x", image_num=2))
        clock.now += 15.0
        with pytest.raises(RateLimited) as caught:
            await client.txt2img(SMALL)
        assert caught.value.retry_after == 45.0
        assert stepped.stats.requests["txt2img"] == 2  # the 429 was not retried
        clock.now += caught.value.retry_after
        assert await client.txt2img(SMALL)
    assert stepped.stats.tasks_created == 2


async def test_rate_limited_without_retry_after(stepped):
    stepped.images_per_minute = 1
    stepped.send_retry_after = False
    async with client_for(stepped) as client:
        await client.txt2img(SMALL)
        with pytest.raises(RateLimited) as caught:
            await client.txt2img(SMALL)
    assert caught.value.retry_after is None


# -- uncertain submits are never repeated --------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault("txt2img", "http_status", status=500, after_accept=True),
        Fault("txt2img", "http_status", status=502),  # a proxy's 502: accepted or not?
        Fault("txt2img", "drop", after_accept=True),
        Fault("txt2img", "malformed", after_accept=True),
        Fault("txt2img", "delay", seconds=3.0, after_accept=True),  # past the 1 s timeout
    ],
    ids=lambda fault: f"{fault.kind}-{fault.status}-{fault.after_accept}",
)
async def test_uncertain_submits_are_never_retried(emulator, client, fault):
    emulator.faults.add(fault)
    with pytest.raises(SubmissionUncertain) as caught:
        await client.txt2img(SMALL)
    assert "not retrying" in caught.value.message
    assert emulator.stats.requests["txt2img"] == 1


async def test_a_200_that_cannot_be_read_is_uncertain(emulator, client):
    """The client cannot tell whether a task stands behind an unreadable 200: it may."""
    emulator.faults.add(Fault("txt2img", "malformed"))
    with pytest.raises(SubmissionUncertain):
        await client.txt2img(SMALL)
    assert emulator.stats.requests["txt2img"] == 1


async def test_never_connected_is_connection_failed_and_safe():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with NovitaClient(KEY, base_url=f"http://127.0.0.1:{port}", retry=FAST_RETRY) as c:
        with pytest.raises(ConnectionFailed):
            await c.txt2img(SMALL)


# -- polling -------------------------------------------------------------------------------


async def test_reads_are_retried_through_5xx(emulator, client):
    task_id = await client.txt2img(SMALL)
    emulator.faults.add(Fault("task-result", "http_status", status=503, times=2))
    assert (await client.task_result(task_id)).task_id == task_id
    assert emulator.stats.requests["task-result"] == 3


async def test_reads_give_up_after_the_retry_budget(emulator, client):
    task_id = await client.txt2img(SMALL)
    emulator.faults.add(Fault("task-result", "http_status", status=500, times=3))
    with pytest.raises(ServerError):
        await client.task_result(task_id)


async def test_wait_rides_out_faults_and_unknown_statuses(emulator, client):
    task_id = await client.txt2img(SMALL)
    emulator.faults.add(Fault("task-result", "unknown_status", times=2))
    emulator.faults.add(Fault("task-result", "http_status", status=500, times=4))
    emulator.faults.add(Fault("task-result", "http_status", status=429, times=1))
    emulator.faults.add(Fault("task-result", "drop", times=2))
    emulator.faults.add(Fault("task-result", "malformed", times=3))
    readings = [r async for r in client.wait(task_id, max_wait=20)]
    assert [r.status for r in readings[:2]] == [TaskStatus.UNKNOWN] * 2
    assert readings[-1].status is TaskStatus.SUCCEED
    assert sum(emulator.stats.faults_fired.values()) == 12


async def test_wait_gives_up_after_max_wait_without_claiming_the_server_did(stepped):
    async with client_for(stepped) as client:
        task_id = await client.txt2img(SMALL)
        with pytest.raises(TaskTimedOut) as caught:
            async for _ in client.wait(task_id, max_wait=0.3):
                pass
    assert caught.value.by_server is False


async def test_a_failed_task_raises_with_its_reason_cleaned(emulator, client):
    emulator.faults.script_next_task(NextTask("fail", f"bad input\x00 for {KEY}"))
    task_id = await client.txt2img(SMALL)
    with pytest.raises(TaskFailed) as caught:
        async for _ in client.wait(task_id, max_wait=10):
            pass
    assert caught.value.reason == "bad input  for [redacted]"
    assert KEY not in str(caught.value)


async def test_a_forgotten_task_ends_the_wait(emulator, client):
    task_id = await client.txt2img(SMALL)
    emulator.forget(task_id)
    with pytest.raises(TaskNotFound):
        async for _ in client.wait(task_id, max_wait=10):
            pass


def _reading(status: str, eta: float | None) -> TaskResult:
    return TaskResult.parse("t", {"task": {"status": status, "eta": eta}})


def test_poll_policy_follows_the_eta():
    policy = PollPolicy()
    assert policy.next_delay(_reading("TASK_STATUS_QUEUED", 6), 1.0) == 3.0
    assert policy.next_delay(_reading("TASK_STATUS_QUEUED", 0), 4.0) == 5.0  # capped
    assert policy.next_delay(_reading("TASK_STATUS_PROCESSING", 20), 1.0) == 4.0
    assert policy.next_delay(_reading("TASK_STATUS_PROCESSING", 1.5), 1.0) == 1.55
    assert policy.next_delay(_reading("TASK_STATUS_PROCESSING", None), 1.0) == 1.5
    assert policy.next_delay(_reading("TASK_STATUS_UNKNOWN", 3), 1.0) == 1.5
    assert policy.next_delay(_reading("TASK_STATUS_PROCESSING", 0.01), 1.0) == 0.25
