"""The one boundary between the job lifecycle and any image API (Omniinfer v2, Novita v3,
AUTOMATIC1111/Forge servers).

The runner, the ledger, the reporter and the restart logic depend on this module only; each
API lives in its own package and is adapted to `Backend` in `backends/`. A backend never
imports discord, and never returns anything it has not checked (see `backends/untrusted.py`).

Shapes:
- `Generation`: what to make, in SDXL's standard terms, independent of any API's field names.
- `submit` → a *handle*: a short string the backend can act on again after a restart (stored
  in `jobs.task_id`).
- `follow(handle)` → `Reading`s until the task succeeds (the last one has `state=SUCCEEDED`);
  it raises a `BackendError` for any other ending.
- `result(handle)` → `Output`: checked image bytes, the seeds really used, the API's info.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

RANDOM_SEED = -1
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Bounds:
    """An inclusive numeric range, with the wording used when a value falls outside it."""

    low: float
    high: float

    def __contains__(self, value: object) -> bool:
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
        )

    def describe(self) -> str:
        return f"{_fmt(self.low)}–{_fmt(self.high)}"


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class Generation:
    """One txt2img or img2img request. Sizes in pixels; `seed`/`subseed` -1 means random.

    `subseed_strength` > 0 blends the noise of `seed` with that of `subseed` (A1111's
    "variation seed"): 0 is the image of `seed`, 1 the image of `subseed`. `init_image` makes
    it image-to-image at `denoising_strength` (0 keeps the picture, 1 ignores it).
    """

    prompt: str
    negative_prompt: str = ""
    sampler: str = "DPM++ SDE Karras"
    steps: int = 20
    cfg_scale: float = 7.0
    seed: int = RANDOM_SEED
    width: int = 1024
    height: int = 1024
    images: int = 1
    subseed: int = RANDOM_SEED
    subseed_strength: float = 0.0
    init_image: bytes | None = field(default=None, repr=False)
    denoising_strength: float | None = None
    # The server's safety terms, kept apart from the member's own words (which are what is
    # shown and judged); `for_backend()` joins them just before a submit.
    safety_negative_prompt: str = ""

    def for_backend(self) -> Generation:
        """The request as sent: the safety terms appended to the member's negative prompt."""
        if not self.safety_negative_prompt:
            return self
        own = self.negative_prompt.strip()
        joined = f"{own}, {self.safety_negative_prompt}" if own else self.safety_negative_prompt
        return replace(self, negative_prompt=joined, safety_negative_prompt="")


@dataclass(frozen=True)
class Capabilities:
    """What one backend accepts; `/imagine` builds its options and buttons from this."""

    name: str  # "omniinfer", "novita", "a1111": shown in logs and Details
    samplers: tuple[str, ...]
    default_sampler: str
    steps: Bounds
    cfg_scale: Bounds
    sizes: tuple[tuple[int, int], ...]
    max_images: int
    upscale: bool = False
    img2img: bool = False
    subseed: bool = False  # A1111-style variation seeds
    cancel: bool = False
    costs_credit: bool = True  # False for a self-hosted server: no account budget to spend
    model: str = "sd_xl_base_1.0.safetensors"  # the checkpoint it generates with


class TaskState(StrEnum):
    QUEUED = "queued"  # accepted by the backend, not started
    RUNNING = "running"
    SUCCEEDED = "succeeded"


@dataclass(frozen=True)
class Reading:
    """One look at a task: `progress` 0..1, `eta` in seconds when the API gives one, and a
    preview (an http(s) URL the API serves, or checked image bytes) while it runs."""

    state: TaskState
    progress: float = 0.0
    eta: float | None = None
    preview_url: str | None = None
    preview_image: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Output:
    """A finished task: checked images (PNG/JPEG/WebP bytes, at most what was asked for),
    the seeds really used (one per image when the API says so), and the API's own info."""

    images: tuple[bytes, ...] = field(repr=False)
    seeds: tuple[int, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    size: tuple[int, int] | None = None  # the first image's (width, height) as checked


class Backend(Protocol):
    """An image API, seen by the job lifecycle. Every method raises only `BackendError`s."""

    @property
    def capabilities(self) -> Capabilities: ...

    async def start(self) -> None:
        """Learn what the server offers (samplers, models) and begin health checks."""

    async def close(self) -> None: ...

    async def submit(self, request: Generation) -> str:
        """Start generating; returns the handle. Raises `NotAccepted` when the backend
        certainly did not take it (safe to submit again later) and `SubmitUncertain` when
        it may have (never submit again)."""

    async def upscale(self, image: bytes, factor: float) -> str:
        """Start upscaling one image by `factor`; returns the handle."""

    def follow(self, handle: str, *, max_wait: float) -> AsyncIterator[Reading]:
        """Readings until the task succeeds (the last one yielded); raises `TaskTimedOut`
        after `max_wait` seconds, `TaskFailed`, `TaskLost`... for other endings."""

    async def result(self, handle: str, *, expected: int) -> Output:
        """The finished task's output, at most `expected` images, each checked."""

    async def cancel(self, handle: str) -> None:
        """Stop a running task where the API can (best effort, never raises)."""


# -- errors ---------------------------------------------------------------------------------


class BackendError(Exception):
    """Base class. `message` is safe to log (never holds a key) but is the API's wording:
    members see a shortened form, through the presentation layer."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OptionRefused(BackendError):
    """The request was refused for its content; `option` names it when the API says."""

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class CredentialsRefused(BackendError):
    """The API key (or a server's user:password) was refused."""


class OutOfCredit(BackendError):
    """The account cannot pay: generation pauses for everyone until the operator acts."""


class NotAccepted(BackendError):
    """The backend certainly did not take the request (rate limit, no server up, connection
    refused): nothing was billed and it may be submitted again after `retry_after` s."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(BackendError):
    """The backend is not answering (while following or fetching: safe to retry)."""


class SubmitUncertain(BackendError):
    """The submit may have been accepted (and billed): never submit it again."""


class TaskFailed(BackendError):
    """The backend ran the task and it failed; `reason` is the API's own words."""

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class TaskTimedOut(BackendError):
    """The task did not finish: timed out by the backend, or the caller's wait ran out
    (`by_server=False`: it may still finish, and be billed)."""

    def __init__(self, message: str, *, by_server: bool) -> None:
        super().__init__(message)
        self.by_server = by_server


class TaskLost(BackendError):
    """The backend no longer knows the task (expired, or the server restarted); `spent`
    says whether it may have been billed."""

    def __init__(self, message: str, *, spent: bool = False) -> None:
        super().__init__(message)
        self.spent = spent


class BadOutput(BackendError):
    """The task finished but its output failed the checks (not an image, too large, an
    address the bot must not fetch, nothing at all): nothing is posted."""
