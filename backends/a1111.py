"""AUTOMATIC1111/Forge servers as a `jobs.backend.Backend`, over `a1111.A1111Pool`.

A1111's txt2img **blocks** until the images exist, so `submit` starts that POST as a
background task on an idle server and returns as soon as the request is on its way; `follow`
reads `/internal/progress` for the `force_task_id` it sent, and `result` takes the images
from the POST's reply. The reply lives only in this process: after a restart the handle
names a task whose images are gone, and `follow`/`result` raise `TaskLost(spent=False)` (a
self-hosted server bills nothing, and the member must not be charged for our restart).

Handles are `"<server index>:<url hash>:<task id>"`: they survive being stored, and a handle
from another configuration (servers reordered or replaced) is recognised as lost.

The runner must know:
- `capacity` is the number of healthy servers; dispatch no more jobs than that at once.
- `submit` raises `NotAccepted(retry_after=s)` when no idle healthy server offers the sampler
  (all busy, or all down): nothing was sent, submit again after `retry_after` seconds.
- A job moves to another server only when its connection was refused before any byte was
  sent; once sent, it stays where it is (it may be running there).
- `cancel` interrupts only the handle's server, and only while that task is the one running
  there; `follow` then raises `TaskFailed(reason="cancelled")`.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from a1111.client import DEFAULT_GENERATION_TIMEOUT, DEFAULT_TIMEOUT
from a1111.errors import (
    A1111Error,
    ConnectionLost,
    HTTPError,
    InvalidField,
    MalformedReply,
    ServerDown,
)
from a1111.errors import CredentialsRefused as A1111CredentialsRefused
from a1111.models import GenerationRequest, GenerationResult, UpscaleResult
from a1111.pool import DEFAULT_HEALTH_BACKOFF, A1111Pool, Server
from backends.untrusted import (
    ImageLimits,
    check_image,
    checked_seed,
    clean_upstream_text,
    decode_base64_image,
)
from jobs.backend import (
    MAX_SEED,
    RANDOM_SEED,
    BackendError,
    BadOutput,
    Bounds,
    Capabilities,
    CredentialsRefused,
    Generation,
    NotAccepted,
    OptionRefused,
    Output,
    Reading,
    TaskFailed,
    TaskLost,
    TaskState,
    TaskTimedOut,
    Unavailable,
)

log = logging.getLogger(__name__)

NAME = "a1111"
MAX_IMAGES = 4
STEPS = Bounds(1, 150)  # A1111's own UI slider
CFG_SCALE = Bounds(1, 30)  # A1111's own UI slider
SDXL_SIZES: tuple[tuple[int, int], ...] = (
    (1024, 1024),
    (1152, 896),
    (896, 1152),
    (1216, 832),
    (832, 1216),
    (1344, 768),
    (768, 1344),
    (1536, 640),
    (640, 1536),
)
PREFERRED_SAMPLERS = ("DPM++ 2M Karras", "DPM++ SDE Karras", "DPM++ 2M", "Euler a")
# Offered when no server answered at start (A1111 1.6–1.8 names; 1.9+ still accepts them).
FALLBACK_SAMPLERS = (
    "DPM++ 2M Karras",
    "DPM++ SDE Karras",
    "DPM++ 2M SDE Karras",
    "Euler a",
    "Euler",
    "DDIM",
    "UniPC",
)
PREFERRED_UPSCALERS = ("R-ESRGAN 4x+", "ESRGAN_4x", "SwinIR 4x", "Lanczos")
UPSCALE_FACTOR = Bounds(1, 8)  # ExtrasSingleImageRequest.upscaling_resize
DEFAULT_POLL_INTERVAL = 1.0  # seconds between progress reads while following
DEFAULT_RETENTION = 900.0  # seconds an uncollected finished reply is kept
COLLECTED_GRACE = 120.0  # seconds a collected reply is kept (a retried `result`)
IMAGE_LIMITS = ImageLimits()  # each generated image
PREVIEW_LIMITS = ImageLimits(max_bytes=8 * 1024 * 1024, max_pixels=2048 * 2048)
UPSCALE_LIMITS = ImageLimits(max_bytes=96 * 1024 * 1024, max_pixels=4096 * 4096)
TASK_PREFIX = "sdxlbot-"

# A1111 field names (as servers name them in errors) → the bot's option names.
OPTION_FOR_FIELD: dict[str, str] = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "sampler_name": "sampler",
    "sampler_index": "sampler",
    "scheduler": "sampler",
    "steps": "steps",
    "cfg_scale": "cfg_scale",
    "seed": "seed",
    "width": "size",
    "height": "size",
    "batch_size": "images",
    "n_iter": "images",
    "denoising_strength": "strength",
    "init_images": "image",
    "image": "image",
    "upscaling_resize": "factor",
}
_INFO_NUMBERS = ("seed", "subseed", "subseed_strength", "steps", "cfg_scale", "width", "height")
_INFO_TEXTS = ("sampler_name", "sd_model_name", "sd_model_hash", "version")


@dataclass(eq=False)
class _Task:
    """What this process knows of one submitted task."""

    handle: str
    server: Server
    task_id: str
    kind: Literal["generate", "upscale"]
    seed: int  # as requested (-1: random)
    subseed_strength: float
    call: asyncio.Task[GenerationResult | UpscaleResult] = field(repr=False)
    cancelled: bool = False
    preview_id: int = -1
    preview_digest: bytes | None = None
    eta: float | None = None
    done_at: float | None = None
    collected_at: float | None = None


class A1111Backend:
    """A pool of AUTOMATIC1111/Forge servers (`--api`). The aiohttp session is the caller's.

    `urls`: the servers (`A1111_URLS`); `auth`: `user:password` for all of them
    (`A1111_AUTH`); `timeout`: seconds for a short call (progress, lists, interrupt) and for
    connecting; `generation_timeout`: seconds one blocking generation may take, queue wait
    included; `poll_interval`: seconds between progress reads in `follow`.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        auth: str | None,
        session: aiohttp.ClientSession,
        timeout: float = DEFAULT_TIMEOUT,
        generation_timeout: float = DEFAULT_GENERATION_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        health_backoff: tuple[float, float] = DEFAULT_HEALTH_BACKOFF,
        limits: ImageLimits = IMAGE_LIMITS,
        retention: float = DEFAULT_RETENTION,
    ) -> None:
        self._pool = A1111Pool(  # ValueError for a bad URL or user:password (never echoed)
            urls,
            session=session,
            auth=auth,
            timeout=timeout,
            generation_timeout=generation_timeout,
            health_backoff=health_backoff,
        )
        self._secrets = tuple(s for s in (auth, (auth or "").partition(":")[2]) if s)
        self._timeout = timeout
        self._poll_interval = poll_interval
        self._limits = limits
        self._retention = retention
        self._tasks: dict[str, _Task] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self._capabilities = self._describe()

    def __repr__(self) -> str:  # never the credentials
        return f"A1111Backend({[s.url for s in self._pool.servers]!r})"

    # -- what it offers ----------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def capacity(self) -> int | None:
        """How many tasks can run at once now: the healthy servers (one job each)."""
        return self._pool.capacity

    @property
    def pool(self) -> A1111Pool:
        return self._pool

    async def start(self) -> None:
        """Read every server's samplers and upscalers; begin health checks of those down.
        Raises `CredentialsRefused` when every server refuses A1111_AUTH."""
        try:
            await self._pool.start()
        except A1111CredentialsRefused as exc:
            raise CredentialsRefused(self._clean(exc.message)) from None
        self._capabilities = self._describe()
        if not self._pool.samplers():
            log.warning("no A1111 server answered at start; offering the stock sampler list")

    async def close(self) -> None:
        """Stop following and health checks, and abandon calls still running (their
        servers finish them; the next process's `follow` stops them as orphans)."""
        calls = [t.call for t in self._tasks.values() if not t.call.done()]
        for pending in [*self._watchers, *calls]:
            pending.cancel()
        await asyncio.gather(*self._watchers, *calls, return_exceptions=True)
        await self._pool.close()

    def _describe(self) -> Capabilities:
        samplers = self._pool.samplers() or FALLBACK_SAMPLERS
        default = next((s for s in PREFERRED_SAMPLERS if s in samplers), samplers[0])
        return Capabilities(
            name=NAME,
            samplers=samplers,
            default_sampler=default,
            steps=STEPS,
            cfg_scale=CFG_SCALE,
            sizes=SDXL_SIZES,
            max_images=MAX_IMAGES,
            upscale=True,
            img2img=True,
            subseed=True,
            cancel=True,
            costs_credit=False,
        )

    # -- submitting --------------------------------------------------------------------------

    async def submit(self, request: Generation) -> str:
        """Start txt2img (img2img with `init_image`) on an idle server; returns the handle
        once the request is on its way. Raises `NotAccepted` when no idle healthy server
        runs the sampler (nothing was sent), `OptionRefused` for what no server can run."""
        request = request.for_backend()
        if request.sampler not in self._capabilities.samplers:
            raise OptionRefused(f"no A1111 server offers {request.sampler!r}", option="sampler")
        if not 1 <= request.images <= MAX_IMAGES:
            raise OptionRefused(f"images: 1 to {MAX_IMAGES}", option="images")
        task_id = TASK_PREFIX + uuid.uuid4().hex
        init = request.init_image
        payload = GenerationRequest(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            sampler_name=request.sampler,
            steps=request.steps,
            cfg_scale=request.cfg_scale,
            seed=request.seed,
            subseed=request.subseed,
            subseed_strength=request.subseed_strength,
            width=request.width,
            height=request.height,
            batch_size=request.images,
            n_iter=1,
            force_task_id=task_id,
            init_images=None if init is None else (base64.b64encode(init).decode("ascii"),),
            denoising_strength=request.denoising_strength if init is not None else None,
        )
        return await self._dispatch(
            lambda server, sent: server.client.txt2img(payload, sent=sent),
            task_id=task_id,
            kind="generate",
            sampler=request.sampler,
            seed=request.seed,
            subseed_strength=request.subseed_strength,
        )

    async def upscale(self, image: bytes, factor: float) -> str:
        """Start upscaling `image` by `factor` (1–8) on an idle server, with its best
        upscaler (R-ESRGAN 4x+ when it has it)."""
        if factor not in UPSCALE_FACTOR:
            raise OptionRefused(f"factor: {UPSCALE_FACTOR.describe()}", option="factor")
        encoded = base64.b64encode(image).decode("ascii")

        def call(server: Server, sent: asyncio.Event) -> Awaitable[UpscaleResult]:
            upscaler = _upscaler_for(server)
            return server.client.upscale(encoded, factor=factor, upscaler=upscaler, sent=sent)

        return await self._dispatch(
            call,
            task_id=TASK_PREFIX + uuid.uuid4().hex,
            kind="upscale",
            sampler=None,
            seed=RANDOM_SEED,
            subseed_strength=0.0,
        )

    async def _dispatch(
        self,
        call: Callable[[Server, asyncio.Event], Awaitable[GenerationResult | UpscaleResult]],
        *,
        task_id: str,
        kind: Literal["generate", "upscale"],
        sampler: str | None,
        seed: int,
        subseed_strength: float,
    ) -> str:
        """Send to an idle server; move on to another only while nothing was sent."""
        self._prune()
        refused: set[int] = set()
        while True:
            server = self._pool.acquire(sampler=sampler, exclude=refused)
            if server is None:
                raise NotAccepted(self._why_not(sampler), retry_after=self._retry_after())
            sent = asyncio.Event()
            running = asyncio.ensure_future(self._run(server, call(server, sent)))
            running.add_done_callback(_consume)
            announced = asyncio.ensure_future(sent.wait())
            try:
                await asyncio.wait({running, announced}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                if not sent.is_set():
                    running.cancel()
                raise
            finally:
                announced.cancel()
            if not sent.is_set():
                error = running.exception()
                if isinstance(error, ServerDown):
                    refused.add(server.index)
                    continue
                raise self._translate(error) if error else Unavailable("the request did not start")
            handle = f"{server.index}:{_url_hash(server.url)}:{task_id}"
            self._tasks[handle] = _Task(
                handle=handle,
                server=server,
                task_id=task_id,
                kind=kind,
                seed=seed,
                subseed_strength=subseed_strength,
                call=running,
            )
            running.add_done_callback(functools.partial(self._finished, handle))
            log.debug("task %s sent to %s", task_id, server.url)
            return handle

    async def _run(
        self, server: Server, call: Awaitable[GenerationResult | UpscaleResult]
    ) -> GenerationResult | UpscaleResult:
        """The blocking call; the server is free again once it returns, whatever happened."""
        try:
            return await call
        except ServerDown as exc:
            self._pool.mark_down(server, exc.message)
            raise
        except ConnectionLost as exc:
            if not exc.timed_out:  # it dropped the connection: crashed, or restarting
                self._pool.mark_down(server, exc.message)
            raise
        finally:
            self._pool.release(server)

    def _finished(self, handle: str, _call: asyncio.Future[Any]) -> None:
        task = self._tasks.get(handle)
        if task is not None:
            task.done_at = asyncio.get_running_loop().time()

    def _why_not(self, sampler: str | None) -> str:
        servers = self._pool.servers
        if not any(s.healthy for s in servers):
            return f"no A1111 server is up ({len(servers)} down)"
        if sampler is not None and not any(s.healthy and s.knows_sampler(sampler) for s in servers):
            return f"no A1111 server that is up offers {sampler!r}"
        return f"all {sum(s.healthy for s in servers)} A1111 servers that are up are busy"

    def _retry_after(self) -> float:
        """When a server may be free: the soonest ETA of a running task, or the next health
        check when none is up."""
        if self._pool.capacity == 0:
            wait = self._pool.next_check_in()
            return max(1.0, wait if wait is not None else 5.0)
        etas = [t.eta for t in self._tasks.values() if t.done_at is None and t.eta is not None]
        return min(30.0, max(0.5, min(etas))) if etas else 2.0

    # -- following ---------------------------------------------------------------------------

    async def follow(self, handle: str, *, max_wait: float) -> AsyncIterator[Reading]:
        """Readings (QUEUED/RUNNING, progress, ETA, a checked preview when it changed) until
        the blocking call returns, then one SUCCEEDED reading. Raises `TaskLost(spent=False)`
        for a handle this process did not submit (restart), `TaskTimedOut(by_server=False)`
        after `max_wait` s, and the call's own ending otherwise."""
        task = self._tasks.get(handle)
        if task is None:
            await self._free_orphan(handle)
            raise _lost(handle)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        while True:
            if task.call.done():
                self._raise_for(task)
                yield Reading(TaskState.SUCCEEDED, progress=1.0, eta=0.0)
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TaskTimedOut(
                    f"task {task.task_id} on {task.server.url} did not finish in {max_wait:g} s",
                    by_server=False,
                )
            reading = await self._look(task, remaining)
            if reading is not None and not task.call.done():
                yield reading
            remaining = deadline - loop.time()
            await asyncio.wait({task.call}, timeout=max(0.0, min(self._poll_interval, remaining)))

    async def _look(self, task: _Task, remaining: float) -> Reading | None:
        """One progress read (None when the server did not answer: the call's outcome will
        tell what happened)."""
        if task.kind == "upscale":  # extras have no task id to follow
            return Reading(TaskState.RUNNING)
        try:
            async with asyncio.timeout(remaining):
                seen = await task.server.client.progress(task.task_id, preview_id=task.preview_id)
        except (A1111Error, TimeoutError) as exc:
            log.debug("progress of %s unavailable: %s", task.task_id, exc)
            return None
        running = seen.active or seen.completed
        if seen.eta is not None:
            task.eta = seen.eta
        preview = await self._preview(task, seen.live_preview) if running else None
        if seen.preview_id is not None:
            task.preview_id = seen.preview_id
        return Reading(
            TaskState.RUNNING if running else TaskState.QUEUED,
            progress=1.0 if seen.completed else (seen.progress or 0.0),
            eta=seen.eta,
            preview_image=preview,
        )

    async def _preview(self, task: _Task, data_uri: str | None) -> bytes | None:
        """The live preview's checked bytes when it differs from the last one shown."""
        if not data_uri:
            return None
        try:
            data = decode_base64_image(data_uri)
            digest = hashlib.sha256(data).digest()
            if digest == task.preview_digest:
                return None
            await check_image(data, PREVIEW_LIMITS)
        except BadOutput as exc:
            log.info("live preview of %s refused: %s", task.task_id, exc.message)
            return None
        task.preview_digest = digest
        return data

    def _raise_for(self, task: _Task) -> None:
        """Raise the backend error for a call that ended badly (or was cancelled by us)."""
        if task.call.cancelled():
            raise TaskLost(f"task {task.task_id} was abandoned", spent=False)
        error = task.call.exception()
        if error is not None:
            raise self._translate(error, task)
        if task.cancelled:
            raise TaskFailed(f"task {task.task_id} was cancelled", reason="cancelled")

    def _translate(self, error: BaseException, task: _Task | None = None) -> BackendError:
        where = f"task {task.task_id} on {task.server.url}" if task else "A1111"
        if isinstance(error, A1111CredentialsRefused):
            return CredentialsRefused(self._clean(error.message))
        if isinstance(error, InvalidField):
            option = OPTION_FOR_FIELD.get(error.field or "")
            return OptionRefused(self._clean(error.detail or error.message), option=option)
        if isinstance(error, ConnectionLost | ServerDown):
            why = "no reply in time" if getattr(error, "timed_out", False) else "connection lost"
            return TaskLost(f"{where}: {why}; its images are lost", spent=False)
        if isinstance(error, HTTPError):
            reason = self._clean(error.detail or f"HTTP {error.status}")
            return TaskFailed(f"{where} failed: {reason}", reason=reason)
        if isinstance(error, MalformedReply):
            return BadOutput(f"{where}: {self._clean(error.message)}")
        if isinstance(error, BackendError):
            return error
        log.error("unexpected error from %s", where, exc_info=error)
        return TaskFailed(f"{where} failed unexpectedly ({type(error).__name__})")

    # -- results -----------------------------------------------------------------------------

    async def result(self, handle: str, *, expected: int) -> Output:
        """The checked images (at most `expected`), the seeds used (`info.all_seeds`, else
        counted from the requested seed as A1111 does) and a cleaned subset of `info`."""
        self._prune()
        task = self._tasks.get(handle)
        if task is None:
            raise _lost(handle)
        if not task.call.done():
            raise Unavailable(f"task {task.task_id} has not finished")
        self._raise_for(task)
        reply = task.call.result()
        if isinstance(reply, UpscaleResult):
            encoded: tuple[str, ...] = (reply.image,)
            info: dict[str, Any] = {"html_info": self._clean(reply.html_info, limit=200)}
            limits = UPSCALE_LIMITS
        else:
            encoded = reply.generated[:expected]
            info = self._info(reply.info)
            limits = self._limits
        images = []
        for text in encoded:
            data = decode_base64_image(text)
            await check_image(data, limits)
            images.append(data)
        if not images:
            raise BadOutput(f"task {task.task_id}: the server returned no images")
        seeds = () if isinstance(reply, UpscaleResult) else self._seeds(task, reply, len(images))
        task.collected_at = asyncio.get_running_loop().time()
        return Output(images=tuple(images), seeds=seeds, info=info)

    def _seeds(self, task: _Task, reply: GenerationResult, count: int) -> tuple[int, ...]:
        given = reply.info.get("all_seeds")
        if isinstance(given, list):
            seeds = [checked_seed(s) for s in given[:count]]
            if len(seeds) == count and all(s is not None for s in seeds):
                return tuple(s for s in seeds if s is not None)
        first = checked_seed(reply.info.get("seed"))
        if first is None and task.seed != RANDOM_SEED:
            first = task.seed
        if first is None:
            return ()
        step = 0 if task.subseed_strength else 1  # A1111: variations share the seed
        return tuple((first + i * step) % (MAX_SEED + 1) for i in range(count))

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        """The parts of A1111's `info` worth showing, each checked and cleaned."""
        kept: dict[str, Any] = {}
        for key in _INFO_NUMBERS:
            value = info.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                kept[key] = value
        for key in _INFO_TEXTS:
            if isinstance(info.get(key), str):
                kept[key] = self._clean(info[key], limit=100)
        for key in ("all_seeds", "all_subseeds"):
            values = info.get(key)
            if isinstance(values, list):
                kept[key] = [
                    s for s in (checked_seed(v) for v in values[: MAX_IMAGES * 2]) if s is not None
                ]
        return kept

    # -- cancelling --------------------------------------------------------------------------

    async def cancel(self, handle: str) -> None:
        """Interrupt the handle's server if this task is what it runs now; if it is still
        queued there, interrupt it as soon as it starts. Best effort: never raises."""
        task = self._tasks.get(handle)
        if task is None or task.call.done():
            return
        task.cancelled = True
        try:
            if await self._is_running(task):
                await task.server.client.interrupt()
                log.info("interrupted task %s on %s", task.task_id, task.server.url)
            else:
                watcher = asyncio.ensure_future(self._interrupt_when_started(task))
                self._watchers.add(watcher)
                watcher.add_done_callback(self._watchers.discard)
        except (A1111Error, TimeoutError) as exc:
            log.info("could not interrupt task %s: %s", task.task_id, self._clean(str(exc)))

    async def _is_running(self, task: _Task) -> bool:
        """Whether the server runs this task now. Without per-task progress (or for an
        upscale) the pool's one-job-per-server rule makes it ours."""
        client = task.server.client
        if task.kind == "upscale" or client.has_task_progress is False:
            return True
        async with asyncio.timeout(self._timeout):
            seen = await client.progress(task.task_id, live_preview=False)
        return seen.active or not seen.per_task

    async def _interrupt_when_started(self, task: _Task) -> None:
        while not task.call.done():
            await asyncio.wait({task.call}, timeout=self._poll_interval)
            if task.call.done():
                return
            try:
                if await self._is_running(task):
                    await task.server.client.interrupt()
                    return
            except (A1111Error, TimeoutError):
                continue

    async def _free_orphan(self, handle: str) -> None:
        """A handle from before a restart: if its task is still running on its server, stop
        it, since nobody can collect its images. Best effort."""
        parsed = _parse_handle(handle)
        server = self._pool.server(parsed[0]) if parsed else None
        if parsed is None or server is None or _url_hash(server.url) != parsed[1]:
            return
        try:
            async with asyncio.timeout(self._timeout):
                seen = await server.client.progress(parsed[2], live_preview=False)
                if seen.per_task and seen.active:
                    await server.client.interrupt()
                    log.info("interrupted orphaned task %s on %s", parsed[2], server.url)
        except (A1111Error, TimeoutError):
            pass

    # -- housekeeping ------------------------------------------------------------------------

    def _prune(self) -> None:
        """Forget replies collected a while ago, and finished ones nobody collected."""
        now = asyncio.get_running_loop().time()
        for handle, task in list(self._tasks.items()):
            collected = task.collected_at is not None and now - task.collected_at > COLLECTED_GRACE
            expired = task.done_at is not None and now - task.done_at > self._retention
            if collected or expired:
                del self._tasks[handle]

    def _clean(self, text: object, *, limit: int = 300) -> str:
        return clean_upstream_text(text, secrets=self._secrets, limit=limit)


def _upscaler_for(server: Server) -> str:
    names = [u.name for u in server.upscalers if u.name and u.name != "None"]
    return next((u for u in PREFERRED_UPSCALERS if u in names), names[0] if names else "Lanczos")


def _url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:8]


def _parse_handle(handle: str) -> tuple[int, str, str] | None:
    index, _, rest = handle.partition(":")
    url_hash, _, task_id = rest.partition(":")
    if not index.isdigit() or not url_hash or not task_id:
        return None
    return int(index), url_hash, task_id


def _lost(handle: str) -> TaskLost:
    parsed = _parse_handle(handle)
    what = f"task {parsed[2]}" if parsed else "this task"
    return TaskLost(
        f"{what} was sent by an earlier run of the bot: A1111 returns images only to the "
        "request that asked, so they are lost",
        spent=False,
    )


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark a background call's exception as seen (it is reported through follow/result)."""
    if not future.cancelled():
        future.exception()
