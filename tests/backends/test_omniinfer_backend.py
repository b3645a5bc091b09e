"""`OmniinferBackend` against the real Omniinfer emulator: readings, results, every error."""

from __future__ import annotations

import io

import aiohttp
import pytest
from PIL import Image

from backends.omniinfer import OmniinferBackend
from jobs.backend import (
    BackendError,
    BadOutput,
    CredentialsRefused,
    Generation,
    NotAccepted,
    OptionRefused,
    OutOfCredit,
    Reading,
    SubmitUncertain,
    TaskFailed,
    TaskLost,
    TaskState,
    TaskTimedOut,
    Unavailable,
)
from omni import PollPolicy, RetryPolicy, rules
from omni.emulator import Emulator, Fault
from omni.emulator_images import render

KEY = "sk-backend-test-9f8e7d"
FAST_POLL = PollPolicy(first_delay=0.03, min_interval=0.03, max_running_interval=0.1)
FAST_RETRY = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)
TIMEOUT = aiohttp.ClientTimeout(total=5)


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
    async with Emulator(api_key=KEY, duration=0.6) as emu:
        yield emu


@pytest.fixture
async def clock():
    return ManualClock()


@pytest.fixture
async def stepped(clock):
    """An emulator whose tasks move only when the test steps `clock`."""
    async with Emulator(api_key=KEY, duration=3.0, image_ttl=60.0, clock=clock) as emu:
        yield emu


def backend_for(emu: Emulator, session: aiohttp.ClientSession, key: str = KEY) -> OmniinferBackend:
    return OmniinferBackend(
        key,
        base_url=emu.base_url,
        session=session,
        timeout=TIMEOUT,
        max_wait_poll=FAST_POLL,
        retry=FAST_RETRY,
    )


async def follow_all(backend: OmniinferBackend, handle: str, max_wait: float = 10) -> list[Reading]:
    return [reading async for reading in backend.follow(handle, max_wait=max_wait)]


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


def assert_clean(error: BackendError) -> None:
    for text in (str(error), error.message, repr(error), getattr(error, "reason", "")):
        assert KEY not in text


# -- the happy path ------------------------------------------------------------------------


async def test_txt2img_readings_preview_result_and_seeds(emulator, session):
    backend = backend_for(emulator, session)
    handle = await backend.submit(
        Generation(prompt="a lighthouse at dusk", seed=1234, images=2, width=1216, height=832)
    )
    readings = await follow_all(backend, handle)

    assert readings[-1] == Reading(TaskState.SUCCEEDED, progress=1.0, eta=0.0)
    assert all(r.state is not TaskState.SUCCEEDED for r in readings[:-1])
    running = [r for r in readings if r.state is TaskState.RUNNING]
    assert running, readings
    assert all(0 <= r.progress < 1 for r in running)
    assert all(r.eta is None or r.eta > 0 for r in readings[:-1])
    previews = [r.preview_url for r in running if r.preview_url]
    assert previews and all(url.startswith(emulator.base_url) for url in previews)

    polls = sum(emulator.stats.polls_by_task.values())
    output = await backend.result(handle, expected=2)
    assert sum(emulator.stats.polls_by_task.values()) == polls  # no second look needed
    assert [png_size(image) for image in output.images] == [(1216, 832), (1216, 832)]
    assert output.seeds == (1234, 1235)
    assert output.info["prompt"] == "a lighthouse at dusk"
    assert output.images[0] == render("a lighthouse at dusk", 1234, 1216, 832)


async def test_result_caps_images_at_expected(emulator, session):
    backend = backend_for(emulator, session)
    handle = await backend.submit(Generation(prompt="three cats", seed=7, images=3))
    await follow_all(backend, handle)
    output = await backend.result(handle, expected=1)
    assert len(output.images) == 1
    assert output.seeds == (7,)


async def test_result_after_a_restart_polls_once_and_reads_seeds_from_info(stepped, clock, session):
    handle = await backend_for(stepped, session).submit(Generation(prompt="a fox", seed=99))
    clock.now += 10  # the task finished while "the bot" was down
    restarted = backend_for(stepped, session)
    output = await restarted.result(handle, expected=1)
    assert stepped.stats.polls_by_task[handle] == 1
    assert output.seeds == (99,)
    assert png_size(output.images[0]) == (1024, 1024)


