"""A faithful local emulator of the Omniinfer v2 API (aiohttp), for tests and the bot's sandbox.

    python -m omni.emulator --host 127.0.0.1 --port 0 [--key K] [--credit N] [--duration S]
                            [--shared-pictures]
    python -m omni.emulator --api v3 ...    (the Novita v3 emulator, `omni.v3.emulator`)

It answers like the real API for everything the client uses: the JSON envelope (HTTP 200 with
`data: null` for application errors, on every endpoint) and its codes — 4 bad key (progress
too), 1 invalid parameter (a body that is not JSON, or a field of the wrong JSON type), 2
unknown model or refiner (names match exactly), 6 out of range, 8 unknown sampler, 7 out of
credit, 3 unknown task — tasks moving 0 → 1 → 2 over `duration` seconds with a float
`progress`, `eta_relative` and preview images, `info` as an A1111-style JSON string with the
real seed, and real PNGs served from its own S3-style URLs, which expire (then 403 with an
XML body, as a presigned link does). img2img results are the init image resized to the
requested size and blended towards the prompt's picture by `denoising_strength`. It accepts
what the official SDK sends: `null` for unset
optional fields, a float `cfg_scale`. Tasks are timed on an injectable clock, so in-process
tests can step time.

The record's oddities a client must survive are scripted per task (`NextTask`): `info` as
`""`, `null` or non-JSON text; `current_images` as `null` or `[""]`; a status number the API
documents nowhere while the task runs.

Tests script misbehaviour in-process (`emulator.faults`) or, for an emulator in another
process, through unauthenticated control routes:

    POST /_emulator/faults      {"endpoint", "kind", "status", "seconds", "code", "times",
                                 "after_accept"}  (see `Fault`)
    POST /_emulator/tasks/next  {"outcome": "ok"|"fail"|"timeout", "reason", "duration",
                                 "info", "previews", "running_status"}  (see `NextTask`)
    POST /_emulator/credit      {"images": N | null}
    GET  /_emulator/stats       request counts, tasks, images, polls per task, credit left
    POST /_emulator/reset       back to the state it started in
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import dataclasses
import json
import random
import re
import signal
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from aiohttp import web
from yarl import URL

from omni import emulator_images as images
from omni import rules

DEFAULT_KEY = "sandbox"
KEY_HEADER = "X-Omni-Key"
ENDPOINTS = ("txt2img", "img2img", "upscale", "progress", "models", "image")
SUBMIT_ENDPOINTS = frozenset({"txt2img", "img2img", "upscale"})
FAULT_KINDS = ("http_status", "delay", "drop", "malformed", "code")
OUTCOMES = ("ok", "fail", "timeout")
INFO_SHAPES = ("json", "empty", "null", "text")  # how a successful task's `info` comes back
PREVIEW_SHAPES = ("urls", "null", "blank")  # how a running task's `current_images` come back
DEFAULT_SAMPLER = "Euler a"  # A1111's, used when `sampler_name` is null (as the SDK sends it)
UPSCALERS = (
    "R-ESRGAN 4x+",
    "R-ESRGAN 4x+ Anime6B",
    "ESRGAN_4x",
    "Lanczos",
    "Nearest",
    "LDSR",
    "ScuNET GAN",
    "SwinIR 4x",
)
MAX_SEED = 2**32 - 1
MAX_UPSCALED_SIDE = 4096
PREVIEW_FROM = 0.3  # a running task shows a preview once it is this far along
TASK_RETENTION = 3600.0  # a final task is answered for at least this long, and until it expires
PRUNE_EVERY = 60.0  # seconds (emulator clock) between sweeps for tasks to forget
PRERENDER_LEAD = 0.5  # seconds before a task ends that its images start being drawn
SHUTDOWN_GRACE = 0.5  # stop() does not wait out a scripted delay
MALFORMED_BODY = b'{"code": 0, "data": '
_IMAGE_NAME = re.compile(r"(?P<task>[0-9a-f-]{36})-(?P<index>\d+|preview)\.png")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Model:
    name: str
    hash: str
    type: str

    def as_json(self) -> dict[str, str]:
        """Shaped like the SDK's ModelInfo; `sd_name` is what `model_name` takes."""
        return {"name": self.name, "sd_name": self.name, "hash": self.hash, "type": self.type}


MODELS: tuple[Model, ...] = (
    Model(rules.SDXL_MODEL, "31e35c80fc", "checkpoint"),
    Model("sd_xl_refiner_1.0.safetensors", "7440042bbd", "checkpoint"),
    Model("v1-5-pruned-emaonly.safetensors", "6ce0161689", "checkpoint"),
    Model("sdxl_vae.safetensors", "235745af8d", "vae"),
    Model("vae-ft-mse-840000-ema-pruned.safetensors", "c6a580b13a", "vae"),
    Model("control_v11p_sd15_canny.pth", "d14c016b", "controlnet"),
)
CHECKPOINTS = {model.name: model for model in MODELS if model.type == "checkpoint"}


