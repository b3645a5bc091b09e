"""A faithful local emulator of the Omniinfer v2 API (aiohttp), for tests and the bot's sandbox.

    python -m omni.emulator --host 127.0.0.1 --port 8765 [--key K] [--credit N] [--duration S]

It answers like the real API for everything the client uses: the JSON envelope and its codes
(4 bad key, 1 bad JSON, 2 unknown model, 6 out of range, 8 unknown sampler, 7 out of credit,
3 unknown task), tasks moving 0 → 1 → 2 over `duration` seconds with a float `progress`,
`eta_relative` and preview images, `info` as a JSON string with the real seed, and real PNGs
served from its own URLs, which expire. Tests script failures through `/_emulator/...`:
HTTP 5xx, slow replies, dropped connections, malformed JSON, envelope codes, failed and
timed-out tasks, and faults that strike after a submit was accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import random
import signal
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from omni import emulator_images as images
from omni import rules

ENDPOINTS = ("txt2img", "upscale", "progress", "models", "image")
FAULT_KINDS = ("http_status", "delay", "drop", "malformed", "code")
DEFAULT_KEY = "sandbox"
IMAGE_CACHE_SIZE = 64
MAX_UPSCALED_SIDE = 4096

MODELS: tuple[dict[str, str], ...] = (
    {"name": "sd_xl_base_1.0.safetensors", "hash": "31e35c80fc", "type": "checkpoint"},
    {"name": "sd_xl_refiner_1.0.safetensors", "hash": "7440042bbd", "type": "checkpoint"},
    {"name": "v1-5-pruned-emaonly.safetensors", "hash": "6ce0161689", "type": "checkpoint"},
    {"name": "sdxl_vae.safetensors", "hash": "235745af8d", "type": "vae"},
    {"name": "control_v11p_sd15_canny.pth", "hash": "e2b1f6e0b5", "type": "controlnet"},
)
CHECKPOINTS = frozenset(m["name"] for m in MODELS if m["type"] == "checkpoint")


@dataclass
class Fault:
    """One scripted misbehaviour of an endpoint, for the next `times` requests."""

    endpoint: str
    kind: str
    status: int = 500
    seconds: float = 1.0
    code: int = -1
    times: int = 1
    after_accept: bool = False  # submits only: create (and bill) the task, then misbehave


class FaultPlan:
    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._next_outcomes: list[tuple[str, str]] = []

    def add(self, fault: Fault) -> None:
        if fault.endpoint not in ENDPOINTS or fault.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {fault.endpoint}/{fault.kind}")
        self._faults.append(fault)

    def take(self, endpoint: str) -> Fault | None:
        for fault in self._faults:
            if fault.endpoint == endpoint:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def fail_next_task(self, reason: str = "emulated failure") -> None:
        self._next_outcomes.append(("fail", reason))

    def timeout_next_task(self) -> None:
        self._next_outcomes.append(("timeout", ""))

    def next_outcome(self) -> tuple[str, str]:
        return self._next_outcomes.pop(0) if self._next_outcomes else ("ok", "")

    def clear(self) -> None:
        self._faults.clear()
        self._next_outcomes.clear()


@dataclass
class Stats:
    requests: Counter[str] = field(default_factory=Counter)
    polls_by_task: Counter[str] = field(default_factory=Counter)
    tasks_created: int = 0
    images_generated: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "polls_by_task": dict(self.polls_by_task),
            "tasks_created": self.tasks_created,
            "images_generated": self.images_generated,
        }


@dataclass
class Task:
    id: str
    prompt: str
    negative_prompt: str
    seed: int
    count: int
    width: int
    height: int
    sampler: str
    steps: int
    cfg_scale: float
    created: float  # emulator clock
    submitted_wall: float
    duration: float
    outcome: str  # ok | fail | timeout
    reason: str
    ttl: float
    source: bytes | None = None  # upscale input

    @property
    def seeds(self) -> list[int]:
        return [(self.seed + i) % 2**32 for i in range(self.count)]

    @property
    def final_at(self) -> float:
        return self.created + self.duration


class Emulator:
    def __init__(
        self,
        *,
        api_key: str = DEFAULT_KEY,
        credit: int | None = None,
        duration: float = 3.0,
        queue_fraction: float = 0.2,
        image_ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_key = api_key
        self.credit = credit
        self.duration = duration
        self.queue_fraction = queue_fraction
        self.image_ttl = image_ttl
        self.clock = clock
        self.faults = FaultPlan()
        self.stats = Stats()
        self.base_url = ""
        self._tasks: dict[str, Task] = {}
        self._cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._runner: web.AppRunner | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes(
            [
                web.post("/v2/txt2img", self._txt2img),
                web.post("/v2/upscale", self._upscale),
                web.get("/v2/progress", self._progress),
                web.get("/v2/models", self._models),
                web.get("/images/{name}", self._image),
                web.post("/_emulator/faults", self._control_fault),
                web.post("/_emulator/tasks/next", self._control_next_task),
                web.post("/_emulator/credit", self._control_credit),
                web.get("/_emulator/stats", self._control_stats),
                web.post("/_emulator/reset", self._control_reset),
            ]
        )
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://{host}:{bound}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def task_final_time(self, task_id: str) -> float:
        """When (on the emulator's clock) the task became, or will become, final."""
        return self._tasks[task_id].final_at

    # -- the API ---------------------------------------------------------------------------

    async def _txt2img(self, request: web.Request) -> web.StreamResponse:
        return await self._submit(request, "txt2img", self._new_txt2img)

    async def _upscale(self, request: web.Request) -> web.StreamResponse:
        return await self._submit(request, "upscale", self._new_upscale)

    async def _submit(
        self,
        request: web.Request,
        endpoint: str,
        create: Callable[[dict[str, Any]], Task | web.Response],
    ) -> web.StreamResponse:
        self.stats.requests[endpoint] += 1
        fault = self.faults.take(endpoint)
        if fault and not fault.after_accept:
            early = await self._misbehave(request, fault)
            if early is not None:
                return early
        refusal = self._refuse_auth(request)
        if refusal:
            return refusal
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _envelope(1, "invalid JSON body")
        if not isinstance(body, dict):
            return _envelope(1, "the body must be a JSON object")
        created = create(body)
        if isinstance(created, web.Response):
            return created
        self._tasks[created.id] = created
        self.stats.tasks_created += 1
        reply = _envelope(0, "", {"task_id": created.id})
        if fault and fault.after_accept:
            late = await self._misbehave(request, fault)
            if late is not None:
                return late
        return reply

    def _new_txt2img(self, body: dict[str, Any]) -> Task | web.Response:
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return _envelope(6, "prompt: required")
        sampler = body.get("sampler_name", rules.DEFAULT_SAMPLER)
        if sampler not in rules.API_SAMPLERS:
            return _envelope(8, f"sampler_name: {sampler!r} does not exist")
        model = body.get("model_name", rules.SDXL_MODEL)
        if model not in CHECKPOINTS:
            return _envelope(2, f"model_name: {model!r} does not exist")
        problem = _range_problem(body)
        if problem:
            return _envelope(6, problem)
        batch = max(1, int(body.get("batch_size", 1)))
        n_iter = max(1, int(body.get("n_iter", 1)))
        count = batch * n_iter
        if not self._spend(count):
            return _envelope(7, f"insufficient balance: {count} image(s) requested")
        seed = int(body.get("seed", -1))
        outcome, reason = self.faults.next_outcome()
        return Task(
            id=str(uuid.uuid4()),
            prompt=prompt,
            negative_prompt=str(body.get("negative_prompt") or ""),
            seed=random.randrange(2**32) if seed == -1 else seed,
            count=count,
            width=int(body.get("width", 512)),
            height=int(body.get("height", 512)),
            sampler=sampler,
            steps=int(body.get("steps", 20)),
            cfg_scale=float(body.get("cfg_scale", 7)),
            created=self.clock(),
            submitted_wall=time.time(),
            duration=self.duration,
            outcome=outcome,
            reason=reason,
            ttl=float(body.get("img_expire_ttl") or self.image_ttl),
        )

    def _new_upscale(self, body: dict[str, Any]) -> Task | web.Response:
        try:
            source = base64.b64decode(str(body.get("image", "")), validate=True)
            width, height = images.image_size(source)
        except (binascii.Error, OSError, ValueError):
            return _envelope(6, "image: not a base64-encoded image")
        if body.get("resize_mode", 0) == 1:
            out_w = int(body.get("upscaling_resize_w", 0))
            out_h = int(body.get("upscaling_resize_h", 0))
        else:
            factor = body.get("upscaling_resize", 2.0)
            if not isinstance(factor, int | float) or factor not in rules.API_UPSCALE_FACTOR:
                return _envelope(6, "upscaling_resize: must be from 1 to 4")
            out_w, out_h = round(width * factor), round(height * factor)
        if not (0 < out_w <= MAX_UPSCALED_SIDE and 0 < out_h <= MAX_UPSCALED_SIDE):
            return _envelope(6, f"output size must be at most {MAX_UPSCALED_SIDE} px a side")
        if not self._spend(1):
            return _envelope(7, "insufficient balance")
        outcome, reason = self.faults.next_outcome()
        return Task(
            id=str(uuid.uuid4()),
            prompt="upscale",
            negative_prompt="",
            seed=0,
            count=1,
            width=out_w,
            height=out_h,
            sampler="",
            steps=0,
            cfg_scale=0.0,
            created=self.clock(),
            submitted_wall=time.time(),
            duration=self.duration / 2,
            outcome=outcome,
            reason=reason,
            ttl=self.image_ttl,
            source=source,
        )

    def _spend(self, count: int) -> bool:
        if self.credit is not None:
            if count > self.credit:
                return False
            self.credit -= count
        self.stats.images_generated += count
        return True

    async def _progress(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests["progress"] += 1
        fault = self.faults.take("progress")
        if fault:
            early = await self._misbehave(request, fault)
            if early is not None:
                return early
        refusal = self._refuse_auth(request)
        if refusal:
            return refusal
        task = self._tasks.get(request.query.get("task_id", ""))
        if task is None:
            return _envelope(3, "task_id does not exist")
        self.stats.polls_by_task[task.id] += 1
        return _envelope(0, "", self._progress_data(task, str(request.url.origin())))

    def _progress_data(self, task: Task, origin: str) -> dict[str, Any]:
        elapsed = self.clock() - task.created
        queued_for = task.duration * self.queue_fraction
        data: dict[str, Any] = {
            "status": 0,
            "progress": 0.0,
            "eta_relative": max(0.0, task.duration - elapsed),
            "imgs": None,
            "info": "",
            "failed_reason": "",
            "current_images": None,
            "submit_time": _wall(task.submitted_wall),
            "execution_time": "",
            "txt2img_time": "",
            "finish_time": "",
        }
        if elapsed < queued_for:
            return data
        data["execution_time"] = _wall(task.submitted_wall + queued_for)
        if elapsed < task.duration:
            fraction = (elapsed - queued_for) / (task.duration - queued_for)
            data.update(status=1, progress=round(fraction, 4))
            if fraction >= 0.3 and task.source is None:
                data["current_images"] = [f"{origin}/images/{task.id}-preview.png"]
            return data
        finished = _wall(task.submitted_wall + task.duration)
        data.update(eta_relative=0, finish_time=finished, txt2img_time=finished)
        if task.outcome == "fail":
            data.update(status=3, failed_reason=task.reason)
        elif task.outcome == "timeout":
            data.update(status=4, failed_reason="task timed out")
        else:
            data.update(
                status=2,
                progress=1,
                imgs=[f"{origin}/images/{task.id}-{i}.png" for i in range(task.count)],
                info=json.dumps(_info(task)),
            )
        return data

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests["models"] += 1
        fault = self.faults.take("models")
        if fault:
            early = await self._misbehave(request, fault)
            if early is not None:
                return early
        refusal = self._refuse_auth(request)
        if refusal:
            return refusal
        wanted = request.query.get("type")
        models = [
            {**m, "sd_name": m["name"], "download_status": 1, "dependency_status": 1}
            for m in MODELS
            if wanted is None or m["type"] == wanted
        ]
        return _envelope(0, "", {"models": models})

    async def _image(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests["image"] += 1
        fault = self.faults.take("image")
        if fault:
            early = await self._misbehave(request, fault)
            if early is not None:
                return early
        name = request.match_info["name"].removesuffix(".png")
        task_id, _, index = name.rpartition("-")
        task = self._tasks.get(task_id)
        if task is None or not self._image_exists(task, index):
            return web.Response(status=404, text="NoSuchKey")
        if self.clock() - task.final_at > task.ttl:
            return web.Response(status=403, text="Request has expired")
        data = await self._render(task, index)
        return web.Response(body=data, content_type="image/png")

    def _image_exists(self, task: Task, index: str) -> bool:
        elapsed = self.clock() - task.created
        if index == "preview":
            return elapsed >= task.duration * self.queue_fraction
        return (
            index.isdigit()
            and int(index) < task.count
            and task.outcome == "ok"
            and elapsed >= task.duration
        )

    async def _render(self, task: Task, index: str) -> bytes:
        key = (task.id, index)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if index == "preview":
            data = await asyncio.to_thread(images.preview, task.prompt, task.seed)
        elif task.source is not None:
            data = await asyncio.to_thread(images.upscale, task.source, task.width, task.height)
        else:
            seed = task.seeds[int(index)]
            data = await asyncio.to_thread(
                images.render, task.prompt, seed, task.width, task.height
            )
        self._cache[key] = data
        while len(self._cache) > IMAGE_CACHE_SIZE:
            self._cache.popitem(last=False)
        return data

    # -- faults and auth -------------------------------------------------------------------

    def _refuse_auth(self, request: web.Request) -> web.Response | None:
        if request.headers.get("X-Omni-Key") != self.api_key:
            return _envelope(4, "invalid api key")
        return None

    async def _misbehave(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        """The faulty reply, or None when the fault only delays a normal one."""
        if fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
            return None
        if fault.kind == "http_status":
            return web.Response(
                status=fault.status, text="upstream error", content_type="text/plain"
            )
        if fault.kind == "malformed":
            return web.Response(body=b'{"code": 0, "data": ', content_type="application/json")
        if fault.kind == "code":
            return _envelope(fault.code, f"emulated code {fault.code}")
        # drop: close the socket without a reply
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError

    # -- control routes --------------------------------------------------------------------

    async def _control_fault(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            self.faults.add(
                Fault(
                    endpoint=body["endpoint"],
                    kind=body["kind"],
                    status=int(body.get("status", 500)),
                    seconds=float(body.get("seconds", 1.0)),
                    code=int(body.get("code", -1)),
                    times=int(body.get("times", 1)),
                    after_accept=bool(body.get("after_accept", False)),
                )
            )
        except (KeyError, ValueError) as error:
            return web.json_response({"ok": False, "error": str(error)}, status=400)
        return web.json_response({"ok": True})

    async def _control_next_task(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("outcome") == "fail":
            self.faults.fail_next_task(str(body.get("reason") or "emulated failure"))
        elif body.get("outcome") == "timeout":
            self.faults.timeout_next_task()
        else:
            return web.json_response({"ok": False, "error": "outcome: fail|timeout"}, status=400)
        return web.json_response({"ok": True})

    async def _control_credit(self, request: web.Request) -> web.Response:
        images_left = (await request.json()).get("images")
        self.credit = None if images_left is None else int(images_left)
        return web.json_response({"ok": True, "credit": self.credit})

    async def _control_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_json())

    async def _control_reset(self, request: web.Request) -> web.Response:
        self.faults.clear()
        self.stats = Stats()
        return web.json_response({"ok": True})


def _envelope(code: int, msg: str, data: Any = None) -> web.Response:
    return web.Response(
        text=json.dumps({"code": code, "msg": msg, "data": data}),
        content_type="application/json",
    )


def _range_problem(body: dict[str, Any]) -> str | None:
    def number(name: str, default: float) -> float | None:
        value = body.get(name, default)
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None

    steps = number("steps", 20)
    if steps is None or not 0 < steps <= rules.API_STEPS.high:
        return "steps: must be in (0, 50]"
    cfg = number("cfg_scale", 7)
    if cfg is None or not 0 < cfg <= rules.API_CFG_SCALE.high:
        return "cfg_scale: must be in (0, 30]"
    for name in ("width", "height"):
        side = number(name, 512)
        if side is None or not 0 < side <= rules.API_DIMENSION.high:
            return f"{name}: must be in (0, 2048]"
    for name in ("batch_size", "n_iter"):
        count = number(name, 1)
        if count is None or count not in rules.API_BATCH:
            return f"{name}: must be in [0, 8]"
    seed = number("seed", -1)
    if seed is None or not (seed == -1 or 0 <= seed < 2**32):
        return "seed: must be -1 or in [0, 4294967295]"
    ttl = number("img_expire_ttl", 0)
    if ttl is None or not 0 <= ttl <= rules.API_MAX_EXPIRE_TTL:
        return "img_expire_ttl: must be in [0, 604800]"
    return None


def _info(task: Task) -> dict[str, Any]:
    infotext = (
        f"{task.prompt}\nNegative prompt: {task.negative_prompt}\nSteps: {task.steps}, "
        f"Sampler: {task.sampler}, CFG scale: {task.cfg_scale}, Seed: {task.seed}, "
        f"Size: {task.width}x{task.height}, Model hash: 31e35c80fc, Model: sd_xl_base_1.0"
    )
    return {
        "prompt": task.prompt,
        "all_prompts": [task.prompt] * task.count,
        "negative_prompt": task.negative_prompt,
        "all_negative_prompts": [task.negative_prompt] * task.count,
        "seed": task.seed,
        "all_seeds": task.seeds,
        "subseed": task.seed ^ 0x5A5A5A5A,
        "all_subseeds": [s ^ 0x5A5A5A5A for s in task.seeds],
        "subseed_strength": 0,
        "width": task.width,
        "height": task.height,
        "sampler_name": task.sampler,
        "cfg_scale": task.cfg_scale,
        "steps": task.steps,
        "batch_size": task.count,
        "restore_faces": False,
        "sd_model_hash": "31e35c80fc",
        "clip_skip": 1,
        "infotexts": [infotext] * task.count,
        "styles": [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(task.submitted_wall)),
    }


def _wall(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


async def _serve(args: argparse.Namespace) -> None:
    emulator = Emulator(api_key=args.key, credit=args.credit, duration=args.duration)
    url = await emulator.start(args.host, args.port)
    print(f"Omniinfer emulator listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await emulator.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m omni.emulator", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument(
        "--key", default=DEFAULT_KEY, help="the only API key accepted (%(default)s)"
    )
    parser.add_argument("--credit", type=int, default=None, help="images left (default: unlimited)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per task")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
