"""The Omniinfer client against the local emulator: every success and error path."""

from __future__ import annotations

import io

import aiohttp
import pytest
from PIL import Image

from omni import (
    AuthenticationError,
    ConnectionFailed,
    DownloadFailed,
    InsufficientCredit,
    InvalidRequest,
    MalformedResponse,
    OmniClient,
    PollPolicy,
    RequestTimedOut,
    RetryPolicy,
    ServerError,
    SubmissionUncertain,
    TaskFailed,
    TaskNotFound,
    TaskStatus,
    TaskTimedOut,
    Txt2ImgRequest,
    UnknownAPIError,
    UpscaleRequest,
)
from omni.emulator import Emulator

KEY = "test-key"
FAST_POLL = PollPolicy(first_delay=0.05, min_interval=0.05)
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)


@pytest.fixture
async def emulator():
    emu = Emulator(api_key=KEY, duration=0.3)
    await emu.start("127.0.0.1", 0)
    yield emu
    await emu.stop()


@pytest.fixture
async def client(emulator):
    async with OmniClient(
        KEY,
        base_url=emulator.base_url,
        poll=FAST_POLL,
        retry=FAST_RETRY,
        timeout=aiohttp.ClientTimeout(total=1.0),
    ) as client:
        yield client


async def control(emulator: Emulator, path: str, payload: dict | None = None) -> dict:
    """Script the emulator through its control routes, as a test in another process would."""
    async with aiohttp.ClientSession() as session:
        if payload is None:
            async with session.get(f"{emulator.base_url}/_emulator/{path}") as response:
                return await response.json()
        async with session.post(f"{emulator.base_url}/_emulator/{path}", json=payload) as r:
            assert r.status == 200, await r.text()
            return await r.json()


async def fault(emulator: Emulator, endpoint: str, kind: str, **options) -> None:
    await control(emulator, "faults", {"endpoint": endpoint, "kind": kind, **options})


async def tasks_created(emulator: Emulator) -> int:
    return (await control(emulator, "stats"))["tasks_created"]


REQUEST = Txt2ImgRequest(prompt="a lighthouse at dusk", seed=1234, batch_size=2)


async def test_generates_real_pngs_of_the_requested_size_with_the_real_seed(client):
    submission = await client.txt2img(REQUEST)
    updates = [p async for p in client.wait(submission.task_id)]
    final = updates[-1]
    assert final.status is TaskStatus.SUCCEEDED
    assert final.info is not None and final.info.seed == 1234
    assert final.info.all_seeds == (1234, 1235)
    images = await client.download(final.images)
    assert len(images) == 2
    for data in images:
        with Image.open(io.BytesIO(data)) as image:
            assert (image.format, image.size) == ("PNG", (1024, 1024))


async def test_random_seed_reports_the_seed_actually_used(client):
    submission = await client.txt2img(Txt2ImgRequest(prompt="x"))
    final = await client.wait_until_done(submission.task_id)
    assert final.info is not None and 0 <= final.info.seed < 2**32


async def test_progress_rises_as_a_float_while_running(emulator, client):
    emulator.duration = 1.0
    submission = await client.txt2img(Txt2ImgRequest(prompt="x"))
    seen = [p async for p in client.wait(submission.task_id)]
    fractions = [p.progress for p in seen if p.status is TaskStatus.RUNNING]
    assert fractions and all(0 < f < 1 for f in fractions)
    assert fractions == sorted(fractions)


async def test_invalid_requests_are_refused_before_any_http_call(emulator, client):
    for bad, field in [
        (Txt2ImgRequest(prompt=""), "prompt"),
        (Txt2ImgRequest(prompt="x", steps=51), "steps"),
        (Txt2ImgRequest(prompt="x", cfg_scale=0.5), "cfg_scale"),
        (Txt2ImgRequest(prompt="x", seed=2**32), "seed"),
        (Txt2ImgRequest(prompt="x", sampler_name="DDIM"), "sampler_name"),
        (Txt2ImgRequest(prompt="x", width=512, height=512), "size"),
        (Txt2ImgRequest(prompt="x", batch_size=9), "batch_size"),
        (Txt2ImgRequest(prompt="x" * 1501), "prompt"),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            await client.txt2img(bad)
        assert caught.value.field == field
        assert field in str(caught.value)
    assert (await control(emulator, "stats"))["requests"].get("txt2img", 0) == 0


async def test_a_wrong_key_is_an_authentication_error(emulator):
    async with OmniClient("wrong", base_url=emulator.base_url) as client:
        with pytest.raises(AuthenticationError):
            await client.txt2img(REQUEST)


async def test_an_unknown_model_is_invalid_and_names_the_field(client):
    with pytest.raises(InvalidRequest) as caught:
        await client.txt2img(Txt2ImgRequest(prompt="x", model_name="nope.safetensors"))
    assert caught.value.code == 2
    assert caught.value.field == "model_name"


async def test_out_of_credit_is_its_own_error_and_spends_nothing(emulator, client):
    await control(emulator, "credit", {"images": 1})
    with pytest.raises(InsufficientCredit):
        await client.txt2img(REQUEST)  # two images, one left
    await client.txt2img(Txt2ImgRequest(prompt="x"))  # the one left is still there
    with pytest.raises(InsufficientCredit):
        await client.txt2img(Txt2ImgRequest(prompt="x"))


async def test_an_unknown_task_is_task_not_found(client):
    with pytest.raises(TaskNotFound):
        await client.progress("no-such-task")


async def test_a_failed_task_carries_its_reason(emulator, client):
    await control(emulator, "tasks/next", {"outcome": "fail", "reason": "NSFW content"})
    submission = await client.txt2img(REQUEST)
    with pytest.raises(TaskFailed) as caught:
        await client.wait_until_done(submission.task_id)
    assert caught.value.reason == "NSFW content"


async def test_a_task_the_server_times_out(emulator, client):
    await control(emulator, "tasks/next", {"outcome": "timeout"})
    submission = await client.txt2img(REQUEST)
    with pytest.raises(TaskTimedOut) as caught:
        await client.wait_until_done(submission.task_id)
    assert caught.value.by_server


async def test_the_wait_is_bounded(emulator, client):
    emulator.duration = 30
    submission = await client.txt2img(REQUEST)
    with pytest.raises(TaskTimedOut) as caught:
        await client.wait_until_done(submission.task_id, max_wait=0.3)
    assert not caught.value.by_server


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (-1, ServerError),
        (1, InvalidRequest),
        (5, ServerError),
        (6, InvalidRequest),
        (8, InvalidRequest),
        (9, RequestTimedOut),
        (10, InvalidRequest),
        (11, InvalidRequest),
        (42, UnknownAPIError),
    ],
)
async def test_every_envelope_code_maps_to_an_actionable_error(emulator, client, code, error):
    await fault(emulator, "models", "code", code=code, times=10)
    with pytest.raises(error) as caught:
        await client.models()
    assert caught.value.code == code


