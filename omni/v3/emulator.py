"""A faithful local emulator of Novita's v3 async image API (aiohttp), for tests and sandboxes.

    python -m omni.emulator --api v3 ...        (or main() here)
        --host 127.0.0.1 --port 0 --key K --duration S [--balance N] [--images-per-minute N]

What it answers like the real API:
- `POST /v3/async/txt2img` and `/v3/async/img2img` with `Authorization: Bearer <key>` (the
  bare key too, as Novita's JS SDK sends it) and `{"extra": {...}, "request": {...}}`;
  validated with the reference's ranges; HTTP 200 `{"task_id"}`.
- `GET /v3/async/task-result?task_id=` → `{"task": {task_id, task_type, status, reason, eta,
  progress_percent}, "images": [...], "extra": {"seed": "<string>", "debug_info": {...}}}`,
  moving QUEUED → PROCESSING → SUCCEED (or FAILED) over `duration` seconds. As in the
  reference's example, a finished task reports `eta` 0 and `progress_percent` 0.
- Type drift: `extra.seed` and the debug timings are strings; `image_url_ttl` cycles through
  3600, "3600" and "0"; with `string_numbers` `eta` and `progress_percent` are strings too.
- Errors: non-2xx `{"code", "reason", "message", "metadata"}`: 403 `INVALID_API_KEY`, 400
  `INVALID_REQUEST_BODY` (the message names `request.<field>`), 429 `RATE_LIMIT_EXCEEDED`
  (more than `images_per_minute` images accepted in the last 60 s; Novita's default is 20),
  `BILLING_BALANCE_NOT_ENOUGH` (status `billing_status`: 400 as in the reference's table, 403
  as one report says), 404 `TASK_NOT_FOUND` (never existed, forgotten, or evicted an hour
  after it ended).
- Result images: real PNGs (or JPEG/WebP when asked) at the requested size, from presigned-
  style URLs on the emulator itself; an expired URL answers 403 with an S3 XML body.

Not emulated: webhooks, LoRAs/embeddings/refiner/hires-fix (accepted, ignored), NSFW
detection, `/v3/model`, `/v3/user`. Whether a 429 carries `Retry-After` is not documented;
the emulator sends one (whole seconds until the window has room) unless `send_retry_after`
is off.

Tests script misbehaviour in-process (`emulator.faults`, attributes) or, for an emulator in
another process, through unauthenticated control routes:

    POST /_emulator/faults        {"endpoint", "kind", "status", "seconds", "times",
                                   "after_accept", "reason", "message"}  (see `Fault`)
    POST /_emulator/tasks/next    {"outcome": "ok"|"fail", "reason", "duration"}
    POST /_emulator/tasks/forget  {"task_id"}            → later polls: 404 TASK_NOT_FOUND
    POST /_emulator/balance       {"images": N | null}
    POST /_emulator/settings      {"images_per_minute", "billing_status", "string_numbers",
                                   "send_retry_after", "duration"} (any subset)
    GET  /_emulator/stats         requests, tasks, images, polls per task, rate-limited, ...
    POST /_emulator/reset         back to the state it started in
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hashlib
import hmac
import io
import json
import math
import random
import re
import secrets
import signal
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeGuard

from aiohttp import web
from PIL import Image
from yarl import URL

from omni import emulator_images as images
from omni import rules
from omni.v3 import models

DEFAULT_KEY = "sandbox"
DEFAULT_IMAGES_PER_MINUTE = 20  # Novita's default txt2img limit
RATE_WINDOW = 60.0
ENDPOINTS = ("txt2img", "img2img", "task-result", "image")
SUBMIT_ENDPOINTS = frozenset({"txt2img", "img2img"})
FAULT_KINDS = ("http_status", "refuse", "delay", "drop", "malformed", "unknown_status")
OUTCOMES = ("ok", "fail")
TASK_RETENTION = 3600.0  # a final task is answered for this long (emulator clock), then 404
PRUNE_EVERY = 60.0
PRERENDER_LEAD = 0.5  # seconds before a task ends that its images start being drawn
SHUTDOWN_GRACE = 0.5
MAX_PROMPT = 8192  # the reference gives no limit; this only bounds memory
MALFORMED_BODY = b'{"task": {"status": '
TTL_DRIFT: tuple[int | str, ...] = (3600, "3600", "0")
CHECKPOINTS = frozenset(
    {
        rules.SDXL_MODEL,
        "sd_xl_refiner_1.0.safetensors",
        "v1-5-pruned-emaonly.safetensors",
    }
)
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_IMAGE_NAME = re.compile(r"(?P<task>[0-9a-f-]{36})_(?P<index>\d+)\.(?P<ext>png|jpeg|webp)")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Refused(Exception):
    """An API error: answered with `status` and Novita's error body."""

    def __init__(
        self, status: int, reason: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = headers or {}

    def response(self) -> web.Response:
        body = {"code": self.status, "reason": self.reason, "message": self.message, "metadata": {}}
        return web.json_response(body, status=self.status, headers=self.headers)


def _invalid(name: str, problem: str) -> _Refused:
    return _Refused(400, "INVALID_REQUEST_BODY", f"request.{name}: {problem}")


# -- faults and scripted outcomes ----------------------------------------------------------


@dataclass
class Fault:
    """One scripted misbehaviour of an endpoint, striking its next `times` requests.

    kinds: `http_status` (HTTP `status` with an HTML body, as a proxy in front of the API
    answers), `refuse` (HTTP `status` with Novita's error body holding `reason` and
    `message`), `delay` (sleep `seconds`, then answer normally), `drop` (close the connection
    without a reply), `malformed` (HTTP 200 that is not JSON), `unknown_status` (task-result
    only: the task reads `TASK_STATUS_UNKNOWN`). With `after_accept` (submits only) the task
    is created and billed first and only the reply misbehaves: a client must not resubmit.

    Note for `drop` on GETs: aiohttp's client silently retries an idempotent request once
    when the server disconnects, so a GET only sees the drop with `times=2` or more.
    """

    endpoint: str
    kind: str
    status: int = 500
    seconds: float = 1.0
    times: int = 1
    after_accept: bool = False
    reason: str = ""
    message: str = ""

    def __post_init__(self) -> None:
        _check(self.endpoint in ENDPOINTS, f"endpoint: one of {', '.join(ENDPOINTS)}")
        _check(self.kind in FAULT_KINDS, f"kind: one of {', '.join(FAULT_KINDS)}")
        _check(_is_int(self.status) and 400 <= self.status <= 599, "status: from 400 to 599")
        _check(_is_number(self.seconds) and self.seconds >= 0, "seconds: a number >= 0")
        _check(_is_int(self.times) and self.times >= 1, "times: a whole number >= 1")
        _check(isinstance(self.after_accept, bool), "after_accept: true or false")
        _check(isinstance(self.reason, str) and isinstance(self.message, str), "reason: text")
        _check(
            not self.after_accept or self.endpoint in SUBMIT_ENDPOINTS,
            "after_accept: only for txt2img and img2img",
        )
        _check(
            self.kind != "unknown_status" or self.endpoint == "task-result",
            "unknown_status: only for task-result",
        )


@dataclass(frozen=True)
class NextTask:
    """How the next created task ends (`reason` for a failure), and how long it takes."""

    outcome: str = "ok"
    reason: str = ""
    duration: float | None = None

    def __post_init__(self) -> None:
        _check(self.outcome in OUTCOMES, f"outcome: one of {', '.join(OUTCOMES)}")
        _check(isinstance(self.reason, str), "reason: text")
        _check(
            self.duration is None or (_is_number(self.duration) and self.duration >= 0),
            "duration: a number >= 0 or null",
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
        """The next task ends `TASK_STATUS_FAILED` with this `reason`."""
        self.script_next_task(NextTask("fail", reason, duration))

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
    refusals: Counter[str] = field(default_factory=Counter)  # by reason
    auth_schemes: Counter[str] = field(default_factory=Counter)  # "bearer" / "bare"
    tasks_created: int = 0
    images_generated: int = 0

    def reset(self) -> None:
        """Zero in place, so references held by tests stay live."""
        for counter in (
            self.requests,
            self.polls_by_task,
            self.faults_fired,
            self.refusals,
            self.auth_schemes,
        ):
            counter.clear()
        self.tasks_created = self.images_generated = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "polls_by_task": dict(self.polls_by_task),
            "faults_fired": dict(self.faults_fired),
            "refusals": dict(self.refusals),
            "auth_schemes": dict(self.auth_schemes),
            "tasks_created": self.tasks_created,
            "images_generated": self.images_generated,
        }


# -- what a task makes ---------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """A validated request. `seed` is resolved (never -1); `source` is img2img's input."""

    task_type: str  # "TXT_TO_IMG" | "IMG_TO_IMG"
    prompt: str
    negative_prompt: str
    model_name: str
    width: int
    height: int
    image_num: int
    steps: int
    seed: int
    guidance_scale: float
    sampler_name: str
    clip_skip: int
    image_type: str
    strength: float | None = None
    source: bytes | None = field(default=None, repr=False)

    @classmethod
    async def from_body(cls, body: dict[str, Any], task_type: str) -> Job:
        """Validate like the real API; raises `_Refused` (400) naming the first bad field."""
        extra = body.get("extra", {})
        if not isinstance(extra, dict):
            raise _Refused(400, "INVALID_REQUEST_BODY", "extra: must be an object")
        image_type = extra.get("response_image_type", "png")
        if image_type not in models.IMAGE_TYPES:
            raise _Refused(
                400,
                "INVALID_REQUEST_BODY",
                f"extra.response_image_type: one of {', '.join(models.IMAGE_TYPES)}",
            )
        request = body.get("request")
        if not isinstance(request, dict):
            raise _Refused(400, "INVALID_REQUEST_BODY", "request: required, an object")
        model_name = request.get("model_name")
        if model_name not in CHECKPOINTS:
            raise _invalid("model_name", f"{model_name!r} is not a known checkpoint")
        prompt = request.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > MAX_PROMPT:
            raise _invalid("prompt", f"required, 1 to {MAX_PROMPT} characters")
        negative = request.get("negative_prompt") or ""
        if not isinstance(negative, str) or len(negative) > MAX_PROMPT:
            raise _invalid("negative_prompt", f"text of at most {MAX_PROMPT} characters")
        width = _whole(request, "width", None, models.API_DIMENSION)
        height = _whole(request, "height", None, models.API_DIMENSION)
        image_num = _whole(request, "image_num", None, models.API_IMAGE_NUM)
        steps = _whole(request, "steps", None, models.API_STEPS)
        seed = request.get("seed", -1)
        if not _is_int(seed) or not (seed == -1 or 0 <= seed <= models.MAX_SEED):
            raise _invalid("seed", f"-1 or a whole number in [0, {models.MAX_SEED}]")
        guidance = _number(request, "guidance_scale", None, models.API_GUIDANCE_SCALE)
        sampler = request.get("sampler_name")
        if sampler not in models.API_SAMPLERS:
            raise _invalid("sampler_name", f"{sampler!r} is not a supported sampler")
        clip_skip = _whole(request, "clip_skip", 1, models.API_CLIP_SKIP)
        strength: float | None = None
        source: bytes | None = None
        if task_type == "IMG_TO_IMG":
            source = _base64_image(request.get("image_base64"))
            try:
                await asyncio.to_thread(images.inspect, source)
            except ValueError as exc:
                raise _invalid("image_base64", str(exc)) from None
            strength = float(_number(request, "strength", 0.5, models.API_STRENGTH))
        return cls(
            task_type=task_type,
            prompt=prompt,
            negative_prompt=negative,
            model_name=model_name,
            width=width,
            height=height,
            image_num=image_num,
            steps=steps,
            seed=random.randrange(models.MAX_SEED + 1) if seed == -1 else seed,
            guidance_scale=float(guidance),
            sampler_name=sampler,
            clip_skip=clip_skip,
            image_type=image_type,
            strength=strength,
            source=source,
        )

    def render(self, index: int) -> bytes:
        """Image `index`: one seed for the batch (as Novita reports), each picture captioned
        with its place so a person can tell them apart; img2img blends in the source."""
        caption = f"{self.prompt} [{index + 1}/{self.image_num}]"
        png = images.render(caption, self.seed, self.width, self.height)
        if self.source is None and self.image_type == "png":
            return png
        with Image.open(io.BytesIO(png)) as drawn:
            picture = drawn.convert("RGB")
        if self.source is not None and self.strength is not None:
            with Image.open(io.BytesIO(self.source)) as source:
                resized = source.convert("RGB").resize(picture.size, Image.Resampling.BILINEAR)
            picture = Image.blend(resized, picture, self.strength)
        buffer = io.BytesIO()
        picture.save(buffer, {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[self.image_type])
        return buffer.getvalue()

    def request_info(self) -> str:
        """The JSON string Novita puts in `extra.debug_info.request_info`."""
        return json.dumps(
            {
                "model": self.model_name,
                "prompts": [self.prompt],
                "negative_prompts": [self.negative_prompt],
                "seeds": [self.seed],
                "height": self.height,
                "width": self.width,
                "guidance_scale": self.guidance_scale,
                "num_images_per_prompt": self.image_num,
                "num_inference_steps": self.steps,
                "sampler_name": self.sampler_name,
                "clip_skip": self.clip_skip,
            }
        )


@dataclass
class Task:
    """One accepted request and its schedule on the emulator's clock."""

    id: str
    job: Job
    created: float  # emulator clock
    submitted_wall: float  # time.time(), for the millisecond timestamps
    duration: float
    queued_for: float
    script: NextTask
    image_ttl: float

    @property
    def final_at(self) -> float:
        return self.created + self.duration

    @property
    def expires_at(self) -> float:
        return self.final_at + self.image_ttl

    @property
    def forget_at(self) -> float:
        return self.final_at + max(self.image_ttl, TASK_RETENTION)

    def has_image(self, index: int, now: float) -> bool:
        return self.script.outcome == "ok" and now >= self.final_at and index < self.job.image_num

    def wall_ms(self, offset: float) -> str:
        return str(int((self.submitted_wall + offset) * 1000))


# -- the server ----------------------------------------------------------------------------


class Emulator:
    """Novita's v3 async image API on a local port, with scriptable faults and outcomes."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_KEY,
        duration: float = 3.0,
        balance: int | None = None,
        images_per_minute: int | None = DEFAULT_IMAGES_PER_MINUTE,
        billing_status: int = 400,
        string_numbers: bool = False,
        send_retry_after: bool = True,
        queue_fraction: float = 0.2,
        image_ttl: float = 3600.0,
        public_host: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`duration`: seconds from submit to final, the first `queue_fraction` queued.
        `balance`: images the account can still pay for (None: unlimited).
        `images_per_minute`: the rate limit (None: none). `billing_status`: the HTTP status of
        `BILLING_BALANCE_NOT_ENOUGH` (400 or 403). `string_numbers`: send `eta` and
        `progress_percent` as strings. `image_ttl`: seconds result URLs stay valid.
        `public_host`: the host put in `base_url` and image URLs. `clock`: seconds, monotonic;
        tests step it to move tasks, the rate window and URL expiry without sleeping.
        """
        if not api_key:
            raise ValueError("api_key must not be empty")
        if balance is not None and balance < 0:
            raise ValueError("balance must be >= 0 or None")
        if images_per_minute is not None and images_per_minute < 1:
            raise ValueError("images_per_minute must be >= 1 or None")
        if duration < 0 or not 0 <= queue_fraction < 1 or image_ttl <= 0:
            raise ValueError("need duration >= 0, 0 <= queue_fraction < 1, image_ttl > 0")
        self.api_key = api_key
        self.duration = duration
        self.balance = balance
        self.images_per_minute = images_per_minute
        self.billing_status = billing_status
        self.string_numbers = string_numbers
        self.send_retry_after = send_retry_after
        self.queue_fraction = queue_fraction
        self.image_ttl = image_ttl
        self.public_host = public_host
        self.clock = clock
        self.faults = FaultPlan()
        self.stats = Stats()
        self.base_url = ""
        self._initial = (duration, balance, images_per_minute, billing_status, string_numbers)
        self._initial_retry_after = send_retry_after
        self._signing_key = secrets.token_bytes(16)
        self._tasks: dict[str, Task] = {}
        self._window: deque[tuple[float, int]] = deque()  # (accepted at, images)
        self._cache = images.PngCache(max_items=256)
        self._prerenders: set[asyncio.Task[None]] = set()
        self._next_prune = float("-inf")
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:  # never shows the key
        return f"<Novita v3 Emulator {self.base_url or 'not started'}>"

    # -- lifecycle ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes(
            [
                web.post("/v3/async/txt2img", self._api("txt2img", self._txt2img)),
                web.post("/v3/async/img2img", self._api("img2img", self._img2img)),
                web.get("/v3/async/task-result", self._api("task-result", self._task_result)),
                web.get("/v3-output/{name}", self._api("image", self._image, auth=False)),
                web.post("/_emulator/faults", _control(self._control_fault)),
                web.post("/_emulator/tasks/next", _control(self._control_next_task)),
                web.post("/_emulator/tasks/forget", _control(self._control_forget)),
                web.post("/_emulator/balance", _control(self._control_balance)),
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
        await web.TCPSite(runner, host, port).start()
        self._runner = runner
        public = self.public_host or _reachable(host)
        self.base_url = str(URL.build(scheme="http", host=public, port=runner.addresses[0][1]))
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

    def reset(self) -> None:
        """Forget tasks, faults, scripts, stats and the rate window; restore the settings."""
        self.faults.clear()
        self.stats.reset()
        (
            self.duration,
            self.balance,
            self.images_per_minute,
            self.billing_status,
            self.string_numbers,
        ) = self._initial
        self.send_retry_after = self._initial_retry_after
        self._tasks.clear()
        self._window.clear()
        self._cache.clear()

    def forget(self, task_id: str) -> bool:
        """Drop a task as if Novita had evicted it; its polls then answer TASK_NOT_FOUND."""
        return self._tasks.pop(task_id, None) is not None

    def task_final_time(self, task_id: str) -> float:
        """When (emulator clock) the task became, or becomes, final; KeyError if unknown."""
        return self._tasks[task_id].final_at

    def task_expiry_time(self, task_id: str) -> float:
        """When (emulator clock) the task's image URLs expire; KeyError if unknown."""
        return self._tasks[task_id].expires_at

    # -- the common path: count, misbehave if scripted, authenticate -------------------------

    def _api(self, endpoint: str, handler: Handler, *, auth: bool = True) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            self.stats.requests[endpoint] += 1
            fault = self.faults.take(endpoint)
            if fault is not None and fault.kind != "unknown_status":
                faulty = await self._misbehave(request, fault)
                if faulty is not None:
                    return faulty
            try:
                if auth:
                    self._authenticate(request)
                if fault is not None and fault.kind == "unknown_status":
                    self.stats.faults_fired[f"{fault.endpoint}/{fault.kind}"] += 1
                    return await self._task_result(request, unknown=True)
                return await handler(request)
            except _Refused as refused:
                self.stats.refusals[refused.reason] += 1
                return refused.response()

        return guarded

    def _authenticate(self, request: web.Request) -> None:
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), self.api_key):
            self.stats.auth_schemes["bearer"] += 1
            return
        if hmac.compare_digest(given.strip(), self.api_key):
            self.stats.auth_schemes["bare"] += 1
            return
        raise _Refused(403, "INVALID_API_KEY", "invalid api key")

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
        if fault.kind == "refuse":
            return _Refused(fault.status, fault.reason, fault.message).response()
        if fault.kind == "malformed":
            return web.Response(body=MALFORMED_BODY, content_type="application/json")
        return await _drop(request)

    # -- submits -----------------------------------------------------------------------------

    async def _txt2img(self, request: web.Request) -> web.StreamResponse:
        job = await Job.from_body(await _json_object(request), "TXT_TO_IMG")
        return await self._accept(request, "txt2img", job)

    async def _img2img(self, request: web.Request) -> web.StreamResponse:
        job = await Job.from_body(await _json_object(request), "IMG_TO_IMG")
        return await self._accept(request, "img2img", job)

    async def _accept(self, request: web.Request, endpoint: str, job: Job) -> web.StreamResponse:
        """Rate-limit, bill and create the task, then reply (or misbehave, if scripted)."""
        now = self.clock()
        self._check_rate(now, job.image_num)
        if self.balance is not None:
            if job.image_num > self.balance:
                raise _Refused(
                    self.billing_status,
                    "BILLING_BALANCE_NOT_ENOUGH",
                    f"balance not enough: {job.image_num} image(s) asked, {self.balance} left",
                )
            self.balance -= job.image_num
        task = self._create(job, now)
        fault = self.faults.take(endpoint, after_accept=True)
        if fault is not None:
            faulty = await self._misbehave(request, fault)
            if faulty is not None:
                return faulty
        return web.json_response({"task_id": task.id})

    def _check_rate(self, now: float, wanted: int) -> None:
        """Sliding 60 s window of accepted images; refuses (429) what would exceed it."""
        while self._window and now - self._window[0][0] >= RATE_WINDOW:
            self._window.popleft()
        limit = self.images_per_minute
        if limit is None:
            return
        used = sum(count for _, count in self._window)
        if used + wanted <= limit:
            self._window.append((now, wanted))
            return
        # When will enough of the window have slid out for `wanted` more?
        wait = RATE_WINDOW
        freed = 0
        for accepted_at, count in self._window:
            freed += count
            if used - freed + wanted <= limit:
                wait = accepted_at + RATE_WINDOW - now
                break
        headers = {"Retry-After": str(max(1, math.ceil(wait)))} if self.send_retry_after else {}
        raise _Refused(
            429,
            "RATE_LIMIT_EXCEEDED",
            f"rate limit exceeded: {limit} images per minute",
            headers,
        )

    def _create(self, job: Job, now: float) -> Task:
        script = self.faults.next_task()
        duration = self.duration if script.duration is None else script.duration
        task = Task(
            id=str(uuid.uuid4()),
            job=job,
            created=now,
            submitted_wall=time.time(),
            duration=duration,
            queued_for=duration * self.queue_fraction,
            script=script,
            image_ttl=self.image_ttl,
        )
        self._tasks[task.id] = task
        if script.outcome == "ok":
            prerender = asyncio.ensure_future(self._prerender(task))
            self._prerenders.add(prerender)
            prerender.add_done_callback(self._prerenders.discard)
        self.stats.tasks_created += 1
        self.stats.images_generated += job.image_num
        self._forget_old_tasks(now)
        return task

    async def _prerender(self, task: Task) -> None:
        """Have the images drawn by the time the task succeeds, as the real service does."""
        await asyncio.sleep(max(0.0, task.final_at - PRERENDER_LEAD - self.clock()))
        for index in range(task.job.image_num):
            await self._cache.get((task.id, index), partial(task.job.render, index))

    def _forget_old_tasks(self, now: float) -> None:
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY
        for task_id in [t.id for t in self._tasks.values() if now >= t.forget_at]:
            del self._tasks[task_id]
            self.stats.polls_by_task.pop(task_id, None)

    # -- task-result and images --------------------------------------------------------------

    async def _task_result(self, request: web.Request, *, unknown: bool = False) -> web.Response:
        now = self.clock()
        self._forget_old_tasks(now)
        task_id = request.query.get("task_id", "")
        task = self._tasks.get(task_id)
        if task is None or now >= task.forget_at:
            raise _Refused(404, "TASK_NOT_FOUND", f"task {task_id[:64]!r} not found")
        self.stats.polls_by_task[task.id] += 1
        return web.json_response(self._result_body(task, now, self._origin(request), unknown))

    def _result_body(self, task: Task, now: float, origin: str, unknown: bool) -> dict[str, Any]:
        elapsed = now - task.created
        remaining = max(0.0, task.duration - elapsed)
        status, percent, reason = "TASK_STATUS_QUEUED", 0, ""
        if unknown:
            status = "TASK_STATUS_UNKNOWN"
        elif elapsed >= task.duration and task.script.outcome == "ok":
            status = "TASK_STATUS_SUCCEED"
        elif elapsed >= task.duration:
            status, reason = "TASK_STATUS_FAILED", task.script.reason or "emulated failure"
        elif elapsed >= task.queued_for:
            running_for = task.duration - task.queued_for
            status = "TASK_STATUS_PROCESSING"
            percent = min(99, int(100 * (elapsed - task.queued_for) / running_for))
        eta = 0 if status in ("TASK_STATUS_SUCCEED", "TASK_STATUS_FAILED") else math.ceil(remaining)
        body: dict[str, Any] = {
            "task": {
                "task_id": task.id,
                "task_type": task.job.task_type,
                "status": status,
                "reason": reason,
                "eta": str(eta) if self.string_numbers else eta,
                "progress_percent": str(percent) if self.string_numbers else percent,
            },
            "images": [],
            "videos": [],
            "extra": {},
        }
        if status == "TASK_STATUS_SUCCEED":
            body["images"] = [
                {
                    "image_url": self._image_url(origin, task, index),
                    "image_url_ttl": TTL_DRIFT[index % len(TTL_DRIFT)],
                    "image_type": task.job.image_type,
                    "nsfw_detection_result": None,
                }
                for index in range(task.job.image_num)
            ]
            body["extra"] = {
                "seed": str(task.job.seed),
                "enable_nsfw_detection": False,
                "debug_info": {
                    "request_info": task.job.request_info(),
                    "submit_time_ms": task.wall_ms(0),
                    "execute_time_ms": task.wall_ms(task.queued_for),
                    "complete_time_ms": task.wall_ms(task.duration),
                },
            }
        return body

    def _image_url(self, origin: str, task: Task, index: int) -> str:
        name = f"{task.id}_{index}.{task.job.image_type}"
        query = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(task.submitted_wall)),
            "X-Amz-Expires": str(int(task.image_ttl)),
            "X-Amz-Signature": self._signature(name),
        }
        return str(URL(f"{origin}/v3-output/{name}").with_query(query))

    def _signature(self, name: str) -> str:
        return hmac.new(self._signing_key, name.encode(), hashlib.sha256).hexdigest()

    async def _image(self, request: web.Request) -> web.StreamResponse:
        """S3-style: no API key; 403 XML for a bad signature or an expired link."""
        name = request.match_info["name"]
        given = request.query.get("X-Amz-Signature", "")
        if not hmac.compare_digest(given, self._signature(name)):
            return _s3_error(403, "SignatureDoesNotMatch", "The request signature does not match")
        match = _IMAGE_NAME.fullmatch(name)
        task = self._tasks.get(match["task"]) if match else None
        now = self.clock()
        if match is None or task is None or not task.has_image(int(match["index"]), now):
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        if now >= task.expires_at:
            return _s3_error(403, "AccessDenied", "Request has expired")
        index = int(match["index"])
        data = await self._cache.get((task.id, index), partial(task.job.render, index))
        return web.Response(body=data, content_type=CONTENT_TYPES[task.job.image_type])

    def _origin(self, request: web.Request) -> str:
        return self.base_url or str(request.url.origin())

    # -- control routes ----------------------------------------------------------------------

    async def _control_fault(self, body: dict[str, Any]) -> dict[str, Any]:
        self.faults.add(Fault(**body))
        return {}

    async def _control_next_task(self, body: dict[str, Any]) -> dict[str, Any]:
        self.faults.script_next_task(NextTask(**body))
        return {}

    async def _control_forget(self, body: dict[str, Any]) -> dict[str, Any]:
        task_id = body.get("task_id")
        if not isinstance(task_id, str):
            raise ValueError("task_id: text")
        return {"forgotten": self.forget(task_id)}

    async def _control_balance(self, body: dict[str, Any]) -> dict[str, Any]:
        left = body.get("images")
        _check(left is None or (_is_int(left) and left >= 0), "images: a whole number >= 0 or null")
        self.balance = left
        return {"balance": self.balance}

    async def _control_settings(self, body: dict[str, Any]) -> dict[str, Any]:
        known = {"images_per_minute", "billing_status", "string_numbers", "send_retry_after"}
        known.add("duration")
        _check(set(body) <= known, f"settings: any of {', '.join(sorted(known))}")
        if "images_per_minute" in body:
            limit = body["images_per_minute"]
            _check(limit is None or (_is_int(limit) and limit >= 1), "images_per_minute: >= 1")
            self.images_per_minute = limit
        if "billing_status" in body:
            _check(body["billing_status"] in (400, 403), "billing_status: 400 or 403")
            self.billing_status = body["billing_status"]
        for flag in ("string_numbers", "send_retry_after"):
            if flag in body:
                _check(isinstance(body[flag], bool), f"{flag}: true or false")
                setattr(self, flag, body[flag])
        if "duration" in body:
            _check(_is_number(body["duration"]) and body["duration"] >= 0, "duration: >= 0")
            self.duration = float(body["duration"])
        return {}

    async def _control_stats(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**self.stats.as_json(), "balance": self.balance}

    async def _control_reset(self, body: dict[str, Any]) -> dict[str, Any]:
        self.reset()
        return {}


