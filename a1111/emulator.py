"""A local emulator of an AUTOMATIC1111 WebUI server run with `--api`, for tests and sandboxes.

    python -m a1111.emulator [--host 127.0.0.1] [--port 7860] [--auth user:pass]
                             [--duration S] [--no-internal-progress]

It behaves like the real server where a client can tell: txt2img/img2img/extra-single-image
**block** until done and run ONE at a time (the rest queue behind a lock, FIFO); a request
keeps running when its client goes away, as A1111's worker thread does; `force_task_id` is
followed by `POST /internal/progress` (with `id_live_preview` so an unchanged preview is not
sent again) and the global `GET /sdapi/v1/progress`; `info` is A1111's JSON string with
`seed`/`all_seeds`/`subseed`/`all_subseeds` computed the way A1111 does (seeds count up per
image unless a variation strength is set); images are real PNGs at the requested size
(img2img blends the init image in, variations blend the subseed's colours in). Errors have
the real shapes: FastAPI's 422 `{"detail": [{"loc", "msg", "type"}]}` for fields of the wrong
type, A1111's `{"error", "detail", "body", "errors"}` for its own refusals ("Sampler not
found" is HTTP 400, "Init image not found" 404, a bad base64 image 500), 401 for wrong HTTP
Basic credentials (only on `/sdapi/*`, as on the real server), `{"detail": "Not Found"}` for
a missing route. `internal_progress=False` serves no `/internal/*` routes (A1111 before 1.0,
or `--nowebui`).

Emulator-only strictness: real A1111 bounds almost nothing; this one also refuses, with the
same 422 shape, values no SDXL client should send (steps outside 1–150, sides outside
64–2048, more than 8 images, cfg_scale outside 1–30, strengths outside 0–1).

Scripted misbehaviour, in-process (`emulator.faults`, `go_down()`, `come_back()`) or through
unauthenticated control routes for an emulator in another process:

    POST /_emulator/faults    {"endpoint", "kind": "status"|"delay"|"drop", "status",
                               "seconds", "times", "after_start", "message"}  (see `Fault`)
    POST /_emulator/down      {"seconds": S}  stop listening (connections refused), come back
    POST /_emulator/settings  {"duration", "internal_progress", "live_previews"}
    GET  /_emulator/stats     requests, jobs started/finished/interrupted, max concurrent
                              jobs (1 unless something is wrong), polls per task
    POST /_emulator/reset
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import dataclasses
import functools
import hashlib
import hmac
import io
import json
import math
import random
import signal
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from a1111.client import parse_auth

MAX_SEED = 2**32 - 1
MAX_SOURCE_PIXELS = 4096 * 4096  # decoded inputs (init images, upscale sources)
MAX_UPSCALED_SIDE = 8192
PREVIEW_SIDE = 128
PREVIEWS = 3  # live previews per job, at 1/4, 2/4 and 3/4 of the way
FINISHED_REMEMBERED = 16  # like modules/progress.py's finished_tasks
SHUTDOWN_GRACE = 0.5
ENDPOINTS = (
    "txt2img",
    "img2img",
    "extra-single-image",
    "interrupt",
    "progress",  # POST /internal/progress
    "global-progress",  # GET /sdapi/v1/progress
    "samplers",
    "sd-models",
    "upscalers",
    "ping",
)
GENERATING = frozenset({"txt2img", "img2img", "extra-single-image"})
FAULT_KINDS = ("status", "delay", "drop")

DEFAULT_SAMPLERS: tuple[str, ...] = (
    "DPM++ 2M Karras",
    "DPM++ SDE Karras",
    "DPM++ 2M SDE Karras",
    "DPM++ 2M",
    "DPM++ SDE",
    "DPM++ 2S a",
    "Euler a",
    "Euler",
    "LMS",
    "Heun",
    "DPM2",
    "DPM2 a",
    "DDIM",
    "UniPC",
)
SD_MODELS: tuple[dict[str, Any], ...] = (
    {
        "title": "sd_xl_base_1.0.safetensors [31e35c80fc]",
        "model_name": "sd_xl_base_1.0",
        "hash": "31e35c80fc",
        "sha256": "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b",
        "filename": "/models/Stable-diffusion/sd_xl_base_1.0.safetensors",
        "config": None,
    },
    {
        "title": "sd_xl_refiner_1.0.safetensors [7440042bbd]",
        "model_name": "sd_xl_refiner_1.0",
        "hash": "7440042bbd",
        "sha256": "7440042bbdc8a24813002c09b6b69b64dc90fded4472613437b7f55f9b7d9c5f",
        "filename": "/models/Stable-diffusion/sd_xl_refiner_1.0.safetensors",
        "config": None,
    },
)
UPSCALERS: tuple[tuple[str, int | None], ...] = (
    ("None", None),
    ("Lanczos", 4),
    ("Nearest", 4),
    ("ESRGAN_4x", 4),
    ("R-ESRGAN 4x+", 4),
    ("R-ESRGAN 4x+ Anime6B", 4),
    ("SwinIR 4x", 4),
)
_RESAMPLING = {"Nearest": Image.Resampling.NEAREST}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- refusals in the real server's shapes ---------------------------------------------------


class _Refusal(Exception):
    """Answer with `status` and `payload` (JSON) instead of running the request."""

    def __init__(self, status: int, payload: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.payload = payload


def _http_exception(status: int, detail: str) -> _Refusal:
    """How A1111's exception middleware renders an HTTPException."""
    return _Refusal(
        status,
        {"error": "HTTPException", "detail": detail, "body": "", "errors": f"{status}: {detail}"},
    )