class _Refused(Exception):
    """An application error: answered with HTTP 200 and a non-zero envelope code."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


# -- faults and scripted outcomes ----------------------------------------------------------


@dataclass
class Fault:
    """One scripted misbehaviour of an endpoint, striking its next `times` requests.

    kinds: `http_status` (HTTP `status` with an HTML body, as a proxy in front of the API
    answers), `delay` (sleep `seconds`, then answer normally), `drop` (close the connection
    without any reply), `malformed` (HTTP 200 JSON that does not parse), `code` (an envelope
    with the non-zero `code`). With `after_accept` (submits only) the task is created and
    billed first, and only the reply misbehaves: the case where a client must not resubmit.

    Note for `drop` on GETs: aiohttp's client (3.10+) silently retries an idempotent request
    once when the server disconnects, so a GET only sees the drop with `times=2` or more.
    """

    endpoint: str
    kind: str
    status: int = 500
    seconds: float = 1.0
    code: int = -1
    times: int = 1
    after_accept: bool = False

    def __post_init__(self) -> None:
        _check(self.endpoint in ENDPOINTS, f"endpoint: one of {', '.join(ENDPOINTS)}")
        _check(self.kind in FAULT_KINDS, f"kind: one of {', '.join(FAULT_KINDS)}")
        _check(_is_int(self.status) and 400 <= self.status <= 599, "status: from 400 to 599")
        _check(_is_number(self.seconds) and self.seconds >= 0, "seconds: a number >= 0")
        _check(_is_int(self.code) and self.code != 0, "code: a non-zero whole number")
        _check(_is_int(self.times) and self.times >= 1, "times: a whole number >= 1")
        _check(isinstance(self.after_accept, bool), "after_accept: true or false")
        _check(
            not self.after_accept or self.endpoint in SUBMIT_ENDPOINTS,
            "after_accept: only for txt2img, img2img and upscale",
        )


@dataclass(frozen=True)
class NextTask:
    """How the next created task ends, how long it takes, and the recorded oddities of the
    real API's progress replies that it shows.

    `info`: a successful task's `info` as A1111's JSON string ("json"), `""` ("empty", as in
    Novita's progress example), `null`, or plain infotext that is not JSON ("text").
    `previews`: a running task's `current_images` as URLs ("urls"), `null`, or `[""]`
    ("blank"). `running_status`: the status reported while running (1; any other number is
    one the API documents nowhere, which a client must not treat as final).
    """

    outcome: str = "ok"
    reason: str = ""
    duration: float | None = None
    info: str = "json"
    previews: str = "urls"
    running_status: int = 1

    def __post_init__(self) -> None:
        _check(self.outcome in OUTCOMES, f"outcome: one of {', '.join(OUTCOMES)}")
        _check(isinstance(self.reason, str), "reason: text")
        _check(
            self.duration is None or (_is_number(self.duration) and self.duration >= 0),
            "duration: a number >= 0 or null",
        )
        _check(self.info in INFO_SHAPES, f"info: one of {', '.join(INFO_SHAPES)}")
        _check(self.previews in PREVIEW_SHAPES, f"previews: one of {', '.join(PREVIEW_SHAPES)}")
        _check(
            _is_int(self.running_status) and self.running_status not in (0, 2, 3, 4),
            "running_status: a whole number other than 0, 2, 3, 4",
        )


class FaultPlan:
    """Queued faults (first added, first struck) and scripts for the next tasks' outcomes."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._next_tasks: deque[NextTask] = deque()

    def add(self, fault: Fault) -> None:
        """Queue a copy of `fault`, so the caller's object is never used up."""
        self._faults.append(dataclasses.replace(fault))

    def take(self, endpoint: str, *, after_accept: bool = False) -> Fault | None:
        """The fault that strikes this request, if any, counting it down."""
        for fault in self._faults:
            if fault.endpoint == endpoint and fault.after_accept == after_accept:
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def script_next_task(self, script: NextTask) -> None:
        self._next_tasks.append(script)

    def fail_next_task(
        self, reason: str = "emulated failure", *, duration: float | None = None
    ) -> None:
        """The next task ends with status 3 and this `failed_reason`."""
        self.script_next_task(NextTask("fail", reason, duration))

    def timeout_next_task(self, *, duration: float | None = None) -> None:
        """The next task ends with status 4."""
        self.script_next_task(NextTask("timeout", "", duration))

    def next_task(self) -> NextTask:
        return self._next_tasks.popleft() if self._next_tasks else NextTask()

    def clear(self) -> None:
        self._faults.clear()
        self._next_tasks.clear()


@dataclass
class Stats:
    """What the emulator was asked, so tests can prove what a client did (and did not) do."""

    requests: Counter[str] = field(default_factory=Counter)  # by endpoint, faults included
    polls_by_task: Counter[str] = field(default_factory=Counter)
    faults_fired: Counter[str] = field(default_factory=Counter)  # "endpoint/kind"
    tasks_created: int = 0
    images_generated: int = 0  # images billed: txt2img images, and one per upscale

    def reset(self) -> None:
        """Zero in place, so references held by tests stay live."""
        for counter in (self.requests, self.polls_by_task, self.faults_fired):
            counter.clear()
        self.tasks_created = self.images_generated = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "polls_by_task": dict(self.polls_by_task),
            "faults_fired": dict(self.faults_fired),
            "tasks_created": self.tasks_created,
            "images_generated": self.images_generated,
        }