# -- helpers -------------------------------------------------------------------------------


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


def _s3_error(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        text=(
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
        ),
        content_type="application/xml",
    )


async def _drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without a byte of reply (the body is read first, so the kernel
    does not answer with a reset the client would report differently)."""
    await request.read()
    if request.transport is not None:
        request.transport.close()
    return web.Response()


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read())
    except ValueError:
        raise _Refused(400, "INVALID_REQUEST_BODY", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _Refused(400, "INVALID_REQUEST_BODY", "the body must be a JSON object")
    return body


def _base64_image(value: object) -> bytes:
    if not isinstance(value, str) or not value:
        raise _invalid("image_base64", "required, a base64-encoded image")
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("image_base64", "not valid base64") from None


def _whole(request: dict[str, Any], name: str, default: int | None, bounds: rules.Bounds) -> int:
    """A required (default None) or optional integer field within `bounds`."""
    value = request.get(name)
    value = default if value is None else value
    if _is_int(value) and value in bounds:
        return value
    raise _invalid(name, f"must be a whole number in [{bounds.describe()}] (got {value!r})")


def _number(
    request: dict[str, Any], name: str, default: float | None, bounds: rules.Bounds
) -> float:
    value = request.get(name)
    value = default if value is None else value
    if _is_number(value) and value in bounds:
        return value
    raise _invalid(name, f"must be a number in [{bounds.describe()}] (got {value!r})")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check(ok: bool, problem: str) -> None:
    if not ok:
        raise ValueError(problem)


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
        prog="python -m omni.emulator --api v3",
        description="A local emulator of Novita's v3 async image API, for tests and sandboxes.",
    )
    # `python -m omni.emulator --api v3` may hand its whole argument list over.
    parser.add_argument("--api", choices=["v3"], default="v3", help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (%(default)s)")
    parser.add_argument("--port", type=int, default=8766, help="0 picks a free port")
    parser.add_argument(
        "--key",
        default=DEFAULT_KEY,
        help="the one API key accepted (Bearer or bare); others get 403 (default: sandbox)",
    )
    parser.add_argument(
        "--duration",
        type=_non_negative(float),
        default=3.0,
        help="seconds a task takes from submit to final (%(default)s)",
    )
    parser.add_argument(
        "--balance",
        type=_non_negative(int),
        default=None,
        help="images the account can pay for; then BILLING_BALANCE_NOT_ENOUGH (unlimited)",
    )
    parser.add_argument(
        "--images-per-minute",
        type=int,
        default=DEFAULT_IMAGES_PER_MINUTE,
        help="rate limit; 0 turns it off (%(default)s, as Novita's default)",
    )
    parser.add_argument(
        "--public-host", default=None, help="host name to put in URLs (default: the bind host)"
    )
    return parser


async def _serve(args: argparse.Namespace) -> None:
    emulator = Emulator(
        api_key=args.key,
        duration=args.duration,
        balance=args.balance,
        images_per_minute=args.images_per_minute or None,
        public_host=args.public_host,
    )
    url = await emulator.start(args.host, args.port)
    print(f"Novita v3 emulator listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> None:
    """Run the emulator until SIGINT/SIGTERM. `argv`: the arguments after the program name
    (`--api v3` among them is accepted and ignored)."""
    args = _parser().parse_args(argv)
    if args.images_per_minute < 0:
        _parser().error("--images-per-minute must be >= 0")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
