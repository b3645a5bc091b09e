"""Omniinfer v2 as a `jobs.backend.Backend`, over `omni.OmniClient`.

The handle is Omniinfer's task id, so a restarted bot can follow or collect a task it
submitted before. What only this process knows — the seed it asked for, and the final
progress reading (which carries the result URLs) — is kept in memory per handle so `result`
needs no extra poll; after a restart `result` polls once, and reports no seeds unless the API
gives them.

v2 has no cancel, no capacity figure and no variation seeds: its txt2img body (the official
SDK's `Txt2ImgRequest`, Novita's v2 reference) has no `subseed`/`subseed_strength`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from backends.untrusted import FetchPolicy, checked_seed, clean_upstream_text, fetch_images
from jobs.backend import (
    BackendError,
    BadOutput,
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
from omni.client import OmniClient
from omni.errors import (
    AuthenticationError,
    DownloadFailed,
    InsufficientCredit,
    InvalidRequest,
    OmniError,
    ServerError,
    SubmissionUncertain,
    TaskNotFound,
)
from omni.errors import TaskFailed as OmniTaskFailed
from omni.errors import TaskTimedOut as OmniTaskTimedOut
from omni.models import Img2ImgRequest, Progress, TaskStatus, Txt2ImgRequest, UpscaleRequest
from omni.polling import PollPolicy
from omni.retry import RetryPolicy

log = logging.getLogger(__name__)

MAX_IMAGES = 4
MAX_REMEMBERED = 2048  # handles whose seed/final reading are kept; oldest forgotten first

# The API's field names (as `omni` reports them) → the bot's option names.
OPTION_FOR_FIELD: dict[str, str] = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "sampler_name": "sampler",
    "steps": "steps",
    "cfg_scale": "cfg_scale",
    "seed": "seed",
    "width": "size",
    "height": "size",
    "size": "size",
    "batch_size": "images",
    "n_iter": "images",
    "init_image": "init_image",
    "init_images": "init_image",
    "denoising_strength": "denoising_strength",
    "factor": "factor",
    "upscaling_resize": "factor",
}

# Seconds before a rate-limited submit is tried again (v2 sends no Retry-After).
RATE_LIMIT_WAIT = 5.0


def capabilities() -> Capabilities:
    """What Omniinfer v2 offers for SDXL 1.0 (the same facts `omni.rules` validates)."""
    return Capabilities(
        name="omniinfer",
        samplers=rules.SDXL_SAMPLERS,
        default_sampler=rules.DEFAULT_SAMPLER,
        steps=Bounds(rules.STEPS.low, rules.STEPS.high),
        cfg_scale=Bounds(rules.CFG_SCALE.low, rules.CFG_SCALE.high),
        sizes=rules.SDXL_SIZES,
        max_images=MAX_IMAGES,
        upscale=True,
        img2img=True,
        subseed=False,  # not in v2's txt2img body (SDK proto, v2 reference)
        cancel=False,  # v2 has no cancel endpoint
        costs_credit=True,
    )


class OmniinferBackend:
    """An Omniinfer v2 account. The aiohttp session belongs to the caller."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str,
        session: aiohttp.ClientSession,
        timeout: aiohttp.ClientTimeout,
        max_wait_poll: PollPolicy | None = None,
        retry: RetryPolicy | None = None,
        model_name: str = rules.SDXL_MODEL,
    ) -> None:
        """`max_wait_poll`: when to poll progress (default `PollPolicy()`); `retry`: retries
        of safe calls (default `RetryPolicy()`); `model_name`: the checkpoint, exactly as
        `/v2/models` names it."""
        if not api_key:
            raise CredentialsRefused("no Omniinfer API key configured")
        self._key = api_key
        self._model = model_name
        self._session = session
        self._policy = FetchPolicy.for_base_url(base_url)
        self._client = OmniClient(
            api_key,
            base_url=base_url,
            session=session,
            timeout=timeout,
            poll=max_wait_poll or PollPolicy(),
            retry=retry or RetryPolicy(),
        )
        self._capabilities = capabilities()
        self._seeds: OrderedDict[str, int] = OrderedDict()  # handle → the seed asked for
        self._finals: OrderedDict[str, Progress] = OrderedDict()  # handle → SUCCEEDED reading

    def __repr__(self) -> str:  # never the key
        return f"OmniinferBackend(base_url={self._client.base_url!r})"

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def capacity(self) -> int | None:
        """How many tasks the account may run at once: v2 does not say."""
        return None

    async def start(self) -> None:
        """Nothing to learn up front: v2's samplers and sizes are fixed facts (`omni.rules`)."""

    async def close(self) -> None:
        """Nothing to release: the session is the caller's."""

    # -- submitting --------------------------------------------------------------------------

    async def submit(self, request: Generation) -> str:
        """Start txt2img (or img2img when `init_image` is set); returns the task id."""
        if request.subseed_strength:
            raise OptionRefused(
                "Omniinfer v2 has no variation seeds (subseed)", option="subseed_strength"
            )
        fields: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "sampler_name": request.sampler,
            "steps": request.steps,
            "cfg_scale": request.cfg_scale,
            "seed": request.seed,
            "width": request.width,
            "height": request.height,
            "batch_size": request.images,
            "n_iter": 1,
            "model_name": self._model,
        }
        try:
            if request.init_image is not None:
                img2img = Img2ImgRequest(
                    **fields,
                    init_image=request.init_image,
                    denoising_strength=(
                        rules.DEFAULT_DENOISING_STRENGTH
                        if request.denoising_strength is None
                        else request.denoising_strength
                    ),
                )
                submission = await self._client.img2img(img2img)
            else:
                submission = await self._client.txt2img(Txt2ImgRequest(**fields))
        except OmniError as exc:
            raise self._translate(exc, submitting=True) from None
        if submission.warning:
            log.info(
                "Omniinfer warned about task %s: %s",
                submission.task_id,
                self._clean(submission.warning),
            )
        self._remember(self._seeds, submission.task_id, request.seed)
        return submission.task_id

    async def upscale(self, image: bytes, factor: float) -> str:
        """Start upscaling one image with Omniinfer's default upscaler; returns the task id."""
        try:
            submission = await self._client.upscale(UpscaleRequest(image=image, factor=factor))
        except OmniError as exc:
            raise self._translate(exc, submitting=True) from None
        return submission.task_id

    async def cancel(self, handle: str) -> None:
        """v2 cannot cancel a task: it runs to the end (and is billed)."""

    # -- following ---------------------------------------------------------------------------

    async def follow(self, handle: str, *, max_wait: float) -> AsyncIterator[Reading]:
        """Readings until the task succeeds (the last one yielded, progress 1, eta 0)."""
        try:
            async for progress in self._client.wait(handle, max_wait=max_wait):
                if progress.status is TaskStatus.SUCCEEDED:
                    self._remember(self._finals, handle, progress)
                yield _reading(progress)
        except OmniError as exc:
            if not (isinstance(exc, OmniTaskTimedOut) and not exc.by_server):
                self._forget(handle)  # ended for good: nothing left to collect
            raise self._translate(exc, submitting=False) from None

    async def result(self, handle: str, *, expected: int) -> Output:
        """The checked images (at most `expected`) and the seeds used."""
        final = self._finals.get(handle)
        try:
            if final is None:  # e.g. after a restart: one look at the task
                final = await self._client.progress(handle)
            if final.status is TaskStatus.FAILED:
                raise OmniTaskFailed(handle, final.failed_reason)
            if final.status is TaskStatus.TIMED_OUT:
                raise OmniTaskTimedOut(handle, by_server=True)
        except OmniError as exc:
            raise self._translate(exc, submitting=False) from None
        if final.status is not TaskStatus.SUCCEEDED:
            raise Unavailable(f"task {handle} has not finished yet")
        images = await fetch_images(
            self._session, final.images, expected=expected, policy=self._policy
        )
        seeds = self._seeds_of(handle, final, len(images))
        self._forget(handle)
        return Output(images=images, seeds=seeds, info=final.info.raw if final.info else {})

    # -- helpers -----------------------------------------------------------------------------

    def _seeds_of(self, handle: str, final: Progress, count: int) -> tuple[int, ...]:
        """The API's `all_seeds` (or `seed`), else the seed asked for, else none."""
        raw = final.info.raw if final.info else {}
        listed = raw.get("all_seeds")
        if isinstance(listed, list):
            seeds = tuple(s for s in (checked_seed(v) for v in listed[:count]) if s is not None)
            if seeds:
                return seeds
        seed = checked_seed(raw.get("seed"))
        if seed is not None:
            return (seed,)
        asked = checked_seed(self._seeds.get(handle))
        return (asked,) if asked is not None else ()

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

    def _translate(self, exc: OmniError, *, submitting: bool) -> BackendError:
        """The domain's error for an `omni` one; every message cleaned of the key."""
        message = self._clean(exc.message)
        if isinstance(exc, InvalidRequest):
            return OptionRefused(message, option=_option(exc))
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
            # Unknown to Omniinfer: never created, or forgotten before its images were made.
            return TaskLost(message, spent=False)
        if isinstance(exc, DownloadFailed):
            return BadOutput(message)
        if submitting and isinstance(exc, ServerError) and exc.status == 429:
            # A rate limit refuses the submit outright: it goes back in line for later.
            return NotAccepted(message, retry_after=RATE_LIMIT_WAIT)
        # Other refusals and faults were already retried by the client: the member is told
        # the service is not answering (nothing was created, nothing charged).
        return Unavailable(message)


def _option(exc: InvalidRequest) -> str | None:
    """The bot's option for the field the local check or the code named (8: sampler_name).
    The API's own `msg` wording is undocumented, so it is shown, never parsed for a field."""
    return OPTION_FOR_FIELD.get(exc.field) if exc.field else None


def _reading(progress: Progress) -> Reading:
    if progress.status is TaskStatus.SUCCEEDED:
        return Reading(TaskState.SUCCEEDED, progress=1.0, eta=0.0)
    state = TaskState.QUEUED if progress.status is TaskStatus.QUEUED else TaskState.RUNNING
    if progress.status is TaskStatus.UNKNOWN and progress.progress <= 0:
        state = TaskState.QUEUED
    return Reading(
        state,
        progress=min(1.0, max(0.0, progress.progress)),
        eta=progress.eta_relative if progress.eta_relative > 0 else None,
        preview_url=progress.preview_images[0] if progress.preview_images else None,
    )