# -- what a task does ----------------------------------------------------------------------


class Job(Protocol):
    """A validated request: how many images it bills and how to draw them."""

    @property
    def images(self) -> int: ...

    @property
    def ttl(self) -> float | None: ...

    @property
    def previews(self) -> bool: ...

    def info(self, submitted_wall: float) -> str: ...

    def render_image(self, index: int) -> bytes: ...

    def render_preview(self) -> bytes: ...


@dataclass(frozen=True)
class Txt2Img:
    prompt: str
    negative_prompt: str
    model: Model
    sampler: str
    steps: int
    cfg_scale: float
    width: int
    height: int
    batch_size: int
    n_iter: int
    seed: int  # resolved: never -1
    clip_skip: int
    ttl: float | None
    previews: bool

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Txt2Img:
        """Validate in the real API's order; raises `_Refused` naming the first bad field."""
        prompt = body.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise _Refused(1, f"prompt: invalid parameter, must be a string (got {prompt!r})")
        if not prompt or not prompt.strip():
            raise _Refused(6, "prompt: required, a non-empty string")
        negative = body.get("negative_prompt") or ""
        if not isinstance(negative, str):
            raise _Refused(1, "negative_prompt: invalid parameter, must be a string")
        model = CHECKPOINTS.get(str(body.get("model_name") or ""))
        if model is None:  # names match exactly: no extension or case guessing
            raise _Refused(2, f"model_name: {body.get('model_name')!r} does not exist")
        _check_refiner(body.get("sd_refiner"))
        sampler = body.get("sampler_name")
        sampler = DEFAULT_SAMPLER if sampler is None else sampler
        if sampler not in rules.API_SAMPLERS:
            raise _Refused(8, f"sampler_name: {sampler!r} does not exist")
        extra = body.get("extra") or {}
        if not isinstance(extra, dict):
            raise _Refused(1, "extra: invalid parameter, must be an object")
        seed = _whole(body, "seed", -1, -1, MAX_SEED, "-1 or [0, 4294967295]")
        ttl = _number(body, "img_expire_ttl", 0, 0, rules.API_MAX_EXPIRE_TTL, "[0, 604800]")
        return cls(
            prompt=prompt,
            negative_prompt=negative,
            model=model,
            sampler=sampler,
            steps=_whole(body, "steps", 20, rules.API_STEPS.low, rules.API_STEPS.high, "(0, 50]"),
            cfg_scale=float(_number(body, "cfg_scale", 7, 0, 30, "(0, 30]", above_low=True)),
            width=_whole(body, "width", 512, 1, rules.API_DIMENSION.high, "(0, 2048]"),
            height=_whole(body, "height", 512, 1, rules.API_DIMENSION.high, "(0, 2048]"),
            batch_size=max(1, _whole(body, "batch_size", 1, 0, 8, "[0, 8]")),
            n_iter=max(1, _whole(body, "n_iter", 1, 0, 8, "[0, 8]")),
            seed=random.randrange(MAX_SEED + 1) if seed == -1 else seed,
            clip_skip=_whole(body, "clip_skip", 1, 1, 12, "[1, 12]"),
            ttl=float(ttl) or None,
            previews=extra.get("enable_progress_info", True) is not False,
        )

    @property
    def images(self) -> int:
        return self.batch_size * self.n_iter

    @property
    def seeds(self) -> list[int]:
        """A1111's all_seeds: one per image, counting up from the seed."""
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.images)]

    def render_image(self, index: int) -> bytes:
        return images.render(self.prompt, self.seeds[index], self.width, self.height)

    def render_preview(self) -> bytes:
        return images.preview(self.prompt, self.seed, self.width, self.height)

    def info(self, submitted_wall: float) -> str:
        """The A1111 `info` JSON string, as Omniinfer returns it."""
        seeds = self.seeds
        subseeds = [random.Random(seed).randrange(MAX_SEED + 1) for seed in seeds]
        return json.dumps(
            {
                "prompt": self.prompt,
                "all_prompts": [self.prompt] * self.images,
                "negative_prompt": self.negative_prompt,
                "all_negative_prompts": [self.negative_prompt] * self.images,
                "seed": self.seed,
                "all_seeds": seeds,
                "subseed": subseeds[0],
                "all_subseeds": subseeds,
                "subseed_strength": 0,
                "width": self.width,
                "height": self.height,
                "sampler_name": self.sampler,
                "cfg_scale": self.cfg_scale,
                "steps": self.steps,
                "batch_size": self.batch_size,
                "restore_faces": False,
                "face_restoration_model": None,
                "sd_model_hash": self.model.hash,
                "seed_resize_from_w": -1,
                "seed_resize_from_h": -1,
                "denoising_strength": 0,
                "extra_generation_params": {},
                "index_of_first_image": 0,
                "infotexts": [self._infotext(seed) for seed in seeds],
                "styles": [],
                "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(submitted_wall)),
                "clip_skip": self.clip_skip,
                "is_using_inpainting_conditioning": False,
            }
        )

    def _infotext(self, seed: int) -> str:
        negative = f"\nNegative prompt: {self.negative_prompt}" if self.negative_prompt else ""
        return (
            f"{self.prompt}{negative}\nSteps: {self.steps}, Sampler: {self.sampler}, "
            f"CFG scale: {self.cfg_scale}, Seed: {seed}, Size: {self.width}x{self.height}, "
            f"Model hash: {self.model.hash}, Model: {self.model.name.rsplit('.', 1)[0]}, "
            f"Clip skip: {self.clip_skip}, Version: omni-emulator"
        )


