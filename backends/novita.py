"""Novita AI's v3 async API as a `jobs.backend.Backend`, over `omni.v3.NovitaClient`.

The handle is Novita's task id, so a restarted bot can follow or collect a task it submitted
before. The final task-result (it carries the image URLs) and the seed asked for are kept in
memory per handle, so `result` needs no extra poll; after a restart `result` polls once.

Seeds: Novita reports one `extra.seed` per task, a string, and documents no rule for the
seeds of the other images in a batch (its txt2img example's `debug_info` lists `"seeds":
[392212448]` for `num_images_per_prompt: 2`). So `Output.seeds` holds that one seed, never
an invented seed+i.

Not offered: upscaling (Novita retired its upscale API in 2026), variation seeds (no such
field in v3's txt2img body), cancel (no endpoint).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from backends.untrusted import (
    FetchPolicy,
    ImageLimits,
    checked_seed,
    clean_upstream_text,
    fetch_images,
)
from jobs.backend import (
    BackendError,
    Bounds,
    Capabilities,
    CredentialsRefused,
    Generation,
    NotAccepted,
    OptionRefused,
    OutOfCredit,
    Output,
    Reading,
    SubmitUncertain,
    TaskFailed,
    TaskLost,
    TaskState,
    TaskTimedOut,
    Unavailable,
)
from omni import rules
from omni.errors import (
    AuthenticationError,
    ConnectionFailed,
    InsufficientCredit,
    InvalidRequest,
    OmniError,
    SubmissionUncertain,
    TaskNotFound,
    UnknownAPIError,
)
from omni.errors import TaskFailed as OmniTaskFailed
from omni.errors import TaskTimedOut as OmniTaskTimedOut
from omni.retry import RetryPolicy
from omni.v3.client import DEFAULT_BASE_URL, DEFAULT_TIMEOUT, NovitaClient, PollPolicy
from omni.v3.errors import RateLimited
from omni.v3.models import Img2ImgRequest, TaskResult, TaskStatus, Txt2ImgRequest

log = logging.getLogger(__name__)

MAX_IMAGES = 4
SDXL_STEPS = Bounds(1, 50)  # the API takes up to 100; past 50 SDXL only costs more
# img2img without a denoising strength: the same default as every backend (not the 0.5 of
# Novita's SDKs), so a Variations button behaves alike whichever API serves it.
DEFAULT_STRENGTH = rules.DEFAULT_DENOISING_STRENGTH
MAX_REMEMBERED = 2048  # handles whose seed and final reading are kept; oldest forgotten first
# Novita counts images per minute (20 by default). Without a Retry-After, wait as long as a
# saturated one-minute window takes on average to free the images asked for.
RATE_WINDOW = 60.0
DEFAULT_IMAGES_PER_MINUTE = 20

# The API's field names → the bot's option names.
OPTION_FOR_FIELD: dict[str, str] = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "sampler_name": "sampler",
    "steps": "steps",
    "guidance_scale": "cfg_scale",
    "seed": "seed",
    "width": "size",
    "height": "size",
    "image_num": "images",
    "image_base64": "init_image",
    "image": "init_image",
    "strength": "denoising_strength",
}


def capabilities() -> Capabilities:
    """What the bot offers through Novita v3 for SDXL 1.0.

    Samplers: v3 takes v2's sampler names (the migration guide moves `sampler_name` into
    `request` unchanged); DDIM, PLMS and UniPC are left out as for v2 ("may not be supported
    by SDXL 1.0"). Sizes: SDXL's nine ~1 MP buckets, all within v3's [128, 2048].
    """
    return Capabilities(
        name="novita",
        samplers=rules.SDXL_SAMPLERS,
        default_sampler=rules.DEFAULT_SAMPLER,
        steps=SDXL_STEPS,
        cfg_scale=Bounds(1.0, 30.0),
        sizes=rules.SDXL_SIZES,
        max_images=MAX_IMAGES,
        upscale=False,
        img2img=True,
        subseed=False,
        cancel=False,
        costs_credit=True,
    )


class NovitaBackend:
    """A Novita AI account, through the v3 async API. The aiohttp session is the caller's."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        session: aiohttp.ClientSession,
        timeout: aiohttp.ClientTimeout | float = DEFAULT_TIMEOUT,
        poll: PollPolicy | None = None,
        retry: RetryPolicy | None = None,
        model_name: str = rules.SDXL_MODEL,
        limits: ImageLimits | None = None,
    ) -> None:
        """`timeout`: one API reply's limit (seconds, or an aiohttp.ClientTimeout).
        `poll`/`retry`: when to poll and how to retry safe calls. `limits`: per-image caps."""
        if not api_key:
            raise CredentialsRefused("no Novita API key configured")
        if not isinstance(timeout, aiohttp.ClientTimeout):
            timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(10.0, timeout))
        self._key = api_key
        self._session = session
        self._model = model_name
        self._limits = limits or ImageLimits()
        self._policy = FetchPolicy.for_base_url(base_url)
        self._client = NovitaClient(
            api_key,
            base_url=base_url,
            session=session,
            timeout=timeout,
            poll=poll or PollPolicy(),
            retry=retry or RetryPolicy(),
        )
        self._capabilities = capabilities()
        self._seeds: OrderedDict[str, int] = OrderedDict()  # handle → the seed asked for
        self._finals: OrderedDict[str, TaskResult] = OrderedDict()  # handle → SUCCEED reading

    def __repr__(self) -> str:  # never the key
        return f"NovitaBackend(base_url={self._client.base_url!r})"

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def capacity(self) -> int | None:
        """Tasks at once: Novita limits images per minute, not concurrency (None: only the
        bot's own cap applies)."""
        return None

    async def start(self) -> None:
        """Nothing to learn up front: the samplers and sizes offered are fixed facts."""

    async def close(self) -> None:
        """Nothing to release: the session is the caller's."""

    # -- submitting --------------------------------------------------------------------------

    async def submit(self, request: Generation) -> str:
        """Start txt2img (img2img when `init_image` is set); returns Novita's task id.

        Raises `OptionRefused` (before any HTTP call when the request is outside the
        capabilities), `CredentialsRefused`, `OutOfCredit`, `NotAccepted` (rate limit, no
        connection: nothing billed) or `SubmitUncertain` (may be billed: never resubmit).
        """
        self._check(request)
        fields: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "model_name": self._model,
            "width": request.width,
            "height": request.height,
            "image_num": request.images,
            "steps": request.steps,
            "seed": request.seed,
            "guidance_scale": request.cfg_scale,
            "sampler_name": request.sampler,
            "response_image_type": "png",
        }
        try:
            if request.init_image is not None:
                strength = request.denoising_strength
                task_id = await self._client.img2img(
                    Img2ImgRequest(
                        **fields,
                        image=request.init_image,
                        strength=DEFAULT_STRENGTH if strength is None else strength,
                    )
                )
            else:
                task_id = await self._client.txt2img(Txt2ImgRequest(**fields))
        except OmniError as exc:
            raise self._translate(exc, submitting=True, images=request.images) from None
        self._remember(self._seeds, task_id, request.seed)
        return task_id

    async def upscale(self, image: bytes, factor: float) -> str:
        """Never offered (`capabilities.upscale` is False): Novita retired its upscale API."""
        raise OptionRefused("Novita no longer offers upscaling", option="upscale")

    async def cancel(self, handle: str) -> None:
        """v3 has no cancel: the task runs to the end (and is billed)."""

    # -- following ---------------------------------------------------------------------------

    async def follow(self, handle: str, *, max_wait: float) -> AsyncIterator[Reading]:
        """Readings until the task succeeds (the last one yielded: progress 1, eta 0).

        An undocumented status (`TASK_STATUS_UNKNOWN`) yields nothing and is polled again;
        5xx, dropped connections and 429s are ridden out until `max_wait`, then
        `TaskTimedOut(by_server=False)`. A task Novita no longer knows is `TaskLost(spent=
        True)`: it was accepted, so it may have been billed.
        """
        try:
            async for result in self._client.wait(handle, max_wait=max_wait):
                if result.status is TaskStatus.SUCCEED:
                    self._remember(self._finals, handle, result)
                reading = _reading(result)
                if reading is not None:
                    yield reading
        except OmniError as exc:
            if not (isinstance(exc, OmniTaskTimedOut) and not exc.by_server):
                self._forget(handle)  # ended for good: nothing left to collect
            raise self._translate(exc, submitting=False) from None

    async def result(self, handle: str, *, expected: int) -> Output:
        """The checked images (at most `expected`), the task's seed and a little info.

        Raises `BadOutput` (an expired URL's 403, not an image, too big, none at all),
        `Unavailable` (network, or the task not finished yet), `TaskFailed`, `TaskLost`.
        """
        final = self._finals.get(handle)
        try:
            if final is None:  # e.g. after a restart: one look at the task
                final = await self._client.task_result(handle)
            if final.status is TaskStatus.FAILED:
                raise OmniTaskFailed(handle, final.reason)
        except OmniError as exc:
            raise self._translate(exc, submitting=False) from None
        if final.status is not TaskStatus.SUCCEED:
            raise Unavailable(f"task {handle} has not finished yet")
        images = await fetch_images(
            self._session,
            final.image_urls,
            expected=expected,
            policy=self._policy,
            limits=self._limits,
        )
        seed = checked_seed(final.raw_seed)
        if seed is None:
            seed = checked_seed(self._seeds.get(handle))  # asked for; -1 is not a seed
        self._forget(handle)
        info: dict[str, Any] = {"task_type": self._clean(final.task_type)}
        if seed is not None:
            info["seed"] = seed
        return Output(images=images, seeds=(seed,) if seed is not None else (), info=info)

    # -- helpers -----------------------------------------------------------------------------

    def _check(self, request: Generation) -> None:
        """Refuse, naming the bot's option, what the capabilities do not offer: no credit is
        spent on a request the bot would not have built."""
        caps = self._capabilities
        if request.subseed_strength:
            raise OptionRefused("Novita has no variation seeds", option="subseed_strength")
        if request.sampler not in caps.samplers:
            raise OptionRefused(f"sampler {request.sampler!r} is not offered", option="sampler")
        if request.steps not in caps.steps:
            raise OptionRefused(f"steps: {caps.steps.describe()}", option="steps")
        if request.cfg_scale not in caps.cfg_scale:
            raise OptionRefused(f"cfg_scale: {caps.cfg_scale.describe()}", option="cfg_scale")
        if (request.width, request.height) not in caps.sizes:
            raise OptionRefused(
                f"{request.width}x{request.height} is not an SDXL size", option="size"
            )
        if not 1 <= request.images <= caps.max_images:
            raise OptionRefused(f"images: 1–{caps.max_images}", option="images")

    def _remember(self, store: OrderedDict[str, Any], handle: str, value: Any) -> None:
        store[handle] = value
        store.move_to_end(handle)
        while len(store) > MAX_REMEMBERED:
            store.popitem(last=False)

    def _forget(self, handle: str) -> None:
        self._seeds.pop(handle, None)
        self._finals.pop(handle, None)

    def _clean(self, text: object) -> str:
        return clean_upstream_text(text, secrets=[self._key])

    def _translate(self, exc: OmniError, *, submitting: bool, images: int = 1) -> BackendError:
        """The domain's error for a client one; every message cleaned of the key."""
        message = self._clean(exc.message)
        if isinstance(exc, InvalidRequest):
            return OptionRefused(message, option=OPTION_FOR_FIELD.get(exc.field or ""))
        if isinstance(exc, AuthenticationError):
            return CredentialsRefused(message)
        if isinstance(exc, InsufficientCredit):
            return OutOfCredit(message)
        if isinstance(exc, SubmissionUncertain):
            return SubmitUncertain(message)
        if isinstance(exc, OmniTaskFailed):
            return TaskFailed(message, reason=self._clean(exc.reason))
        if isinstance(exc, OmniTaskTimedOut):
            return TaskTimedOut(message, by_server=exc.by_server)
        if isinstance(exc, TaskNotFound):
            return TaskLost(message, spent=True)
        if submitting and isinstance(exc, RateLimited):
            wait = exc.retry_after
            if wait is None:
                wait = RATE_WINDOW / DEFAULT_IMAGES_PER_MINUTE * max(1, images)
            return NotAccepted(message, retry_after=wait)
        if submitting and isinstance(exc, ConnectionFailed | UnknownAPIError):
            # Never connected, or a 4xx the client does not know: no task was created.
            return NotAccepted(message)
        return Unavailable(message)


def _reading(result: TaskResult) -> Reading | None:
    """The domain's reading; None for a status that says nothing (UNKNOWN)."""
    if result.status is TaskStatus.SUCCEED:
        return Reading(TaskState.SUCCEEDED, progress=1.0, eta=0.0)
    if result.status is TaskStatus.QUEUED:
        return Reading(TaskState.QUEUED, progress=0.0, eta=result.eta or None)
    if result.status is TaskStatus.PROCESSING:
        return Reading(TaskState.RUNNING, progress=result.progress, eta=result.eta or None)
    return None
