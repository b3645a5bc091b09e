"""Typed requests and task results for Novita's v3 async image API.

Requests check themselves against the ranges the API enforces (Novita's v3 reference: width
and height [128, 2048], `image_num` [1, 8], `steps` [1, 100], `guidance_scale` [1, 30]), so a
request the server would refuse costs no HTTP call. Stricter SDXL choices (sizes, samplers)
belong to the caller.

Results are parsed defensively: Novita sends numbers as JSON numbers or as strings depending on
the field and the day (`extra.seed` "392212448", `image_url_ttl` 3600, "3600" or "0", timing
fields as strings), and statuses beyond the four documented ones (`TASK_STATUS_UNKNOWN`, seen
in their JS SDK). Nothing here raises on a drifted type; a value that cannot be read is None.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeGuard

from omni import rules
from omni.errors import InvalidRequest, MalformedResponse

MAX_SEED = 2**32 - 1
RANDOM_SEED = -1

# What the v3 server accepts (its reference pages); the emulator enforces the same.
API_DIMENSION = rules.Bounds(128, 2048)
API_IMAGE_NUM = rules.Bounds(1, 8)
API_STEPS = rules.Bounds(1, 100)
API_GUIDANCE_SCALE = rules.Bounds(1.0, 30.0)
API_STRENGTH = rules.Bounds(0.0, 1.0)
API_CLIP_SKIP = rules.Bounds(1, 12)
IMAGE_TYPES = ("png", "webp", "jpeg")

# The v2→v3 migration guide lists `sampler_name` as "moved inside" `request`, unchanged, so
# the v3 server takes v2's sampler names.
API_SAMPLERS = rules.API_SAMPLERS
SDXL_SAMPLERS = rules.SDXL_SAMPLERS


def _refused(field_name: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{field_name}: {message}", field=field_name)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(field_name: str, value: object, bounds: rules.Bounds) -> None:
    if not (_is_int(value) and value in bounds):
        raise _refused(
            field_name, f"must be a whole number from {bounds.describe()} (got {value!r})"
        )


@dataclass(frozen=True)
class Txt2ImgRequest:
    """A v3 text-to-image request; field names are the API's (`request.*`).

    Sizes in pixels; `seed` -1 asks the server to pick one (reported back in `extra.seed`).
    """

    prompt: str
    negative_prompt: str = ""
    model_name: str = rules.SDXL_MODEL
    width: int = 1024
    height: int = 1024
    image_num: int = 1
    steps: int = rules.DEFAULT_STEPS
    seed: int = RANDOM_SEED
    guidance_scale: float = rules.DEFAULT_CFG_SCALE
    sampler_name: str = rules.DEFAULT_SAMPLER
    clip_skip: int | None = None
    response_image_type: str = "png"

    def validate(self) -> None:
        """Raise `InvalidRequest` naming the first field the server would refuse.

        Runs once per submit: the messages are only worded for a field that fails.
        """
        problem = rules.prompt_problem(self.prompt, self.negative_prompt)
        if problem is not None:
            raise _refused(*problem)
        if not (isinstance(self.model_name, str) and self.model_name):
            raise _refused("model_name", "must not be empty")
        _check_int("width", self.width, API_DIMENSION)
        _check_int("height", self.height, API_DIMENSION)
        _check_int("image_num", self.image_num, API_IMAGE_NUM)
        _check_int("steps", self.steps, API_STEPS)
        if not (_is_int(self.seed) and (self.seed == RANDOM_SEED or 0 <= self.seed <= MAX_SEED)):
            raise _refused(
                "seed",
                f"must be -1 (random) or a whole number from 0–{MAX_SEED} (got {self.seed!r})",
            )
        if not (_is_number(self.guidance_scale) and self.guidance_scale in API_GUIDANCE_SCALE):
            raise _refused(
                "guidance_scale",
                f"must be a number from {API_GUIDANCE_SCALE.describe()} "
                f"(got {self.guidance_scale!r})",
            )
        if self.sampler_name not in API_SAMPLERS:
            raise _refused("sampler_name", f"{self.sampler_name!r} is not a sampler Novita offers")
        if self.clip_skip is not None:
            _check_int("clip_skip", self.clip_skip, API_CLIP_SKIP)
        if self.response_image_type not in IMAGE_TYPES:
            raise _refused(
                "response_image_type",
                f"one of {', '.join(IMAGE_TYPES)} (got {self.response_image_type!r})",
            )

    def request_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "model_name": self.model_name,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "width": self.width,
            "height": self.height,
            "image_num": self.image_num,
            "steps": self.steps,
            "seed": self.seed,
            "guidance_scale": float(self.guidance_scale),
            "sampler_name": self.sampler_name,
        }
        if self.clip_skip is not None:
            fields["clip_skip"] = self.clip_skip
        return fields

    def to_payload(self) -> dict[str, Any]:
        """The JSON body: `{"extra": {"response_image_type"}, "request": {...}}`."""
        return {
            "extra": {"response_image_type": self.response_image_type},
            "request": self.request_fields(),
        }


@dataclass(frozen=True)
class Img2ImgRequest(Txt2ImgRequest):
    """A v3 image-to-image request: `image` (PNG/JPEG/WebP bytes, sent as `image_base64`)
    redrawn at `strength` (0 keeps it, 1 ignores it; Novita's SDKs default to 0.5)."""

    image: bytes = field(default=b"", repr=False)
    strength: float = 0.5

    def validate(self) -> None:
        super().validate()
        if not (isinstance(self.image, bytes) and self.image):
            raise _refused("image", "must not be empty")
        if not (_is_number(self.strength) and self.strength in API_STRENGTH):
            raise _refused(
                "strength",
                f"must be a number from {API_STRENGTH.describe()} (got {self.strength!r})",
            )

    def request_fields(self) -> dict[str, Any]:
        fields = super().request_fields()
        fields["image_base64"] = base64.b64encode(self.image).decode("ascii")
        fields["strength"] = float(self.strength)
        return fields


class TaskStatus(StrEnum):
    """`task.status`. Anything undocumented reads as UNKNOWN, which is never final."""

    QUEUED = "TASK_STATUS_QUEUED"
    PROCESSING = "TASK_STATUS_PROCESSING"
    SUCCEED = "TASK_STATUS_SUCCEED"
    FAILED = "TASK_STATUS_FAILED"
    UNKNOWN = "TASK_STATUS_UNKNOWN"

    @property
    def is_final(self) -> bool:
        return self in (TaskStatus.SUCCEED, TaskStatus.FAILED)

    @classmethod
    def read(cls, value: object) -> TaskStatus:
        if not isinstance(value, str):
            return cls.UNKNOWN
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


@dataclass(frozen=True)
class TaskImage:
    """One result: its presigned URL, seconds it stays valid (None: not said, or "0")."""

    url: str
    ttl: float | None
    image_type: str


@dataclass(frozen=True)
class TaskResult:
    """One reading of `GET /v3/async/task-result`.

    `progress` is 0..1 (from `progress_percent`), `eta` seconds left (None when not given).
    `seed` is `extra.seed` read as an integer when it is one (None otherwise); `raw_seed` is
    what arrived, for callers with their own checks. Novita reports one seed per task.
    """

    task_id: str
    status: TaskStatus
    raw_status: str
    reason: str
    task_type: str
    progress: float
    eta: float | None
    images: tuple[TaskImage, ...]
    seed: int | None
    raw_seed: object = None

    @property
    def image_urls(self) -> tuple[str, ...]:
        return tuple(image.url for image in self.images)

    @classmethod
    def parse(cls, task_id: str, data: object) -> TaskResult:
        """Read a task-result body; raises `MalformedResponse` only when `task` is missing."""
        if not isinstance(data, dict) or not isinstance(data.get("task"), dict):
            raise MalformedResponse(f"task-result for {task_id}: no task object")
        task = data["task"]
        raw_status = task.get("status")
        raw_extra = data.get("extra")
        extra = raw_extra if isinstance(raw_extra, dict) else {}
        raw_seed = extra.get("seed")
        percent = read_number(task.get("progress_percent"))
        eta = read_number(task.get("eta"))
        return cls(
            task_id=str(task.get("task_id") or task_id),
            status=TaskStatus.read(raw_status),
            raw_status=str(raw_status),
            reason=str(task.get("reason") or ""),
            task_type=str(task.get("task_type") or ""),
            progress=min(1.0, max(0.0, percent / 100)) if percent is not None else 0.0,
            eta=max(0.0, eta) if eta is not None else None,
            images=_images(data.get("images")),
            seed=read_seed(raw_seed),
            raw_seed=raw_seed,
        )


def read_number(value: object) -> float | None:
    """A finite number from a JSON number or a numeric string ("3600", " 12.5 "); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def read_seed(value: object) -> int | None:
    """`extra.seed` ("392212448" or 392212448) as an int in 0..2**32-1, else None."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if _is_int(value) and 0 <= value <= MAX_SEED:
        return value
    return None


def _images(value: object) -> tuple[TaskImage, ...]:
    if not isinstance(value, list):
        return ()
    found = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("image_url"), str):
            continue
        if not item["image_url"]:
            continue
        ttl = read_number(item.get("image_url_ttl"))
        found.append(
            TaskImage(
                url=item["image_url"],
                ttl=ttl if ttl is not None and ttl > 0 else None,
                image_type=str(item.get("image_type") or ""),
            )
        )
    return tuple(found)