async def test_random_seed_is_reported_as_the_one_used(emulator, session):
    backend = backend_for(emulator, session)
    handle = await backend.submit(Generation(prompt="a random thing", images=2))
    await follow_all(backend, handle)
    output = await backend.result(handle, expected=2)
    assert len(output.seeds) == 2 and output.seeds[1] == (output.seeds[0] + 1) % 2**32
    assert all(0 <= seed < 2**32 for seed in output.seeds)


async def test_upscale(emulator, session):
    backend = backend_for(emulator, session)
    source = render("small", 1, 640, 1536)
    handle = await backend.upscale(source, 2.0)
    readings = await follow_all(backend, handle)
    assert readings[-1].state is TaskState.SUCCEEDED
    output = await backend.result(handle, expected=1)
    assert [png_size(image) for image in output.images] == [(1280, 3072)]
    assert output.seeds == ()


def test_capabilities_and_repr(session):
    backend = OmniinferBackend(KEY, base_url="http://127.0.0.1:9", session=session, timeout=TIMEOUT)
    caps = backend.capabilities
    assert caps.name == "omniinfer" and caps.max_images == 4
    assert caps.default_sampler in caps.samplers and "DDIM" not in caps.samplers
    assert 20 in caps.steps and 51 not in caps.steps and 7.5 in caps.cfg_scale
    assert (1024, 1024) in caps.sizes and (512, 512) not in caps.sizes
    assert caps.upscale and caps.img2img and caps.costs_credit
    assert not caps.subseed and not caps.cancel
    assert backend.capacity is None
    assert KEY not in repr(backend)


# -- refusals before and at submit ---------------------------------------------------------


@pytest.mark.parametrize(
    ("generation", "option"),
    [
        (Generation(prompt="x", sampler="DDIM"), "sampler"),
        (Generation(prompt="x", images=9), "images"),
        (Generation(prompt="x", width=512, height=512), "size"),
        (Generation(prompt="x", steps=80), "steps"),
        (Generation(prompt="x", cfg_scale=0.5), "cfg_scale"),
        (Generation(prompt="x", seed=2**33), "seed"),
        (Generation(prompt="   "), "prompt"),
        (Generation(prompt="x", negative_prompt="n" * 5000), "negative_prompt"),
    ],
)
async def test_invalid_options_are_refused_by_name_without_a_request(
    emulator, session, generation, option
):
    with pytest.raises(OptionRefused) as caught:
        await backend_for(emulator, session).submit(generation)
    assert caught.value.option == option
    assert emulator.stats.requests["txt2img"] == 0


async def test_server_refusal_naming_a_field_points_at_the_option(emulator, session):
    emulator.faults.add(Fault("txt2img", "code", code=6))
    with pytest.raises(OptionRefused) as caught:
        await backend_for(emulator, session).submit(Generation(prompt="x"))
    assert caught.value.option is None  # the emulated message names no field
    assert "parameter out of range" in caught.value.message


async def test_server_refusing_the_sampler_points_at_the_sampler_option(emulator, session):
    emulator.faults.add(Fault("txt2img", "code", code=8))
    with pytest.raises(OptionRefused) as caught:
        await backend_for(emulator, session).submit(Generation(prompt="x"))
    assert caught.value.option == "sampler"


async def test_an_unknown_model_is_refused_by_the_api_with_no_member_option(emulator, session):
    backend = OmniinferBackend(
        KEY,
        base_url=emulator.base_url,
        session=session,
        timeout=TIMEOUT,
        model_name="sd_xl_base_1.0",  # names match exactly: no extension, no match
    )
    with pytest.raises(OptionRefused) as caught:
        await backend.submit(Generation(prompt="x"))
    assert caught.value.option is None and "model does not exist" in caught.value.message
    assert emulator.stats.requests["txt2img"] == 1 and emulator.stats.tasks_created == 0


async def test_bad_key_is_credentials_refused_and_never_echoed(emulator, session):
    with pytest.raises(CredentialsRefused) as caught:
        await backend_for(emulator, session, key="sk-wrong-key-123").submit(Generation("x"))
    assert "sk-wrong-key-123" not in str(caught.value)


async def test_out_of_credit(emulator, session):
    emulator.credit = 1
    with pytest.raises(OutOfCredit):
        await backend_for(emulator, session).submit(Generation(prompt="x", images=2))
    assert emulator.stats.tasks_created == 0


async def test_never_connected_is_unavailable(session):
    async with Emulator(api_key=KEY) as emu:
        base_url = emu.base_url
    backend = OmniinferBackend(
        KEY, base_url=base_url, session=session, timeout=TIMEOUT, retry=FAST_RETRY
    )
    with pytest.raises(Unavailable) as caught:
        await backend.submit(Generation(prompt="x"))
    assert not isinstance(caught.value, SubmitUncertain)