def _internal_error(kind: str, message: str, status: int = 500) -> _Refusal:
    """How A1111's exception middleware renders any other exception (HTTP 500)."""
    return _Refusal(status, {"error": kind, "detail": "", "body": "", "errors": message})


def _invalid(name: str, msg: str, kind: str, **ctx: Any) -> _Refusal:
    """FastAPI's request validation error (pydantic v1 wording, as A1111 1.x ships)."""
    error: dict[str, Any] = {"loc": ["body", name], "msg": msg, "type": kind}
    if ctx:
        error["ctx"] = ctx
    return _Refusal(422, {"detail": [error]})


# -- faults ---------------------------------------------------------------------------------


@dataclass
class Fault:
    """One scripted misbehaviour of `endpoint`, striking its next `times` requests.

    `status`: answer HTTP `status` with A1111's error body (`message` as its text); `delay`:
    wait `seconds`, then answer normally; `drop`: close the connection without a reply.
    With `after_start` (generation endpoints), the job is queued and started first and the
    fault strikes half-way: the server failed (or died) mid-generation, and the request
    certainly ran.
    """

    endpoint: str
    kind: str
    status: int = 500
    seconds: float = 1.0
    times: int = 1
    after_start: bool = False
    message: str = "emulated failure"

    def __post_init__(self) -> None:
        _check(self.endpoint in ENDPOINTS, f"endpoint: one of {', '.join(ENDPOINTS)}")
        _check(self.kind in FAULT_KINDS, f"kind: one of {', '.join(FAULT_KINDS)}")
        _check(_is_int(self.status) and 400 <= self.status <= 599, "status: from 400 to 599")
        _check(_is_number(self.seconds) and self.seconds >= 0, "seconds: a number >= 0")
        _check(_is_int(self.times) and self.times >= 1, "times: a whole number >= 1")
        _check(isinstance(self.after_start, bool), "after_start: true or false")
        _check(
            not self.after_start or self.endpoint in GENERATING,
            "after_start: only for txt2img, img2img and extra-single-image",
        )
        _check(isinstance(self.message, str), "message: text")


class FaultPlan:
    """Queued faults, first added first struck."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        """Queue a copy, so the caller's object is never used up."""
        self._faults.append(dataclasses.replace(fault))

    def take(self, endpoint: str, *, after_start: bool) -> Fault | None:
        for fault in self._faults:
            if fault.endpoint == endpoint and fault.after_start == after_start:
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def clear(self) -> None:
        self._faults.clear()


@dataclass
class Stats:
    """What the server was asked and did, so tests can prove what a client did."""

    requests: Counter[str] = field(default_factory=Counter)  # by endpoint, faults included
    faults_fired: Counter[str] = field(default_factory=Counter)  # "endpoint/kind"
    polls_by_task: Counter[str] = field(default_factory=Counter)  # /internal/progress
    global_polls: int = 0
    jobs_started: int = 0  # generations and upscales that got the lock
    jobs_finished: int = 0  # ran to their end (interrupted ones included)
    jobs_interrupted: int = 0
    jobs_abandoned: int = 0  # cut off by go_down()
    running: int = 0
    max_concurrent: int = 0  # must stay 1: the server runs one job at a time
    max_waiting: int = 0  # most requests ever queued behind the running one
    interrupts: int = 0
    auth_failures: int = 0
    started_tasks: list[str] = field(default_factory=list)  # task ids, in start order

    def reset(self) -> None:
        """Zero in place, so references held by tests stay live."""
        for counter in (self.requests, self.faults_fired, self.polls_by_task):
            counter.clear()
        self.started_tasks.clear()
        self.global_polls = self.jobs_started = self.jobs_finished = 0
        self.jobs_interrupted = self.jobs_abandoned = self.running = self.max_concurrent = 0
        self.max_waiting = 0
        self.interrupts = self.auth_failures = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "faults_fired": dict(self.faults_fired),
            "polls_by_task": dict(self.polls_by_task),
            "global_polls": self.global_polls,
            "jobs_started": self.jobs_started,
            "jobs_finished": self.jobs_finished,
            "jobs_interrupted": self.jobs_interrupted,
            "jobs_abandoned": self.jobs_abandoned,
            "running": self.running,
            "max_concurrent": self.max_concurrent,
            "max_waiting": self.max_waiting,
            "interrupts": self.interrupts,
            "auth_failures": self.auth_failures,
            "started_tasks": list(self.started_tasks),
        }