@dataclass(frozen=True)
class Img2Img:
    """txt2img's fields and rules, plus the starting picture (`init_images`, base64; the first
    is used) and `denoising_strength` 0..1 (default 0.75, the SDK's)."""

    base: Txt2Img
    init_image: bytes = field(repr=False)
    denoising_strength: float

    @classmethod
    async def from_body(cls, body: dict[str, Any]) -> Img2Img:
        base = Txt2Img.from_body(body)
        init_images = body.get("init_images")
        if init_images is not None and not isinstance(init_images, list):
            raise _Refused(1, "init_images: invalid parameter, must be a list of base64 images")
        if not init_images:
            raise _Refused(6, "init_images: required, one base64-encoded image")
        init_image = _base64_image(init_images[0], "init_images")
        try:
            await asyncio.to_thread(images.inspect, init_image)
        except ValueError as exc:
            raise _Refused(6, f"init_images: {exc}") from None
        strength = _number(body, "denoising_strength", 0.75, 0, 1, "[0, 1]")
        resize_mode = body.get("resize_mode")
        if resize_mode is not None and (not _is_int(resize_mode) or not 0 <= resize_mode <= 3):
            raise _Refused(6, "resize_mode: 0, 1, 2 or 3")
        if body.get("mask") is not None:
            raise _Refused(10, "mask: inpainting is not emulated")
        return cls(base=base, init_image=init_image, denoising_strength=float(strength))

    @property
    def images(self) -> int:
        return self.base.images

    @property
    def ttl(self) -> float | None:
        return self.base.ttl

    @property
    def previews(self) -> bool:
        return self.base.previews

    def render_image(self, index: int) -> bytes:
        base = self.base
        return images.img2img(
            self.init_image,
            base.prompt,
            base.seeds[index],
            base.width,
            base.height,
            self.denoising_strength,
        )

    def render_preview(self) -> bytes:
        return self.base.render_preview()

    def info(self, submitted_wall: float) -> str:
        info = json.loads(self.base.info(submitted_wall))
        info["denoising_strength"] = self.denoising_strength
        return json.dumps(info)


@dataclass(frozen=True)
class Upscale:
    source: bytes = field(repr=False)
    width: int  # of the result
    height: int
    upscaler: str
    images: int = 1
    ttl: float | None = None
    previews: bool = False

    @classmethod
    async def from_body(cls, body: dict[str, Any]) -> Upscale:
        """Validate; the image is decoded in a thread, as a big PNG takes a while."""
        upscaler = body.get("upscaler_1", rules.DEFAULT_UPSCALER)
        if upscaler not in UPSCALERS:
            raise _Refused(6, f"upscaler_1: {upscaler!r} is not one of {', '.join(UPSCALERS)}")
        resize_mode = body.get("resize_mode", 0)
        if resize_mode not in (0, 1) or isinstance(resize_mode, bool):
            raise _Refused(6, "resize_mode: 0 (scale by upscaling_resize) or 1 (to w×h)")
        source = _base64_image(body.get("image"))
        try:
            width, height = await asyncio.to_thread(images.inspect, source)
        except ValueError as exc:
            raise _Refused(6, f"image: {exc}") from None
        if resize_mode == 1:
            size = (
                _whole(body, "upscaling_resize_w", None, 1, MAX_UPSCALED_SIDE, "[1, 4096]"),
                _whole(body, "upscaling_resize_h", None, 1, MAX_UPSCALED_SIDE, "[1, 4096]"),
            )
        else:
            factor = _number(body, "upscaling_resize", 2.0, 1, 4, "[1, 4]")
            size = (round(width * factor), round(height * factor))
        if max(size) > MAX_UPSCALED_SIDE:
            raise _Refused(
                6,
                f"upscaling_resize: the result would be {size[0]}x{size[1]}; "
                f"at most {MAX_UPSCALED_SIDE} px a side",
            )
        return cls(source=source, width=size[0], height=size[1], upscaler=upscaler)

    def render_image(self, index: int) -> bytes:
        return images.upscale(self.source, self.width, self.height)

    def render_preview(self) -> bytes:
        raise LookupError("upscales have no preview")

    def info(self, submitted_wall: float) -> str:
        return ""


