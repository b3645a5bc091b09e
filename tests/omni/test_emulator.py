"""The emulator's own promises, beyond what the client tests already drive."""

from __future__ import annotations

import aiohttp

from omni.emulator import Emulator

HEADERS = {"X-Omni-Key": "k"}
BODY = {
    "prompt": "x",
    "seed": 5,
    "width": 1024,
    "height": 1024,
    "sampler_name": "Euler a",
    "model_name": "sd_xl_base_1.0.safetensors",
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def submit(session, url, **changes) -> dict:
    async with session.post(f"{url}/v2/txt2img", json={**BODY, **changes}, headers=HEADERS) as r:
        return await r.json()


async def progress(session, url, task_id) -> dict:
    async with session.get(f"{url}/v2/progress", params={"task_id": task_id}, headers=HEADERS) as r:
        return (await r.json())["data"]


async def test_a_task_moves_from_queued_to_running_to_done_on_its_clock():
    clock = FakeClock()
    async with Emulator(api_key="k", duration=10, clock=clock) as emu, aiohttp.ClientSession() as s:
        task_id = (await submit(s, emu.base_url))["data"]["task_id"]
        first = await progress(s, emu.base_url, task_id)
        assert (first["status"], first["eta_relative"]) == (0, 10)
        clock.now += 6
        middle = await progress(s, emu.base_url, task_id)
        assert middle["status"] == 1 and 0 < middle["progress"] < 1
        assert middle["current_images"] and middle["current_images"][0].endswith("preview.png")
        clock.now += 5
        done = await progress(s, emu.base_url, task_id)
        assert (done["status"], done["progress"], done["eta_relative"]) == (2, 1, 0)
        assert emu.task_final_time(task_id) == 1010


async def test_images_are_deterministic_and_expire_after_their_ttl():
    clock = FakeClock()
    async with Emulator(api_key="k", duration=1, clock=clock) as emu, aiohttp.ClientSession() as s:
        first = (await submit(s, emu.base_url, img_expire_ttl=60))["data"]["task_id"]
        second = (await submit(s, emu.base_url))["data"]["task_id"]
        clock.now += 2
        urls = [(await progress(s, emu.base_url, t))["imgs"][0] for t in (first, second)]
        bodies = []
        for url in urls:
            async with s.get(url) as r:
                bodies.append(await r.read())
        assert bodies[0] == bodies[1]
        clock.now += 61
        async with s.get(urls[0]) as expired:
            assert expired.status == 403


async def test_out_of_range_values_and_unknown_names_get_their_codes():
    async with Emulator(api_key="k") as emu, aiohttp.ClientSession() as s:
        assert (await submit(s, emu.base_url, steps=0))["code"] == 6
        assert (await submit(s, emu.base_url, width=4096))["code"] == 6
        assert (await submit(s, emu.base_url, sampler_name="Nope"))["code"] == 8
        assert (await submit(s, emu.base_url, model_name="x.ckpt"))["code"] == 2
        async with s.post(f"{emu.base_url}/v2/txt2img", data=b"{", headers=HEADERS) as r:
            assert (await r.json())["code"] == 1
        async with s.post(f"{emu.base_url}/v2/upscale", json={"image": "!!"}, headers=HEADERS) as r:
            assert (await r.json())["code"] == 6