# -- requests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Generation:
    """A validated txt2img/img2img body, seeds resolved as A1111 resolves them."""

    kind: str
    prompt: str
    negative_prompt: str
    sampler_name: str
    steps: int
    cfg_scale: float
    width: int
    height: int
    batch_size: int
    n_iter: int
    seed: int
    subseed: int
    subseed_strength: float
    task_id: str
    save_images: bool
    send_images: bool
    init_image: bytes | None = field(default=None, repr=False)
    denoising_strength: float = 0.75
    parameters: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def count(self) -> int:
        return self.batch_size * self.n_iter

    @property
    def all_seeds(self) -> list[int]:
        """processing.py: seeds count up per image, unless a variation strength is set."""
        step = 0 if self.subseed_strength else 1
        return [(self.seed + i * step) % (MAX_SEED + 1) for i in range(self.count)]

    @property
    def all_subseeds(self) -> list[int]:
        return [(self.subseed + i) % (MAX_SEED + 1) for i in range(self.count)]

    def info(self, model: dict[str, Any]) -> str:
        seeds, subseeds = self.all_seeds, self.all_subseeds
        grid = 1 if self.save_images and self.count > 1 else 0
        return json.dumps(
            {
                "prompt": self.prompt,
                "all_prompts": [self.prompt] * self.count,
                "negative_prompt": self.negative_prompt,
                "all_negative_prompts": [self.negative_prompt] * self.count,
                "seed": self.seed,
                "all_seeds": seeds,
                "subseed": self.subseed,
                "all_subseeds": subseeds,
                "subseed_strength": self.subseed_strength,
                "width": self.width,
                "height": self.height,
                "sampler_name": self.sampler_name,
                "cfg_scale": self.cfg_scale,
                "steps": self.steps,
                "batch_size": self.batch_size,
                "restore_faces": False,
                "face_restoration_model": None,
                "sd_model_name": model["model_name"],
                "sd_model_hash": model["hash"],
                "sd_vae_name": None,
                "sd_vae_hash": None,
                "seed_resize_from_w": -1,
                "seed_resize_from_h": -1,
                "denoising_strength": self.denoising_strength if self.init_image else None,
                "extra_generation_params": {},
                "index_of_first_image": grid,
                "infotexts": [self._infotext(s, model) for s in seeds],
                "styles": [],
                "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
                "clip_skip": 1,
                "is_using_inpainting_conditioning": False,
                "version": "v1.10.1-emulator",
            }
        )

    def _infotext(self, seed: int, model: dict[str, Any]) -> str:
        negative = f"\nNegative prompt: {self.negative_prompt}" if self.negative_prompt else ""
        return (
            f"{self.prompt}{negative}\nSteps: {self.steps}, Sampler: {self.sampler_name}, "
            f"CFG scale: {self.cfg_scale}, Seed: {seed}, Size: {self.width}x{self.height}, "
            f"Model hash: {model['hash']}, Model: {model['model_name']}, Version: emulator"
        )

    def render_images(self) -> list[bytes]:
        """The result PNGs (a grid first when A1111 would draw one)."""
        pictures = [
            _picture(self, seed, subseed, self.width, self.height)
            for seed, subseed in zip(self.all_seeds, self.all_subseeds, strict=True)
        ]
        images = [_png(p) for p in pictures]
        if self.save_images and self.count > 1:
            images.insert(0, _png(_grid(pictures)))
        return images

    def render_previews(self) -> list[bytes]:
        """Small, increasingly sharp pictures of the first image: the live previews."""
        scale = PREVIEW_SIDE / max(self.width, self.height)
        size = (max(1, round(self.width * scale)), max(1, round(self.height * scale)))
        base = _picture(self, self.all_seeds[0], self.all_subseeds[0], *size)
        blurs = [6 - 2 * i for i in range(PREVIEWS)]
        return [_png(base.filter(ImageFilter.GaussianBlur(b)) if b else base) for b in blurs]


@dataclass(frozen=True)
class Upscale:
    source: bytes = field(repr=False)
    width: int
    height: int
    upscaler: str

    def render(self) -> bytes:
        with Image.open(io.BytesIO(self.source)) as image:
            mode = "RGBA" if "A" in image.getbands() else "RGB"
            method = _RESAMPLING.get(self.upscaler, Image.Resampling.LANCZOS)
            return _png(image.convert(mode).resize((self.width, self.height), method))


@dataclass
class Job:
    """One request holding (or waiting for) the server's lock."""

    task_id: str
    work: Generation | Upscale
    duration: float
    started: float | None = None  # loop time
    previews: list[bytes] = field(default_factory=list, repr=False)
    interrupted: asyncio.Event = field(default_factory=asyncio.Event)
    fault_at_half: Fault | None = None

    def fraction(self, now: float) -> float:
        if self.started is None:
            return 0.0
        if self.duration <= 0:
            return 1.0
        return min(1.0, (now - self.started) / self.duration)

    def preview(self, now: float) -> tuple[int, bytes | None]:
        """The current live preview's id (1..PREVIEWS; 0: none yet) and PNG."""
        index = min(len(self.previews), int(self.fraction(now) * (PREVIEWS + 1)))
        return (index, self.previews[index - 1]) if index else (0, None)


# -- the server -----------------------------------------------------------------------------