@dataclass
class Task:
    """One accepted request and its schedule on the emulator's clock."""

    id: str
    job: Job
    created: float  # emulator clock
    submitted_wall: float  # time.time(), for the API's date strings
    duration: float
    queued_for: float
    script: NextTask
    ttl: float
    info: str

    @property
    def final_at(self) -> float:
        return self.created + self.duration

    @property
    def expires_at(self) -> float:
        return self.final_at + self.ttl

    @property
    def preview_at(self) -> float:
        return self.created + self.queued_for + PREVIEW_FROM * (self.duration - self.queued_for)

    @property
    def forget_at(self) -> float:
        return self.final_at + max(self.ttl, TASK_RETENTION)

    def has_image(self, index: str, now: float) -> bool:
        """Whether `{id}-{index}.png` exists (yet): previews while running, results after."""
        if index == "preview":
            return self.job.previews and now >= self.preview_at
        return self.script.outcome == "ok" and now >= self.final_at and int(index) < self.job.images

    def wall(self, offset: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.submitted_wall + offset))


# -- the server ----------------------------------------------------------------------------


class Emulator:
    """The Omniinfer v2 API on a local port, with scriptable faults and outcomes."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_KEY,
        credit: int | None = None,
        duration: float = 3.0,
        queue_fraction: float = 0.2,
        image_ttl: float = 3600.0,
        public_host: str | None = None,
        draw_each_image: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`credit`: images the account can still generate (None: unlimited). `duration`:
        seconds from submit to final, the first `queue_fraction` of it queued. `image_ttl`:
        lifetime of result URLs unless a request sets `img_expire_ttl`. `public_host`: the
        host name put in `base_url` and result URLs, when clients reach it by another name.
        `draw_each_image=False` serves one picture per size to every task: for load
        benchmarks, where drawing hundreds of PNGs (~35 ms of CPU each) would compete with
        the client being measured.
        """
        if not api_key:
            raise ValueError("api_key must not be empty")
        if credit is not None and credit < 0:
            raise ValueError("credit must be >= 0 or None")
        if duration < 0 or not 0 <= queue_fraction < 1 or image_ttl <= 0:
            raise ValueError("need duration >= 0, 0 <= queue_fraction < 1, image_ttl > 0")
        self.api_key = api_key
        self.credit = credit
        self.duration = duration
        self.queue_fraction = queue_fraction
        self.image_ttl = image_ttl
        self.public_host = public_host
        self.draw_each_image = draw_each_image
        self.clock = clock
        self.faults = FaultPlan()
        self.stats = Stats()
        self.base_url = ""
        self._initial_credit = credit
        self._tasks: dict[str, Task] = {}
        self._cache = images.PngCache(max_items=1024)
        self._prerenders: set[asyncio.Task[None]] = set()
        self._next_prune = float("-inf")
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:  # never shows the key
        return f"<Emulator {self.base_url or 'not started'}>"

    # -- lifecycle ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        """A web application serving this emulator (start() runs one on a port)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes(
            [
                web.post("/v2/txt2img", self._api("txt2img", self._txt2img)),
                web.post("/v2/img2img", self._api("img2img", self._img2img)),
                web.post("/v2/upscale", self._api("upscale", self._upscale)),
                web.get("/v2/progress", self._api("progress", self._progress)),
                web.get("/v2/models", self._api("models", self._models)),
                web.get("/images/{name}", self._api("image", self._image, auth=False)),
                web.post("/_emulator/faults", _control(self._control_fault)),
                web.post("/_emulator/tasks/next", _control(self._control_next_task)),
                web.post("/_emulator/credit", _control(self._control_credit)),
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
            self.app(),
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=SHUTDOWN_GRACE,
        )
        await runner.setup()
        await web.TCPSite(runner, host, port, backlog=1024).start()
        self._runner = runner
        bound_port = runner.addresses[0][1]
        public = self.public_host or _reachable(host)
        self.base_url = str(URL.build(scheme="http", host=public, port=bound_port))
        return self.base_url

    async def stop(self) -> None:
        for prerender in list(self._prerenders):
            prerender.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def task_final_time(self, task_id: str) -> float:
        """When (emulator clock) the task became, or becomes, final; KeyError if unknown."""
        return self._tasks[task_id].final_at

    def reset(self) -> None:
        """Forget tasks, faults, scripts and stats; restore the starting credit."""
        self.faults.clear()
        self.stats.reset()
        self.credit = self._initial_credit
        self._tasks.clear()
        self._cache.clear()

    # -- the common path: count, misbehave if scripted, authenticate -------------------------

    def _api(self, endpoint: str, handler: Handler, *, auth: bool = True) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            self.stats.requests[endpoint] += 1
            fault = self.faults.take(endpoint)
            if fault is not None:
                faulty = await self._misbehave(request, fault)
                if faulty is not None:
                    return faulty
            if auth and request.headers.get(KEY_HEADER) != self.api_key:
                return _envelope(4, f"invalid {KEY_HEADER}: missing or not a valid key")
            try:
                return await handler(request)
            except _Refused as refused:
                return _envelope(refused.code, refused.msg)

        return guarded

    async def _misbehave(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        """The faulty reply, or None when the fault only delays the normal one."""
        self.stats.faults_fired[f"{fault.endpoint}/{fault.kind}"] += 1
        if fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
            return None
        if fault.kind == "http_status":
            return web.Response(
                status=fault.status,
                text=f"<html><body><h1>{fault.status} emulated error</h1></body></html>",
                content_type="text/html",
            )
        if fault.kind == "malformed":
            return web.Response(body=MALFORMED_BODY, content_type="application/json")
        if fault.kind == "code":
            return _envelope(fault.code, f"emulated error (code {fault.code})")
        return await _drop(request)

    # -- the API -----------------------------------------------------------------------------

    async def _txt2img(self, request: web.Request) -> web.StreamResponse:
        job = Txt2Img.from_body(await _json_object(request))
        return await self._accept(request, "txt2img", job)

    async def _img2img(self, request: web.Request) -> web.StreamResponse:
        job = await Img2Img.from_body(await _json_object(request))
        return await self._accept(request, "img2img", job)

    async def _upscale(self, request: web.Request) -> web.StreamResponse:
        job = await Upscale.from_body(await _json_object(request))
        return await self._accept(request, "upscale", job)

    async def _accept(self, request: web.Request, endpoint: str, job: Job) -> web.StreamResponse:
        """Bill and create the task, then reply — or misbehave after accepting, if scripted."""
        task = self._create(job)
        fault = self.faults.take(endpoint, after_accept=True)
        if fault is not None:
            faulty = await self._misbehave(request, fault)
            if faulty is not None:
                return faulty
        return _envelope(0, "", {"task_id": task.id})

    def _create(self, job: Job) -> Task:
        if self.credit is not None:
            if job.images > self.credit:
                raise _Refused(
                    7, f"insufficient credit: {job.images} image(s) asked, {self.credit} left"
                )
            self.credit -= job.images
        script = self.faults.next_task()
        duration = self.duration if script.duration is None else script.duration
        now, wall = self.clock(), time.time()
        task = Task(
            id=str(uuid.uuid4()),
            job=job,
            created=now,
            submitted_wall=wall,
            duration=duration,
            queued_for=duration * self.queue_fraction,
            script=script,
            ttl=job.ttl or self.image_ttl,
            info=job.info(wall),
        )
        self._tasks[task.id] = task
        if script.outcome == "ok":
            prerender = asyncio.ensure_future(self._prerender(task))
            self._prerenders.add(prerender)
            prerender.add_done_callback(self._prerenders.discard)
        self.stats.tasks_created += 1
        self.stats.images_generated += job.images
        self._forget_old_tasks(now)
        return task

    async def _prerender(self, task: Task) -> None:
        """Like the real service, have the images drawn by the time the task reports success,
        so a download measures the client, not the drawing."""
        await asyncio.sleep(max(0.0, task.final_at - PRERENDER_LEAD - self.clock()))
        for index in range(task.job.images):
            await self._picture(task, str(index))

    async def _picture(self, task: Task, index: str) -> bytes:
        """Image `index` ("preview" or a number) of `task`, drawn once and cached."""
        job, preview = task.job, index == "preview"
        if not self.draw_each_image and isinstance(job, Txt2Img):
            draw = images.preview if preview else images.render
            key: tuple[object, ...] = ("shared", preview, job.width, job.height)
            render: Callable[[], bytes] = partial(draw, "emulator", 0, job.width, job.height)
        else:
            key = (task.id, index)
            render = job.render_preview if preview else partial(job.render_image, int(index))
        return await self._cache.get(key, render)

    def _forget_old_tasks(self, now: float) -> None:
        """Drop tasks long past expiry (they then answer code 3), so memory stays bounded."""
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY
        for task_id in [t.id for t in self._tasks.values() if now >= t.forget_at]:
            del self._tasks[task_id]
            self.stats.polls_by_task.pop(task_id, None)

    async def _progress(self, request: web.Request) -> web.StreamResponse:
        task = self._tasks.get(request.query.get("task_id", ""))
        if task is None:
            raise _Refused(3, "task_id does not exist")
        self.stats.polls_by_task[task.id] += 1
        return _envelope(0, "", self._progress_data(task, self.clock(), self._origin(request)))

    def _progress_data(self, task: Task, now: float, origin: str) -> dict[str, Any]:
        """The progress object at `now`: cheap, as it is what every poll costs."""
        elapsed = now - task.created
        data: dict[str, Any] = {
            "status": 0,
            "progress": 0.0,
            # Never 0 before the end (rounding must not make a running task look finished).
            "eta_relative": max(0.001, round(task.duration - elapsed, 3)),
            "imgs": None,
            "info": "",
            "failed_reason": "",
            "current_images": None,
            "submit_time": task.wall(0),
            "execution_time": "",
            "txt2img_time": "",
            "finish_time": "",
        }
        if elapsed < task.queued_for:
            return data
        data["execution_time"] = task.wall(task.queued_for)
        if elapsed < task.duration:
            running_for = task.duration - task.queued_for
            data.update(
                status=task.script.running_status,
                progress=round((elapsed - task.queued_for) / running_for, 4),
            )
            if task.script.previews == "blank":
                data["current_images"] = [""]
            elif task.script.previews == "urls" and task.has_image("preview", now):
                data["current_images"] = [_image_url(origin, task.id, "preview")]
            return data
        finished = task.wall(task.duration)
        data.update(eta_relative=0, txt2img_time=finished, finish_time=finished)
        if task.script.outcome == "fail":
            data.update(status=3, failed_reason=task.script.reason or "emulated failure")
        elif task.script.outcome == "timeout":
            data.update(status=4, failed_reason=task.script.reason or "task timed out")
        else:
            urls = [_image_url(origin, task.id, str(i)) for i in range(task.job.images)]
            data.update(status=2, progress=1, imgs=urls, info=_shaped_info(task))
        return data

    async def _models(self, request: web.Request) -> web.StreamResponse:
        wanted = request.query.get("type")
        models = [m.as_json() for m in MODELS if not wanted or m.type == wanted]
        return _envelope(0, "", {"models": models})

    async def _image(self, request: web.Request) -> web.StreamResponse:
        """S3-style: no auth; 404 for keys that do not exist (yet) and for expired ones."""
        match = _IMAGE_NAME.fullmatch(request.match_info["name"])
        task = self._tasks.get(match["task"]) if match else None
        now = self.clock()
        if match is None or task is None or not task.has_image(match["index"], now):
            return _s3_error("NoSuchKey", "The specified key does not exist.")
        if now >= task.expires_at:  # a presigned link past its lifetime: S3 says 403
            return _s3_error("AccessDenied", "Request has expired", status=403)
        data = await self._picture(task, match["index"])
        return web.Response(body=data, content_type="image/png")

    def _origin(self, request: web.Request) -> str:
        """Where result URLs point: base_url, or the request's own origin for a bare app()."""
        return self.base_url or str(request.url.origin())

    # -- control routes ----------------------------------------------------------------------

    async def _control_fault(self, body: dict[str, Any]) -> dict[str, Any]:
        self.faults.add(Fault(**body))
        return {}

    async def _control_next_task(self, body: dict[str, Any]) -> dict[str, Any]:
        self.faults.script_next_task(NextTask(**body))
        return {}

    async def _control_credit(self, body: dict[str, Any]) -> dict[str, Any]:
        left = body.get("images")
        _check(left is None or (_is_int(left) and left >= 0), "images: a whole number >= 0 or null")
        self.credit = left
        return {"credit": self.credit}

    async def _control_stats(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**self.stats.as_json(), "credit": self.credit}

    async def _control_reset(self, body: dict[str, Any]) -> dict[str, Any]:
        self.reset()
        return {}


# -- helpers -------------------------------------------------------------------------------


def _control(
    handler: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
) -> Handler:
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


def _shaped_info(task: Task) -> str | None:
    """`info` as the task's script says the API gave it this time."""
    shape = task.script.info
    if shape == "empty":
        return ""
    if shape == "null":
        return None
    if shape == "text" and task.info:
        infotexts = json.loads(task.info).get("infotexts") or [""]
        return str(infotexts[0])  # A1111's human-readable infotext: not JSON
    return task.info


def _envelope(code: int, msg: str, data: Any = None) -> web.Response:
    """The API's envelope, with Content-Type exactly application/json."""
    body = json.dumps({"code": code, "msg": msg, "data": data}).encode()
    return web.Response(body=body, content_type="application/json")


def _s3_error(code: str, message: str, *, status: int = 404) -> web.Response:
    return web.Response(
        status=status,
        text=f"<Error><Code>{code}</Code><Message>{message}</Message></Error>",
        content_type="application/xml",
    )


async def _drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without a byte of reply: the client sees the server disconnect.

    The body is read first, since closing with unread bytes makes the kernel send a TCP reset,
    which the client would report differently. The response returned is never sent: aiohttp
    finds the transport closing and quietly gives up on it.
    """
    await request.read()
    if request.transport is not None:
        request.transport.close()
    return web.Response()


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read())
    except ValueError:
        raise _Refused(1, "invalid JSON body") from None
    if not isinstance(body, dict):
        raise _Refused(1, "invalid JSON body: expected an object")
    return body


def _check_refiner(refiner: object) -> None:
    """`sd_refiner` ({checkpoint, switch_at}, or null): the checkpoint's name must match one
    exactly, else code 2 worded as the real API words it (sd-webui-cloud-inference #50)."""
    if refiner is None:
        return
    if not isinstance(refiner, dict):
        raise _Refused(1, "sd_refiner: invalid parameter, must be an object")
    checkpoint = refiner.get("checkpoint")
    if not isinstance(checkpoint, str) or checkpoint not in CHECKPOINTS:
        raise _Refused(2, f"Refiner checkpoint model `{checkpoint}` not allowed")
    _number(refiner, "switch_at", 0.8, 0, 1, "(0, 1)", above_low=True)


def _base64_image(value: object, name: str = "image") -> bytes:
    if not isinstance(value, str) or not value:
        raise _Refused(6, f"{name}: required, a base64-encoded image")
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _Refused(6, f"{name}: not valid base64") from None


def _whole(
    body: dict[str, Any], name: str, default: int | None, low: float, high: float, shown: str
) -> int:
    """An integer field (None or absent: `default`), else code 6 naming the field."""
    value = body.get(name)
    value = default if value is None else value
    if value is None:
        raise _Refused(6, f"{name}: required, a whole number in {shown}")
    if not _is_int(value):  # a Go server cannot even decode it into its int field
        raise _Refused(1, f"{name}: invalid parameter, must be a whole number (got {value!r})")
    if not low <= value <= high:
        raise _Refused(6, f"{name}: must be a whole number in {shown} (got {value!r})")
    return value


def _number(
    body: dict[str, Any],
    name: str,
    default: float,
    low: float,
    high: float,
    shown: str,
    *,
    above_low: bool = False,
) -> float:
    """A numeric field (None or absent: `default`), else code 6 naming the field."""
    value = body.get(name)
    value = default if value is None else value
    if not _is_number(value):
        raise _Refused(1, f"{name}: invalid parameter, must be a number (got {value!r})")
    if not low <= value <= high or (above_low and value == low):
        raise _Refused(6, f"{name}: must be a number in {shown} (got {value!r})")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check(ok: bool, problem: str) -> None:
    if not ok:
        raise ValueError(problem)


def _image_url(origin: str, task_id: str, index: str) -> str:
    return f"{origin}/images/{task_id}-{index}.png"


def _reachable(host: str) -> str:
    """A wildcard bind address is not somewhere to connect to; loopback is."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


# -- command line --------------------------------------------------------------------------


def _non_negative(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0 (got {text})")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m omni.emulator",
        description="A local emulator of the Omniinfer v2 API, for tests and sandboxes.",
    )
    parser.add_argument(
        "--api",
        choices=("v2", "v3"),
        default="v2",
        help="which API to emulate: Omniinfer v2 (default) or Novita v3",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (%(default)s)")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument(
        "--key",
        default=DEFAULT_KEY,
        help="the one X-Omni-Key accepted; any other gets envelope code 4 (default: sandbox)",
    )
    parser.add_argument(
        "--credit",
        type=_non_negative(int),
        default=None,
        help="images the account can still generate; then code 7 (default: unlimited)",
    )
    parser.add_argument(
        "--duration",
        type=_non_negative(float),
        default=3.0,
        help="seconds a task takes from submit to final (%(default)s)",
    )
    parser.add_argument(
        "--public-host", default=None, help="host name to put in URLs (default: the bind host)"
    )
    parser.add_argument(
        "--shared-pictures",
        action="store_true",
        help="serve one picture per size to every task (load benchmarks: no drawing per task)",
    )
    return parser


async def _serve(args: argparse.Namespace) -> None:
    emulator = Emulator(
        api_key=args.key,
        credit=args.credit,
        duration=args.duration,
        public_host=args.public_host,
        draw_each_image=not args.shared_pictures,
    )
    url = await emulator.start(args.host, args.port)
    print(f"Omniinfer emulator listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGINT/SIGTERM. `--api v3` hands the other arguments to the Novita v3
    emulator (imported only then, so the v2 emulator runs without it)."""
    dispatch = argparse.ArgumentParser(add_help=False)
    dispatch.add_argument("--api", choices=("v2", "v3"), default="v2")
    chosen, rest = dispatch.parse_known_args(sys.argv[1:] if argv is None else argv)
    if chosen.api == "v3":
        from omni.v3 import emulator as v3_emulator

        v3_emulator.main(rest)
        return
    args = _parser().parse_args(rest)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