async def test_a_rate_limited_submit_is_not_accepted_and_waits(emulator, session):
    emulator.faults.add(Fault("txt2img", "http_status", status=429, times=2))
    with pytest.raises(NotAccepted) as caught:
        await backend_for(emulator, session).submit(Generation(prompt="x"))
    assert caught.value.retry_after and caught.value.retry_after > 0
    assert emulator.stats.tasks_created == 0


async def test_reply_lost_after_accepting_is_submit_uncertain(emulator, session):
    emulator.faults.add(Fault("txt2img", "drop", after_accept=True))
    with pytest.raises(SubmitUncertain):
        await backend_for(emulator, session).submit(Generation(prompt="x"))
    assert emulator.stats.tasks_created == 1  # billed, and not submitted twice


async def test_api_internal_error_on_submit_is_unavailable(emulator, session):
    emulator.faults.add(Fault("txt2img", "code", code=-1, times=2))
    with pytest.raises(Unavailable):
        await backend_for(emulator, session).submit(Generation(prompt="x"))
    assert emulator.stats.tasks_created == 0


async def test_variation_seeds_are_refused(emulator, session):
    with pytest.raises(OptionRefused) as caught:
        await backend_for(emulator, session).submit(
            Generation(prompt="x", subseed=5, subseed_strength=0.3)
        )
    assert caught.value.option == "subseed_strength"


# -- endings while following ---------------------------------------------------------------


async def test_failed_task_reason_is_cleaned_of_the_key(emulator, session):
    emulator.faults.fail_next_task(f"worker crashed\x00 using key {KEY}")
    backend = backend_for(emulator, session)
    handle = await backend.submit(Generation(prompt="x"))
    with pytest.raises(TaskFailed) as caught:
        await follow_all(backend, handle)
    assert "worker crashed" in caught.value.reason
    assert "\x00" not in caught.value.reason
    assert_clean(caught.value)


async def test_timed_out_by_the_server(emulator, session):
    emulator.faults.timeout_next_task()
    backend = backend_for(emulator, session)
    handle = await backend.submit(Generation(prompt="x"))
    with pytest.raises(TaskTimedOut) as caught:
        await follow_all(backend, handle)
    assert caught.value.by_server is True


async def test_our_wait_running_out_is_not_the_servers_timeout(stepped, clock, session):
    backend = backend_for(stepped, session)
    handle = await backend.submit(Generation(prompt="x", seed=5))
    with pytest.raises(TaskTimedOut) as caught:
        await follow_all(backend, handle, max_wait=0.2)  # the stepped task never moves
    assert caught.value.by_server is False
    clock.now += 10  # it may still finish, and its seed is still known
    readings = await follow_all(backend, handle)
    assert readings[-1].state is TaskState.SUCCEEDED
    assert (await backend.result(handle, expected=1)).seeds == (5,)


async def test_unknown_task_is_lost_and_not_spent(emulator, session):
    with pytest.raises(TaskLost) as caught:
        await follow_all(backend_for(emulator, session), "0" * 8 + "-0000-0000-0000-" + "0" * 12)
    assert caught.value.spent is False


async def test_key_revoked_while_following(emulator, session):
    backend = backend_for(emulator, session)
    handle = await backend.submit(Generation(prompt="x"))
    emulator.faults.add(Fault("progress", "code", code=4))
    with pytest.raises(CredentialsRefused):
        await follow_all(backend, handle)


async def test_expired_result_is_bad_output(stepped, clock, session):
    backend = backend_for(stepped, session)
    handle = await backend.submit(Generation(prompt="x"))
    clock.now += 5
    assert (await follow_all(backend, handle))[-1].state is TaskState.SUCCEEDED
    clock.now += 120  # past the images' 60 s lifetime
    with pytest.raises(BadOutput):
        await backend.result(handle, expected=1)


def test_empty_key_is_refused_up_front(session):
    with pytest.raises(CredentialsRefused):
        OmniinferBackend("", base_url="http://127.0.0.1:9", session=session, timeout=TIMEOUT)


def test_sdxl_bounds_match_omni_rules(session):
    caps = OmniinferBackend(
        KEY, base_url="http://127.0.0.1:9", session=session, timeout=TIMEOUT
    ).capabilities
    assert (caps.steps.low, caps.steps.high) == (rules.STEPS.low, rules.STEPS.high)
    assert caps.samplers == rules.SDXL_SAMPLERS