class Emulator:
    """An A1111 `--api` server on a local port, one job at a time, with scriptable faults."""

    def __init__(
        self,
        *,
        duration: float = 2.0,
        auth: str | None = None,
        internal_progress: bool = True,
        live_previews: bool = True,
        samplers: Sequence[str] = DEFAULT_SAMPLERS,
        upscale_duration: float | None = None,
    ) -> None:
        """`duration`: seconds a generation holds the server once it has the lock;
        `upscale_duration` the same for extra-single-image (default a quarter of it).
        `auth`: `user:password` required on `/sdapi/*` (None: no auth). `samplers`: the names
        `/sdapi/v1/samplers` lists and txt2img accepts."""
        if duration < 0 or (upscale_duration is not None and upscale_duration < 0):
            raise ValueError("durations must be >= 0")
        self._credentials = parse_auth(auth)
        self.duration = duration
        self.upscale_duration = upscale_duration
        self.internal_progress = internal_progress
        self.live_previews = live_previews
        self.samplers = tuple(samplers)
        self.faults = FaultPlan()
        self.stats = Stats()
        self.base_url = ""
        self._host = "127.0.0.1"
        self._port = 0
        self._runner: web.AppRunner | None = None
        self._lock = asyncio.Lock()
        self._pending: dict[str, float] = {}  # task id → queued at (wall clock)
        self._current: Job | None = None
        self._finished: deque[str] = deque(maxlen=FINISHED_REMEMBERED)
        # The generation requests accepted, newest last, so tests can see what was sent.
        self.history: deque[Generation] = deque(maxlen=64)
        self._jobs: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Condition()

    def __repr__(self) -> str:  # never shows the credentials
        return f"<A1111 Emulator {self.base_url or 'not started'}>"

    # -- lifecycle ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[_fastapi_errors])
        api = self._api
        app.add_routes(
            [
                web.post("/sdapi/v1/txt2img", api("txt2img", self._txt2img)),
                web.post("/sdapi/v1/img2img", api("img2img", self._img2img)),
                web.post("/sdapi/v1/extra-single-image", api("extra-single-image", self._upscale)),
                web.post("/sdapi/v1/interrupt", api("interrupt", self._interrupt)),
                web.get("/sdapi/v1/progress", api("global-progress", self._global_progress)),
                web.get("/sdapi/v1/samplers", api("samplers", self._samplers)),
                web.get("/sdapi/v1/sd-models", api("sd-models", self._sd_models)),
                web.get("/sdapi/v1/upscalers", api("upscalers", self._upscalers)),
                web.post("/internal/progress", api("progress", self._progress, internal=True)),
                web.get("/internal/ping", api("ping", self._ping, internal=True)),
                web.post("/_emulator/faults", _control(self._control_fault)),
                web.post("/_emulator/down", _control(self._control_down)),
                web.post("/_emulator/settings", _control(self._control_settings)),
                web.get("/_emulator/stats", _control(self._control_stats)),
                web.post("/_emulator/reset", _control(self._control_reset)),
            ]
        )
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on host:port (0: any free port); returns the base URL."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        runner = web.AppRunner(
            self.app(), access_log=None, handler_cancellation=True, shutdown_timeout=SHUTDOWN_GRACE
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, backlog=256).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._host, self._port = host, runner.addresses[0][1]
        shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        self.base_url = f"http://{shown}:{self._port}"
        await self._notify()
        return self.base_url

    async def stop(self) -> None:
        """Stop listening and abandon every job, as a killed server would."""
        for task in list(self._background):
            task.cancel()
        await self.go_down()

    async def go_down(self) -> None:
        """Stop listening (connections are now refused) and drop every open connection and
        job: the server process died. `come_back()` listens on the same port again."""
        runner, self._runner = self._runner, None
        jobs = list(self._jobs)
        for job in jobs:
            job.cancel()
        if runner is not None:
            await runner.cleanup()
        for job in jobs:
            with contextlib.suppress(asyncio.CancelledError):
                await job
        self._pending.clear()
        self._current = None
        self._lock = asyncio.Lock()
        await self._notify()

    async def come_back(self) -> str:
        """Listen again on the port it had (the server was restarted)."""
        if not self._port:
            raise RuntimeError("the emulator never started")
        return await self.start(self._host, self._port)

    @property
    def is_up(self) -> bool:
        return self._runner is not None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def reset(self) -> None:
        """Forget faults, stats and history (running jobs carry on)."""
        self.faults.clear()
        self.stats.reset()
        self.history.clear()
        self._finished.clear()

    async def wait_until(self, predicate: Callable[[Emulator], bool]) -> None:
        """Return once `predicate(self)` holds; re-checked on every job start, finish, new
        live preview, poll and interrupt. Bound it with `asyncio.timeout`."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    @property
    def current_task(self) -> str | None:
        """The task id of the job running now, if any."""
        return self._current.task_id if self._current else None

    @property
    def queued_tasks(self) -> list[str]:
        return sorted(self._pending, key=self._pending.__getitem__)

    @property
    def preview_id(self) -> int:
        """The running job's current live preview (1..PREVIEWS; 0: none yet, or idle)."""
        if self._current is None:
            return 0
        return self._current.preview(asyncio.get_running_loop().time())[0]

    def _notify_soon(self) -> None:
        task = asyncio.ensure_future(self._notify())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- the common path: count, misbehave if scripted, authenticate -------------------------

    def _api(self, endpoint: str, handler: Handler, *, internal: bool = False) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if internal and not self.internal_progress:
                return _json_response(404, {"detail": "Not Found"})
            self.stats.requests[endpoint] += 1
            fault = self.faults.take(endpoint, after_start=False)
            if fault is not None:
                faulty = await self._misbehave(request, fault)
                if faulty is not None:
                    return faulty
            if not internal and not self._authorized(request):
                self.stats.auth_failures += 1
                return self._unauthorized(request)
            try:
                return await handler(request)
            except _Refusal as refusal:
                return _json_response(refusal.status, refusal.payload)

        return guarded

    def _authorized(self, request: web.Request) -> bool:
        if self._credentials is None:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected_user, expected_password = self._credentials
        # Constant-time like A1111's compare_digest.
        return _same(user, expected_user) and _same(password, expected_password)

    def _unauthorized(self, request: web.Request) -> web.Response:
        headers = {"WWW-Authenticate": "Basic"}
        if not request.headers.get("Authorization"):
            return _json_response(401, {"detail": "Not authenticated"}, headers=headers)
        refusal = _http_exception(401, "Incorrect username or password")
        return _json_response(401, refusal.payload, headers=headers)

    async def _misbehave(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        """The faulty reply, or None when the fault only delays the normal one."""
        self.stats.faults_fired[f"{fault.endpoint}/{fault.kind}"] += 1
        if fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
            return None
        if fault.kind == "status":
            return _json_response(
                fault.status, _internal_error("RuntimeError", fault.message).payload
            )
        await request.read()  # so closing does not make the kernel send a reset instead
        if request.transport is not None:
            request.transport.close()
        return web.Response()  # never sent: the transport is closed

    # -- generation --------------------------------------------------------------------------

    async def _txt2img(self, request: web.Request) -> web.StreamResponse:
        work = await self._read_generation(request, "txt2img")
        return await self._queue_and_run(request, "txt2img", work.task_id, work, self.duration)

    async def _img2img(self, request: web.Request) -> web.StreamResponse:
        work = await self._read_generation(request, "img2img")
        return await self._queue_and_run(request, "img2img", work.task_id, work, self.duration)

    async def _upscale(self, request: web.Request) -> web.StreamResponse:
        work = await _parse_upscale(await _json_body(request))
        duration = self.duration / 4 if self.upscale_duration is None else self.upscale_duration
        task_id = f"extras({uuid.uuid4().hex[:15]})"
        return await self._queue_and_run(request, "extra-single-image", task_id, work, duration)

    async def _read_generation(self, request: web.Request, kind: str) -> Generation:
        body = await _json_body(request)
        generation = _parse_generation(body, kind, self.samplers)
        self.history.append(generation)
        if generation.init_image is not None:
            try:
                await asyncio.to_thread(_inspect, generation.init_image)
            except ValueError:
                raise _http_exception(500, "Invalid encoded image") from None
        return generation

    async def _queue_and_run(
        self,
        request: web.Request,
        endpoint: str,
        task_id: str,
        work: Generation | Upscale,
        duration: float,
    ) -> web.StreamResponse:
        """Queue behind the lock and run in a task of its own, so the job goes on when the
        client leaves (A1111 runs it in a worker thread that never looks at the client)."""
        job = Job(
            task_id, work, duration, fault_at_half=self.faults.take(endpoint, after_start=True)
        )
        self._pending[task_id] = time.time()
        running = asyncio.ensure_future(self._run(job))
        self._jobs.add(running)
        running.add_done_callback(self._jobs.discard)
        await self._notify()
        reply = await asyncio.shield(running)
        if isinstance(reply, Fault):
            return await self._misbehave(request, reply) or web.Response()
        return reply

    async def _run(self, job: Job) -> web.StreamResponse | Fault:
        """Hold the lock for the job's duration; returns the reply, or the fault that
        strikes half-way."""
        lock = self._lock
        if lock.locked():
            self.stats.max_waiting = max(self.stats.max_waiting, len(self._pending))
        try:
            async with lock:
                self._pending.pop(job.task_id, None)
                if isinstance(job.work, Generation) and self.live_previews:
                    job.previews = await asyncio.to_thread(job.work.render_previews)
                loop = asyncio.get_running_loop()
                job.started = loop.time()
                # Previews appear as time passes: wake wait_until() callers when they do
                # (a little after, as asyncio may run a timer up to its resolution early).
                ticks = [
                    loop.call_later(job.duration * k / (PREVIEWS + 1) + 0.001, self._notify_soon)
                    for k in range(1, len(job.previews) + 1)
                ]
                self._current = job
                self.stats.jobs_started += 1
                self.stats.started_tasks.append(job.task_id)
                self.stats.running += 1
                self.stats.max_concurrent = max(self.stats.max_concurrent, self.stats.running)
                try:
                    await self._notify()
                    fault = job.fault_at_half
                    if fault is not None and fault.kind != "delay":
                        await self._interruptible(job, job.duration / 2)
                        return fault
                    if fault is not None:  # a slow generation: longer by `seconds`
                        self.stats.faults_fired[f"{fault.endpoint}/delay"] += 1
                    extra = fault.seconds if fault is not None else 0.0
                    await self._interruptible(job, job.duration + extra)
                    if job.interrupted.is_set():
                        self.stats.jobs_interrupted += 1
                    reply = await self._reply(job)
                    self.stats.jobs_finished += 1
                    return reply
                finally:
                    for tick in ticks:
                        tick.cancel()
                    self.stats.running -= 1
                    if self._current is job:
                        self._current = None
                    self._finished.append(job.task_id)
        except asyncio.CancelledError:
            self.stats.jobs_abandoned += 1
            raise
        finally:
            self._pending.pop(job.task_id, None)
            if self._lock is lock:
                await self._notify()

    @staticmethod
    async def _interruptible(job: Job, seconds: float) -> None:
        """Generate for `seconds`, or less if interrupted."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job.interrupted.wait(), seconds)

    async def _reply(self, job: Job) -> web.Response:
        work = job.work
        if isinstance(work, Upscale):
            image = await asyncio.to_thread(work.render)
            return _json_response(
                200,
                {
                    "image": base64.b64encode(image).decode("ascii"),
                    "html_info": f"<p>Postprocess upscale by: {work.upscaler}, "
                    f"to {work.width}x{work.height}</p>",
                },
            )
        images = await asyncio.to_thread(work.render_images) if work.send_images else []
        return _json_response(
            200,
            {
                "images": [base64.b64encode(i).decode("ascii") for i in images],
                "parameters": work.parameters,
                "info": work.info(SD_MODELS[0]),
            },
        )

    async def _interrupt(self, request: web.Request) -> web.StreamResponse:
        self.stats.interrupts += 1
        if self._current is not None:
            self._current.interrupted.set()
        await self._notify()
        return _json_response(200, {})

    # -- progress ----------------------------------------------------------------------------

    async def _progress(self, request: web.Request) -> web.StreamResponse:
        """modules/progress.py's progressapi."""
        body = await _json_body(request)
        task_id = body.get("id_task")
        last_preview = body.get("id_live_preview", -1)
        if not isinstance(task_id, str | None):
            raise _invalid("id_task", "str type expected", "type_error.str")
        if not _is_int(last_preview):
            raise _invalid("id_live_preview", "value is not a valid integer", "type_error.integer")
        if task_id is not None:
            self.stats.polls_by_task[task_id] += 1
        job = self._current
        queued = task_id in self._pending
        completed = task_id in self._finished
        if job is None or job.task_id != task_id:
            textinfo = "Waiting..."
            if queued and task_id is not None:
                order = self.queued_tasks
                textinfo = f"In queue: {order.index(task_id) + 1}/{len(order)}"
            await self._notify()
            return _json_response(
                200,
                {
                    "active": False,
                    "queued": queued,
                    "completed": completed,
                    "progress": None,
                    "eta": None,
                    "live_preview": None,
                    "id_live_preview": -1,
                    "textinfo": textinfo,
                },
            )
        now = asyncio.get_running_loop().time()
        fraction = job.fraction(now)
        elapsed = now - (job.started or now)
        eta = elapsed / fraction - elapsed if fraction > 0 else None
        preview_id, preview = job.preview(now)
        live_preview = None
        shown_id = last_preview
        if body.get("live_preview", True) is not False and preview and preview_id != last_preview:
            live_preview = "data:image/png;base64," + base64.b64encode(preview).decode("ascii")
            shown_id = preview_id
        await self._notify()
        return _json_response(
            200,
            {
                "active": True,
                "queued": queued,
                "completed": completed,
                "progress": fraction,
                "eta": eta,
                "live_preview": live_preview,
                "id_live_preview": shown_id,
                "textinfo": None,
            },
        )

    async def _global_progress(self, request: web.Request) -> web.StreamResponse:
        """api.py's progressapi: whatever the server runs now; `current_task` stays null as
        in A1111 (it is bound at import time there)."""
        self.stats.global_polls += 1
        await self._notify()
        skip_image = request.query.get("skip_current_image", "false").lower() in ("true", "1")
        job = self._current
        state: dict[str, Any] = {
            "skipped": False,
            "interrupted": False,
            "job": "",
            "job_count": 0,
            "job_timestamp": "0",
            "job_no": 0,
            "sampling_step": 0,
            "sampling_steps": 0,
        }
        if job is None:
            return _json_response(
                200,
                {
                    "progress": 0.0,
                    "eta_relative": 0.0,
                    "state": state,
                    "current_image": None,
                    "textinfo": None,
                    "current_task": None,
                },
            )
        now = asyncio.get_running_loop().time()
        fraction = job.fraction(now)
        steps = job.work.steps if isinstance(job.work, Generation) else 0
        state.update(
            interrupted=job.interrupted.is_set(),
            job="scripts_txt2img" if isinstance(job.work, Generation) else "extras",
            job_count=1,
            job_timestamp=time.strftime("%Y%m%d%H%M%S"),
            sampling_step=int(fraction * steps),
            sampling_steps=steps,
        )
        progress = min(1.0, 0.01 + fraction)
        elapsed = now - (job.started or now)
        _, preview = job.preview(now)
        return _json_response(
            200,
            {
                "progress": progress,
                "eta_relative": elapsed / progress - elapsed,
                "state": state,
                "current_image": (
                    base64.b64encode(preview).decode("ascii")
                    if preview and not skip_image
                    else None
                ),
                "textinfo": None,
                "current_task": None,
            },
        )

    # -- lists -------------------------------------------------------------------------------

    async def _samplers(self, request: web.Request) -> web.StreamResponse:
        items = [
            {
                "name": name,
                "aliases": [f"k_{name.lower().replace('+', 'p').replace(' ', '_')}"],
                "options": {"scheduler": "karras"} if name.endswith("Karras") else {},
            }
            for name in self.samplers
        ]
        return _json_response(200, items)

    async def _sd_models(self, request: web.Request) -> web.StreamResponse:
        return _json_response(200, list(SD_MODELS))

    async def _upscalers(self, request: web.Request) -> web.StreamResponse:
        items = [
            {
                "name": name,
                "model_name": None if scale is None else name,
                "model_path": None,
                "model_url": None,
                "scale": scale,
            }
            for name, scale in UPSCALERS
        ]
        return _json_response(200, items)

    async def _ping(self, request: web.Request) -> web.StreamResponse:
        return _json_response(200, {})

    # -- control routes ----------------------------------------------------------------------

    async def _control_fault(self, body: dict[str, Any]) -> dict[str, Any]:
        self.faults.add(Fault(**body))
        return {}

    async def _control_down(self, body: dict[str, Any]) -> dict[str, Any]:
        seconds = body.get("seconds", 1.0)
        _check(_is_number(seconds) and seconds >= 0, "seconds: a number >= 0")

        async def outage() -> None:
            await self.go_down()  # waits for this reply to go out (SHUTDOWN_GRACE)
            await asyncio.sleep(seconds)
            await self.come_back()

        task = asyncio.ensure_future(outage())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return {}

    async def _control_settings(self, body: dict[str, Any]) -> dict[str, Any]:
        if "duration" in body:
            _check(_is_number(body["duration"]) and body["duration"] >= 0, "duration: >= 0")
            self.duration = float(body["duration"])
        for name in ("internal_progress", "live_previews"):
            if name in body:
                _check(isinstance(body[name], bool), f"{name}: true or false")
                setattr(self, name, body[name])
        return {
            "duration": self.duration,
            "internal_progress": self.internal_progress,
            "live_previews": self.live_previews,
        }

    async def _control_stats(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            **self.stats.as_json(),
            "current_task": self.current_task,
            "queued_tasks": self.queued_tasks,
        }

    async def _control_reset(self, body: dict[str, Any]) -> dict[str, Any]:
        self.reset()
        return {}


# -- validation (the real server's field types, plus the emulator's bounds) -----------------


def _parse_generation(body: dict[str, Any], kind: str, samplers: Sequence[str]) -> Generation:
    """Validate like FastAPI (types, 422) then A1111 (sampler 400, init image 404)."""
    prompt = _str(body, "prompt", "")
    negative = _str(body, "negative_prompt", "")
    sampler = _str(body, "sampler_name", None) or _str(body, "sampler_index", "Euler")
    task_id = _str(body, "force_task_id", None) or f"task({uuid.uuid4().hex[:15]})"
    steps = _int(body, "steps", 50, 1, 150)
    width = _int(body, "width", 512, 64, 2048)
    height = _int(body, "height", 512, 64, 2048)
    batch_size = _int(body, "batch_size", 1, 1, 8)
    n_iter = _int(body, "n_iter", 1, 1, 8)
    if batch_size * n_iter > 8:
        raise _invalid("batch_size", "ensure batch_size × n_iter is at most 8", "value_error")
    seed = _int(body, "seed", -1, -1, MAX_SEED)
    subseed = _int(body, "subseed", -1, -1, MAX_SEED)
    subseed_strength = _float(body, "subseed_strength", 0.0, 0.0, 1.0)
    cfg_scale = _float(body, "cfg_scale", 7.0, 1.0, 30.0)
    denoising = _float(body, "denoising_strength", 0.75, 0.0, 1.0)
    save_images = _bool(body, "save_images", False)
    send_images = _bool(body, "send_images", True)
    for name in ("override_settings", "alwayson_scripts"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise _invalid(name, "value is not a valid dict", "type_error.dict")
    init_images = body.get("init_images")
    if init_images is not None and not isinstance(init_images, list):
        raise _invalid("init_images", "value is not a valid list", "type_error.list")
    if sampler not in samplers:
        raise _http_exception(400, "Sampler not found")
    init_image: bytes | None = None
    if kind == "img2img":
        if init_images is None:
            raise _http_exception(404, "Init image not found")
        if not init_images:
            raise _internal_error("IndexError", "list index out of range")
        init_image = _decode_image(init_images[0])
    parameters = {key: value for key, value in body.items() if key not in ("init_images", "mask")}
    return Generation(
        kind=kind,
        prompt=prompt,
        negative_prompt=negative,
        sampler_name=sampler,
        steps=steps,
        cfg_scale=cfg_scale,
        width=width - width % 8,
        height=height - height % 8,
        batch_size=batch_size,
        n_iter=n_iter,
        seed=random.randrange(MAX_SEED + 1) if seed == -1 else seed,
        subseed=random.randrange(MAX_SEED + 1) if subseed == -1 else subseed,
        subseed_strength=subseed_strength,
        task_id=task_id,
        save_images=save_images,
        send_images=send_images,
        init_image=init_image,
        denoising_strength=denoising,
        parameters=parameters,
    )


async def _parse_upscale(body: dict[str, Any]) -> Upscale:
    """ExtrasSingleImageRequest: upscaling_resize 1..8 (pydantic), then the image and the
    upscaler as run_extras checks them."""
    resize_mode = body.get("resize_mode", 0)
    if resize_mode not in (0, 1) or isinstance(resize_mode, bool):
        raise _invalid("resize_mode", "unexpected value; permitted: 0, 1", "value_error.const")
    factor = _float(body, "upscaling_resize", 2.0, 1.0, 8.0)
    upscaler = _str(body, "upscaler_1", "None")
    image = body.get("image", "")
    if not isinstance(image, str):
        raise _invalid("image", "str type expected", "type_error.str")
    names = [name for name, _ in UPSCALERS]
    if upscaler not in names:
        raise _internal_error("AssertionError", f"could not find upscaler named {upscaler}")
    source = _decode_image(image)
    try:
        width, height = await asyncio.to_thread(_inspect, source)
    except ValueError:
        raise _http_exception(500, "Invalid encoded image") from None
    if resize_mode == 1:
        size = (
            _int(body, "upscaling_resize_w", 512, 1, MAX_UPSCALED_SIDE),
            _int(body, "upscaling_resize_h", 512, 1, MAX_UPSCALED_SIDE),
        )
    else:
        size = (round(width * factor), round(height * factor))
    if max(size) > MAX_UPSCALED_SIDE:
        raise _internal_error("OutOfMemoryError", "emulated: CUDA out of memory")
    return Upscale(source=source, width=size[0], height=size[1], upscaler=upscaler)


def _str(body: dict[str, Any], name: str, default: str | None) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _invalid(name, "str type expected", "type_error.str")
    return value


def _int(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not _is_int(value):
        raise _invalid(name, "value is not a valid integer", "type_error.integer")
    return _bounded(name, value, low, high)


def _float(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if not _is_number(value) or not math.isfinite(value):
        raise _invalid(name, "value is not a valid float", "type_error.float")
    return float(_bounded(name, value, low, high))


def _bool(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _invalid(name, "value could not be parsed to a boolean", "type_error.bool")
    return value


def _bounded(name: str, value: Any, low: float, high: float) -> Any:
    if value < low:
        raise _invalid(
            name,
            f"ensure this value is greater than or equal to {_fmt(low)}",
            "value_error.number.not_ge",
            limit_value=low,
        )
    if value > high:
        raise _invalid(
            name,
            f"ensure this value is less than or equal to {_fmt(high)}",
            "value_error.number.not_le",
            limit_value=high,
        )
    return value


def _decode_image(value: object) -> bytes:
    """api.py's decode_base64_to_image, minus URLs: a data: URI or bare base64."""
    if not isinstance(value, str):
        raise _invalid("init_images", "str type expected", "type_error.str")
    if value.startswith("data:image/"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _http_exception(500, "Invalid encoded image") from None


def _inspect(data: bytes) -> tuple[int, int]:
    """The size of the image in `data`, fully decoded; ValueError when unreadable or huge."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_SOURCE_PIXELS:
                raise ValueError("too large")
            image.load()
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(str(exc)) from None
    return width, height


# -- pictures -------------------------------------------------------------------------------


def _colours(prompt: str, seed: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    return (digest[0], digest[1], digest[2]), (digest[3], digest[4], digest[5])


def _picture(work: Generation, seed: int, subseed: int, width: int, height: int) -> Image.Image:
    """A diagonal gradient from (prompt, seed) — moved towards the subseed's colours by
    `subseed_strength` — captioned with the seed, and the init image blended in for img2img."""
    strength = work.subseed_strength
    pairs = zip(_colours(work.prompt, seed), _colours(work.prompt, subseed), strict=True)
    first, second = (
        tuple(round(a + (b - a) * strength) for a, b in zip(own, other, strict=True))
        for own, other in pairs
    )
    picture = Image.composite(
        Image.new("RGB", (256, 256), second), Image.new("RGB", (256, 256), first), _diagonal()
    ).resize((width, height), Image.Resampling.BILINEAR)
    if work.init_image is not None:
        with Image.open(io.BytesIO(work.init_image)) as init:
            source = init.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
        picture = Image.blend(source, picture, work.denoising_strength)
    size = max(8, min(width, height) // 16)
    ImageDraw.Draw(picture).text(
        (size, size),
        f"seed {seed}\n{width}x{height}",
        font=ImageFont.load_default(size=size),
        fill=(255, 255, 255),
        stroke_width=max(1, size // 12),
        stroke_fill=(0, 0, 0),
    )
    return picture


@functools.cache
def _diagonal() -> Image.Image:
    """A 256² mask rising from 0 (top left) to 255 (bottom right)."""
    down = Image.linear_gradient("L")
    return ImageChops.add(down, down.transpose(Image.Transpose.ROTATE_270), scale=2.0)


def _grid(pictures: list[Image.Image]) -> Image.Image:
    columns = math.ceil(math.sqrt(len(pictures)))
    rows = math.ceil(len(pictures) / columns)
    width, height = pictures[0].size
    grid = Image.new("RGB", (columns * width, rows * height))
    for index, picture in enumerate(pictures):
        grid.paste(picture, ((index % columns) * width, (index // columns) * height))
    return grid


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


# -- helpers --------------------------------------------------------------------------------


@web.middleware
async def _fastapi_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Missing routes and wrong methods answer as FastAPI does, in JSON."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return _json_response(404, {"detail": "Not Found"})
    except web.HTTPMethodNotAllowed:
        return _json_response(405, {"detail": "Method Not Allowed"})


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw or b"null")
    except ValueError as exc:
        raise _Refusal(
            422,
            {"detail": [{"loc": ["body", 0], "msg": str(exc), "type": "value_error.jsondecode"}]},
        ) from None
    if not isinstance(body, dict):
        raise _invalid("__root__", "value is not a valid dict", "type_error.dict")
    return body


def _json_response(
    status: int, payload: Any, *, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(payload).encode(),
        content_type="application/json",
        headers=headers,
    )


def _control(handler: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> Handler:
    """A control route: JSON object in (none for GET), `{"ok": true, ...}` or HTTP 400 out."""

    async def route(request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.read() or b"{}")
            _check(isinstance(body, dict), "the body must be a JSON object")
            result = await handler(body)
        except (ValueError, TypeError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        return web.json_response({"ok": True, **result})

    return route


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check(ok: bool, problem: str) -> None:
    if not ok:
        raise ValueError(problem)


# -- command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m a1111.emulator",
        description="A local emulator of an AUTOMATIC1111 WebUI --api server.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (%(default)s)")
    parser.add_argument("--port", type=int, default=7860, help="0 picks a free port")
    parser.add_argument(
        "--auth", default=None, help="user:password required on /sdapi/* (as --api-auth)"
    )
    parser.add_argument(
        "--duration", type=float, default=2.0, help="seconds one generation takes (%(default)s)"
    )
    parser.add_argument(
        "--no-internal-progress",
        action="store_true",
        help="serve no /internal/* routes, like a server run with --nowebui",
    )
    return parser


async def _serve(args: argparse.Namespace) -> None:
    emulator = Emulator(
        duration=args.duration,
        auth=args.auth,
        internal_progress=not args.no_internal_progress,
    )
    url = await emulator.start(args.host, args.port)
    print(f"A1111 emulator listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.duration < 0:
        raise SystemExit("--duration must be >= 0")
    try:
        parse_auth(args.auth)
    except ValueError as exc:
        raise SystemExit(f"--auth: {exc}") from None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