async def test_a_5xx_then_success_is_retried_transparently(emulator, client):
    await fault(emulator, "progress", "http_status", status=503, times=1)
    submission = await client.txt2img(REQUEST)
    progress = await client.progress(submission.task_id)
    assert progress.task_id == submission.task_id
    assert (await control(emulator, "stats"))["requests"]["progress"] == 2


async def test_a_burst_of_5xx_longer_than_the_retries_surfaces_as_server_error(emulator, client):
    await fault(emulator, "models", "http_status", status=500, times=5)
    with pytest.raises(ServerError) as caught:
        await client.models()
    assert caught.value.status == 500


async def test_malformed_json_is_retried_then_reported(emulator, client):
    await fault(emulator, "models", "malformed", times=1)
    assert await client.models()
    await fault(emulator, "models", "malformed", times=5)
    with pytest.raises(MalformedResponse):
        await client.models()


async def test_a_dropped_connection_is_retried_for_reads(emulator, client):
    await fault(emulator, "models", "drop", times=1)
    assert await client.models()
    await fault(emulator, "models", "drop", times=20)
    with pytest.raises(ConnectionFailed):
        await client.models()


async def test_a_slow_reply_times_out(emulator, client):
    await fault(emulator, "models", "delay", seconds=3, times=5)
    with pytest.raises(RequestTimedOut):
        await client.models()


@pytest.mark.parametrize("kind", ["drop", "http_status", "malformed", "delay"])
async def test_a_submit_that_may_have_been_accepted_is_never_sent_twice(emulator, client, kind):
    await fault(emulator, "txt2img", kind, status=500, seconds=3, after_accept=True)
    with pytest.raises(SubmissionUncertain):
        await client.txt2img(REQUEST)
    assert await tasks_created(emulator) == 1
    assert (await control(emulator, "stats"))["requests"]["txt2img"] == 1


async def test_a_submit_refused_with_a_transient_code_is_retried(emulator, client):
    await fault(emulator, "txt2img", "code", code=5, times=1)
    submission = await client.txt2img(REQUEST)
    assert submission.task_id
    assert await tasks_created(emulator) == 1


async def test_a_submit_to_a_server_that_is_down_fails_cleanly():
    async with OmniClient(KEY, base_url="http://127.0.0.1:9", retry=FAST_RETRY) as client:
        with pytest.raises(ConnectionFailed):
            await client.txt2img(REQUEST)


async def test_polling_rides_out_transient_faults(emulator, client):
    submission = await client.txt2img(REQUEST)
    await fault(emulator, "progress", "http_status", status=502, times=4)
    final = await client.wait_until_done(submission.task_id)
    assert final.status is TaskStatus.SUCCEEDED


async def test_models_are_listed_with_sdxl_among_them(client):
    names = [m.name for m in await client.models()]
    assert "sd_xl_base_1.0.safetensors" in names


async def test_downloads_are_retried_then_fail_clearly(emulator, client):
    final = await client.wait_until_done((await client.txt2img(REQUEST)).task_id)
    await fault(emulator, "image", "http_status", status=500, times=1)
    assert len(await client.download(final.images)) == 2
    await fault(emulator, "image", "http_status", status=500, times=20)
    with pytest.raises(DownloadFailed):
        await client.download(final.images)


async def test_downloads_refuse_non_http_urls_and_oversized_images(emulator, client):
    with pytest.raises(DownloadFailed):
        await client.download(["file:///etc/passwd"])
    final = await client.wait_until_done((await client.txt2img(REQUEST)).task_id)
    async with OmniClient(KEY, base_url=emulator.base_url, max_image_bytes=1000) as small:
        with pytest.raises(DownloadFailed, match="over 1000 bytes"):
            await small.download(final.images)


async def test_upscale_returns_a_bigger_image(client):
    final = await client.wait_until_done((await client.txt2img(REQUEST)).task_id)
    [source, _] = await client.download(final.images)
    submission = await client.upscale(UpscaleRequest(image=source, factor=2.0))
    upscaled = await client.wait_until_done(submission.task_id)
    [data] = await client.download(upscaled.images)
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (2048, 2048)


async def test_the_key_never_appears_in_errors_or_repr(emulator):
    secret = "sk-very-secret-key-123"
    async with OmniClient(secret, base_url=emulator.base_url) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.models()
        assert secret not in str(caught.value)
        assert secret not in repr(client)
