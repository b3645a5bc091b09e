"""Image-to-image (`/v2/img2img`): the emulator's endpoint, the client's request and the
bot's adapter, against the real emulator."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image

from backends.omniinfer import OmniinferBackend
from jobs.backend import Generation, OptionRefused, TaskState
from omni import Img2ImgRequest, InvalidRequest, OmniClient, PollPolicy, RetryPolicy, rules
from omni.emulator import Emulator
from omni.emulator_images import render

KEY = "img2img-key"
HEADERS = {"X-Omni-Key": KEY}
FAST_POLL = PollPolicy(first_delay=0.02, min_interval=0.02, max_running_interval=0.05)
FAST_RETRY = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)


def solid_png(colour: tuple[int, int, int], size: tuple[int, int] = (300, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


RED, BLUE = solid_png((230, 20, 20)), solid_png((20, 20, 230))
BODY: dict[str, Any] = {
    "prompt": "a red barn",
    "model_name": rules.SDXL_MODEL,
    "sampler_name": "Euler a",
    "seed": 31,
    "width": 128,
    "height": 96,
    "init_images": [base64.b64encode(RED).decode()],
    "denoising_strength": 0.5,
}


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
    async with Emulator(api_key=KEY, duration=4, credit=100, clock=clock) as emulator:
        yield emulator


async def post(session: aiohttp.ClientSession, emu: Emulator, body: dict[str, Any]) -> Any:
    async with session.post(f"{emu.base_url}/v2/img2img", json=body, headers=HEADERS) as r:
        assert r.status == 200
        return await r.json()


async def finished(
    session: aiohttp.ClientSession, emu: Emulator, clock: SteppedClock, body: dict[str, Any]
) -> tuple[dict[str, Any], list[bytes]]:
    """Submit, let the task finish, and fetch its images: (progress data, PNGs)."""
    reply = await post(session, emu, body)
    assert reply["code"] == 0, reply
    clock.now += 10
    url = f"{emu.base_url}/v2/progress?task_id={reply['data']['task_id']}"
    async with session.get(url, headers=HEADERS) as response:
        data = (await response.json())["data"]
    pictures = []
    for image_url in data["imgs"]:
        async with session.get(image_url) as response:
            assert response.status == 200
            pictures.append(await response.read())
    return data, pictures


def pixel(data: bytes, xy: tuple[int, int]) -> tuple[int, int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB").getpixel(xy)


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


# -- the emulator ---------------------------------------------------------------------------


async def test_results_are_pngs_of_the_requested_size_made_from_the_init_image(emu, clock, session):
    data, (from_red,) = await finished(session, emu, clock, BODY)
    assert size_of(from_red) == (128, 96)  # not the init image's 300x200
    blue_body = {**BODY, "init_images": [base64.b64encode(BLUE).decode()]}
    _, (from_blue,) = await finished(session, emu, clock, blue_body)
    corner = (120, 90)  # away from the caption
    red_pixel, blue_pixel = pixel(from_red, corner), pixel(from_blue, corner)
    assert red_pixel[0] - blue_pixel[0] > 80 and blue_pixel[2] - red_pixel[2] > 80
    info = json.loads(data["info"])
    assert info["denoising_strength"] == 0.5 and info["seed"] == 31


async def test_strength_zero_keeps_the_picture_and_one_ignores_it(emu, clock, session):
    _, (kept,) = await finished(session, emu, clock, {**BODY, "denoising_strength": 0})
    assert pixel(kept, (120, 90)) == (230, 20, 20)
    _, (ignored,) = await finished(session, emu, clock, {**BODY, "denoising_strength": 1})
    assert ignored == render("a red barn", 31, 128, 96)


async def test_batches_bill_each_image_and_count_seeds_up(emu, clock, session):
    data, pictures = await finished(session, emu, clock, {**BODY, "batch_size": 3})
    assert len(pictures) == 3 and emu.credit == 97
    assert json.loads(data["info"])["all_seeds"] == [31, 32, 33]


async def test_the_sdk_body_with_nulls_is_accepted(emu, clock, session):
    sdk = {
        **BODY,
        "mask": None,
        "resize_mode": 0,
        "cfg_scale": None,
        "negative_prompt": None,
        "sd_vae": None,
        "sd_refiner": None,
        "controlnet_units": None,
        "denoising_strength": None,  # the SDK's default is 0.75; null means the default
    }
    data, _ = await finished(session, emu, clock, sdk)
    assert json.loads(data["info"])["denoising_strength"] == 0.75


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"init_images": None}, 6),
        ({"init_images": []}, 6),
        ({"init_images": "abc"}, 1),
        ({"init_images": ["!!not base64"]}, 6),
        ({"init_images": [base64.b64encode(b"not an image").decode()]}, 6),
        ({"denoising_strength": 1.5}, 6),
        ({"denoising_strength": -0.1}, 6),
        ({"denoising_strength": "0.5"}, 1),
        ({"resize_mode": 7}, 6),
        ({"mask": base64.b64encode(RED).decode()}, 10),
        ({"sampler_name": "Nope"}, 8),
        ({"model_name": "nope.safetensors"}, 2),
        ({"steps": 51}, 6),
    ],
)
async def test_bad_requests_are_refused_and_cost_nothing(emu, session, change, code):
    reply = await post(session, emu, {**BODY, **change})
    assert (reply["code"], reply["data"]) == (code, None), reply
    assert emu.credit == 100 and emu.stats.tasks_created == 0


# -- the client ----------------------------------------------------------------------------


def test_the_request_validates_its_own_fields():
    good = Img2ImgRequest(prompt="x", init_image=RED, denoising_strength=0.4)
    good.validate()
    for bad, field in [
        (Img2ImgRequest(prompt="x"), "init_image"),
        (Img2ImgRequest(prompt="x", init_image=RED, denoising_strength=1.2), "denoising_strength"),
        (Img2ImgRequest(prompt="x", init_image=RED, denoising_strength=True), "denoising_strength"),
        (Img2ImgRequest(prompt="x", init_image=RED, sampler_name="DDIM"), "sampler_name"),
        (Img2ImgRequest(prompt="x", init_image=RED, width=512, height=512), "size"),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            bad.validate()
        assert caught.value.field == field


def test_the_payload_carries_init_images_as_base64():
    payload = Img2ImgRequest(prompt="x", init_image=RED, denoising_strength=1).to_payload()
    assert "init_image" not in payload
    assert payload["init_images"] == [base64.b64encode(RED).decode()]
    assert payload["denoising_strength"] == 1.0 and isinstance(payload["cfg_scale"], float)
    assert RED.hex() not in repr(Img2ImgRequest(prompt="x", init_image=RED))


async def test_the_client_runs_an_img2img_task_end_to_end(emu, clock, session):
    client = OmniClient(
        KEY, base_url=emu.base_url, session=session, poll=FAST_POLL, retry=FAST_RETRY
    )
    request = Img2ImgRequest(
        prompt="a barn", init_image=BLUE, seed=8, width=1216, height=832, batch_size=2
    )
    submission = await client.img2img(request)
    clock.now += 10
    final = await client.wait_until_done(submission.task_id, max_wait=5)
    assert final.info is not None and final.info.all_seeds == (8, 9)
    pictures = await client.download(final.images)
    assert [size_of(p) for p in pictures] == [(1216, 832)] * 2
    assert emu.stats.requests["img2img"] == 1


# -- the adapter ---------------------------------------------------------------------------


async def test_the_adapter_sends_init_image_as_img2img(emu, clock, session):
    backend = OmniinferBackend(
        KEY,
        base_url=emu.base_url,
        session=session,
        timeout=aiohttp.ClientTimeout(total=5),
        max_wait_poll=FAST_POLL,
        retry=FAST_RETRY,
    )
    handle = await backend.submit(
        Generation(prompt="a barn", seed=3, init_image=RED, denoising_strength=0.2)
    )
    assert emu.stats.requests["img2img"] == 1 and emu.stats.requests["txt2img"] == 0
    clock.now += 10
    readings = [r async for r in backend.follow(handle, max_wait=5)]
    assert readings[-1].state is TaskState.SUCCEEDED
    output = await backend.result(handle, expected=1)
    assert size_of(output.images[0]) == (1024, 1024)
    assert output.seeds == (3,) and output.info["denoising_strength"] == 0.2
    red, _, blue = pixel(output.images[0], (1000, 1000))
    assert red > blue + 100  # mostly the red picture at strength 0.2

    default = await backend.submit(Generation(prompt="a barn", init_image=RED))
    clock.now += 10
    assert (await backend.result(default, expected=1)).info["denoising_strength"] == 0.75

    with pytest.raises(OptionRefused) as caught:
        await backend.submit(Generation(prompt="x", init_image=RED, denoising_strength=2.0))
    assert caught.value.option == "denoising_strength"
    with pytest.raises(OptionRefused) as caught:
        await backend.submit(Generation(prompt="x", init_image=b""))
    assert caught.value.option == "init_image"
