"""`NovitaBackend` against the real Novita v3 emulator: readings, results, every error."""

from __future__ import annotations

import io
import socket

import aiohttp
import pytest
from PIL import Image

from backends.novita import NovitaBackend
from jobs.backend import (
    BadOutput,
    CredentialsRefused,
    Generation,
    NotAccepted,
    OptionRefused,
    OutOfCredit,
    SubmitUncertain,
    TaskFailed,
    TaskLost,
    TaskState,
    TaskTimedOut,
    Unavailable,
)
from omni import rules
from omni.emulator_images import render
from omni.retry import RetryPolicy
from omni.v3 import PollPolicy
from omni.v3.emulator import Emulator, Fault, NextTask

KEY = "sk-novita-backend-test-7c6b5a"
FAST_POLL = PollPolicy(first_delay=0.03, min_interval=0.03, max_running_interval=0.1)
FAST_RETRY = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)
TIMEOUT = aiohttp.ClientTimeout(total=5)
REQUEST = Generation(prompt="a lighthouse at dusk", seed=1234, width=1216, height=832)


class ManualClock:
    """The emulator's clock, stepped by the test: no waiting on real time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def emulator():
    async with Emulator(api_key=KEY, duration=0.5) as emu:
        yield emu


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def stepped(clock):
    """Tasks (10 s each) and URL expiry (60 s) move only when the test steps `clock`."""
    async with Emulator(api_key=KEY, duration=10.0, image_ttl=60.0, clock=clock) as emu:
        yield emu


def backend_for(emu: Emulator, session: aiohttp.ClientSession, **options) -> NovitaBackend:
    options = {"timeout": TIMEOUT, "poll": FAST_POLL, "retry": FAST_RETRY, **options}
    return NovitaBackend(options.pop("key", KEY), base_url=emu.base_url, session=session, **options)


async def run(backend: NovitaBackend, request: Generation = REQUEST, max_wait: float = 10):
    handle = await backend.submit(request)
    readings = [r async for r in backend.follow(handle, max_wait=max_wait)]
    return handle, readings


def assert_pngs(images: tuple[bytes, ...], size: tuple[int, int]) -> None:
    for data in images:
        with Image.open(io.BytesIO(data)) as picture:
            assert (picture.format, picture.size) == ("PNG", size)


# -- success -------------------------------------------------------------------------------


async def test_readings_then_checked_images_and_the_one_seed(emulator, session):
    emulator.duration = 1.0
    backend = backend_for(emulator, session)
    handle, readings = await run(backend, Generation(prompt="x", seed=1234, images=2))
    assert readings[-1].state is TaskState.SUCCEEDED
    assert (readings[-1].progress, readings[-1].eta) == (1.0, 0.0)
    states = [r.state for r in readings[:-1]]
    assert set(states) <= {TaskState.QUEUED, TaskState.RUNNING} and TaskState.RUNNING in states
    running = [r.progress for r in readings if r.state is TaskState.RUNNING]
    assert running == sorted(running) and all(0 <= p < 1 for p in running)
    assert all(r.eta is not None and r.eta > 0 for r in readings[:-1])
    assert all(r.preview_url is None and r.preview_image is None for r in readings)

    output = await backend.result(handle, expected=2)
    assert len(output.images) == 2
    assert_pngs(output.images, (1024, 1024))
    # Novita reports one seed per task; no seed+i is invented for the second image.
    assert output.seeds == (1234,)
    assert output.info == {"task_type": "TXT_TO_IMG", "seed": 1234}
    assert (emulator.stats.tasks_created, emulator.stats.images_generated) == (1, 2)


async def test_result_caps_images_at_expected(emulator, session):
    backend = backend_for(emulator, session)
    handle, _ = await run(backend, Generation(prompt="x", images=3, width=832, height=1216))
    output = await backend.result(handle, expected=2)
    assert len(output.images) == 2
    assert_pngs(output.images, (832, 1216))


async def test_result_after_a_restart_polls_once_and_reads_the_seed(stepped, clock, session):
    handle = await backend_for(stepped, session).submit(REQUEST)
    clock.now += 10.0
    restarted = backend_for(stepped, session)
    output = await restarted.result(handle, expected=1)
    assert output.seeds == (1234,)
    assert_pngs(output.images, (1216, 832))
    assert stepped.stats.polls_by_task[handle] == 1


async def test_a_random_seed_is_reported_as_the_one_used(emulator, session):
    backend = backend_for(emulator, session)
    handle, _ = await run(backend, Generation(prompt="x"))
    (seed,) = (await backend.result(handle, expected=1)).seeds
    assert 0 <= seed < 2**32


async def test_img2img_from_init_image(emulator, session):
    backend = backend_for(emulator, session)
    source = render("source", 5, 128, 128)
    request = Generation(prompt="x", init_image=source, denoising_strength=0.35)
    handle, _ = await run(backend, request)
    output = await backend.result(handle, expected=1)
    assert_pngs(output.images, (1024, 1024))
    assert output.info["task_type"] == "IMG_TO_IMG"


async def test_numbers_as_strings_give_the_same_readings(stepped, clock, session):
    stepped.string_numbers = True
    backend = backend_for(stepped, session)
    handle = await backend.submit(REQUEST)
    clock.now += 6.0  # 4 s into 8 s of running
    readings = backend.follow(handle, max_wait=10)
    first = await anext(readings)
    assert (first.state, first.progress, first.eta) == (TaskState.RUNNING, 0.5, 4.0)
    await readings.aclose()


async def test_an_unknown_status_is_not_final_and_yields_nothing(emulator, session):
    backend = backend_for(emulator, session)
    handle = await backend.submit(REQUEST)
    emulator.faults.add(Fault("task-result", "unknown_status", times=3))
    readings = [r async for r in backend.follow(handle, max_wait=10)]
    assert readings[-1].state is TaskState.SUCCEEDED
    assert emulator.stats.faults_fired["task-result/unknown_status"] == 3
    assert len(readings) == emulator.stats.polls_by_task[handle] - 3  # none for UNKNOWN


def test_capabilities_capacity_and_repr(session):
    backend = NovitaBackend(KEY, session=session)
    caps = backend.capabilities
    assert caps.name == "novita"
    assert caps.samplers == rules.SDXL_SAMPLERS
    assert not {"DDIM", "PLMS", "UniPC"} & set(caps.samplers)
    assert caps.default_sampler in caps.samplers
    assert (caps.steps.low, caps.steps.high) == (1, 50)
    assert (caps.cfg_scale.low, caps.cfg_scale.high) == (1.0, 30.0)
    assert caps.sizes == rules.SDXL_SIZES and len(caps.sizes) == 9
    assert caps.max_images == 4
    assert (caps.upscale, caps.img2img, caps.subseed, caps.cancel) == (False, True, False, False)
    assert caps.costs_credit is True
    assert backend.capacity is None
    assert KEY not in repr(backend) and "api.novita.ai" in repr(backend)


async def test_timeout_may_be_given_in_seconds(emulator, session):
    backend = NovitaBackend(
        KEY, base_url=emulator.base_url, session=session, timeout=0.3, retry=FAST_RETRY
    )
    emulator.faults.add(Fault("txt2img", "delay", seconds=1.0))
    with pytest.raises(SubmitUncertain):
        await backend.submit(REQUEST)


# -- refusals before any request -----------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "option"),
    [
        ({"sampler": "DDIM"}, "sampler"),
        ({"steps": 51}, "steps"),
        ({"cfg_scale": 0.5}, "cfg_scale"),
        ({"width": 512, "height": 512}, "size"),
        ({"images": 5}, "images"),
        ({"images": 0}, "images"),
        ({"subseed": 5, "subseed_strength": 0.3}, "subseed_strength"),
        ({"prompt": "x" * 1501}, "prompt"),
        ({"seed": 2**32}, "seed"),
        ({"init_image": b"png", "denoising_strength": 1.5}, "denoising_strength"),
    ],
)
async def test_options_outside_the_capabilities_are_refused_by_name(
    emulator, session, change, option
):
    backend = backend_for(emulator, session)
    with pytest.raises(OptionRefused) as caught:
        await backend.submit(Generation(**{"prompt": "x", **change}))
    assert caught.value.option == option
    assert sum(emulator.stats.requests.values()) == 0


async def test_upscale_is_not_offered_and_cancel_is_quiet(emulator, session):
    backend = backend_for(emulator, session)
    with pytest.raises(OptionRefused) as caught:
        await backend.upscale(render("x", 1, 64, 64), 2.0)
    assert caught.value.option == "upscale"
    await backend.cancel("anything")
    assert sum(emulator.stats.requests.values()) == 0


def test_an_empty_key_is_refused_up_front(session):
    with pytest.raises(CredentialsRefused):
        NovitaBackend("", session=session)


# -- refusals from Novita ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "option"),
    [
        ("request.guidance_scale: must be in [1, 30]", "cfg_scale"),
        ("request.image_num: too many images", "images"),
        ("request.width: not supported for this model", "size"),
        ("request.height: not supported for this model", "size"),
        ("request.sampler_name: not supported", "sampler"),
        ("request.negative_prompt: too long", "negative_prompt"),
        ("request.steps: out of range", "steps"),
        ("request.model_name: not found", None),
        ("something is wrong", None),
    ],
)
async def test_a_400_names_the_bots_option(emulator, session, message, option):
    emulator.faults.add(
        Fault("txt2img", "refuse", status=400, reason="INVALID_REQUEST_BODY", message=message)
    )
    with pytest.raises(OptionRefused) as caught:
        await backend_for(emulator, session).submit(REQUEST)
    assert caught.value.option == option
    assert message in caught.value.message


async def test_an_unknown_model_is_refused_by_the_server(emulator, session):
    backend = backend_for(emulator, session, model_name="sd_xl_unknown.safetensors")
    with pytest.raises(OptionRefused) as caught:
        await backend.submit(REQUEST)
    assert caught.value.option is None and "model_name" in caught.value.message
    assert emulator.stats.tasks_created == 0


async def test_a_wrong_key_is_credentials_refused_and_never_echoed(emulator, session):
    wrong = "sk-wrong-key-111222333"
    with pytest.raises(CredentialsRefused) as caught:
        await backend_for(emulator, session, key=wrong).submit(REQUEST)
    assert wrong not in str(caught.value)


async def test_an_upstream_message_echoing_the_key_is_cleaned(emulator, session):
    emulator.faults.add(
        Fault("txt2img", "refuse", status=403, reason="INVALID_API_KEY", message=f"key {KEY}")
    )
    with pytest.raises(CredentialsRefused) as caught:
        await backend_for(emulator, session).submit(REQUEST)
    assert KEY not in caught.value.message and "[redacted]" in caught.value.message


@pytest.mark.parametrize("status", [400, 403])
async def test_out_of_balance_is_out_of_credit_whatever_the_status(emulator, session, status):
    emulator.balance = 0
    emulator.billing_status = status
    with pytest.raises(OutOfCredit):
        await backend_for(emulator, session).submit(REQUEST)


async def test_rate_limit_is_not_accepted_then_succeeds_after_retry_after(stepped, clock, session):
    stepped.images_per_minute = 4
    backend = backend_for(stepped, session)
    await backend.submit(Generation(prompt="x", images=4))
    clock.now += 12.0
    with pytest.raises(NotAccepted) as caught:
        await backend.submit(REQUEST)
    assert caught.value.retry_after == 48.0
    assert stepped.stats.tasks_created == 1  # nothing created, nothing billed
    clock.now += caught.value.retry_after
    assert await backend.submit(REQUEST)
    assert stepped.stats.tasks_created == 2


async def test_rate_limit_without_retry_after_waits_for_a_minutes_share(stepped, session):
    stepped.images_per_minute = 1
    stepped.send_retry_after = False
    backend = backend_for(stepped, session)
    await backend.submit(Generation(prompt="x"))
    with pytest.raises(NotAccepted) as caught:
        await backend.submit(Generation(prompt="x", images=2))
    assert caught.value.retry_after == 6.0  # 60 s / 20 images a minute, for 2 images


async def test_never_connected_is_not_accepted(session):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = NovitaBackend(
        KEY, base_url=f"http://127.0.0.1:{port}", session=session, retry=FAST_RETRY
    )
    with pytest.raises(NotAccepted):
        await backend.submit(REQUEST)


@pytest.mark.parametrize(
    "fault",
    [
        Fault("txt2img", "http_status", status=500, after_accept=True),
        Fault("txt2img", "drop", after_accept=True),
        Fault("img2img", "malformed", after_accept=True),
    ],
    ids=lambda fault: f"{fault.endpoint}-{fault.kind}",
)
async def test_a_reply_lost_after_accepting_is_submit_uncertain(emulator, session, fault):
    emulator.faults.add(fault)
    request = REQUEST
    if fault.endpoint == "img2img":
        request = Generation(prompt="x", init_image=render("x", 1, 64, 64))
    with pytest.raises(SubmitUncertain):
        await backend_for(emulator, session).submit(request)
    assert emulator.stats.tasks_created == 1
    assert emulator.stats.requests[fault.endpoint] == 1  # never submitted twice


# -- endings while following ---------------------------------------------------------------


async def test_a_failed_task_reason_is_cleaned_of_the_key(emulator, session):
    emulator.faults.script_next_task(NextTask("fail", f"worker\x07 crashed, key={KEY}"))
    with pytest.raises(TaskFailed) as caught:
        await run(backend_for(emulator, session))
    assert KEY not in caught.value.reason and KEY not in caught.value.message
    assert "worker" in caught.value.reason and "\x07" not in caught.value.reason


async def test_transient_faults_while_following_are_ridden_out(emulator, session):
    backend = backend_for(emulator, session)
    handle = await backend.submit(REQUEST)
    emulator.faults.add(Fault("task-result", "http_status", status=502, times=3))
    emulator.faults.add(Fault("task-result", "drop", times=2))
    emulator.faults.add(Fault("task-result", "refuse", status=429, reason="RATE_LIMIT_EXCEEDED"))
    readings = [r async for r in backend.follow(handle, max_wait=10)]
    assert readings[-1].state is TaskState.SUCCEEDED
    assert len((await backend.result(handle, expected=1)).images) == 1


async def test_our_wait_running_out_is_not_the_servers_timeout(stepped, session):
    backend = backend_for(stepped, session)
    handle = await backend.submit(REQUEST)  # the stepped clock never moves: never final
    with pytest.raises(TaskTimedOut) as caught:
        async for _ in backend.follow(handle, max_wait=0.3):
            pass
    assert caught.value.by_server is False


async def test_a_forgotten_task_is_lost_and_spent(emulator, session):
    backend = backend_for(emulator, session)
    handle = await backend.submit(REQUEST)
    emulator.forget(handle)
    with pytest.raises(TaskLost) as caught:
        async for _ in backend.follow(handle, max_wait=10):
            pass
    assert caught.value.spent is True
    with pytest.raises(TaskLost):
        await backend_for(emulator, session).result(handle, expected=1)


async def test_a_key_revoked_while_following(emulator, session):
    backend = backend_for(emulator, session)
    handle = await backend.submit(REQUEST)
    emulator.api_key = "sk-rotated-key-444555"
    with pytest.raises(CredentialsRefused):
        async for _ in backend.follow(handle, max_wait=10):
            pass


async def test_an_expired_result_url_is_bad_output(stepped, clock, session):
    backend = backend_for(stepped, session)
    handle = await backend.submit(REQUEST)
    clock.now += 10.0
    assert [r.state async for r in backend.follow(handle, max_wait=10)] == [TaskState.SUCCEEDED]
    clock.now = stepped.task_expiry_time(handle)
    with pytest.raises(BadOutput):
        await backend.result(handle, expected=1)


async def test_result_of_a_task_still_running_or_failed(stepped, clock, session):
    backend = backend_for(stepped, session)
    running = await backend.submit(REQUEST)
    with pytest.raises(Unavailable):
        await backend.result(running, expected=1)
    stepped.faults.script_next_task(NextTask("fail", "out of memory"))
    failed = await backend.submit(REQUEST)
    clock.now += 10.0
    with pytest.raises(TaskFailed) as failure:
        await backend.result(failed, expected=1)
    assert failure.value.reason == "out of memory"
