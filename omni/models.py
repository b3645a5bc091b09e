"""Typed requests and responses for the Omniinfer v2 API.

Requests validate themselves against the SDXL rules in `omni.rules`, so an invalid request is
refused with a message naming the field and its allowed range before any credit is spent.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from omni import rules
from omni.errors import InvalidRequest, MalformedResponse


def _refused(field_name: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{field_name}: {message}", field=field_name)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_int(field_name: str, value: object, bounds: rules.Bounds) -> None:
    if not (_is_int(value) and value in bounds):
        raise _refused(
            field_name, f"must be a whole number from {bounds.describe()} (got {value!r})"
        )


@dataclass(frozen=True)
class Txt2ImgRequest:
    """An SDXL text-to-image request; field names follow the API's JSON."""

    prompt: str
    negative_prompt: str = ""
    sampler_name: str = rules.DEFAULT_SAMPLER
    steps: int = rules.DEFAULT_STEPS
    cfg_scale: float = rules.DEFAULT_CFG_SCALE
    seed: int = rules.RANDOM_SEED
    width: int = rules.DEFAULT_SIZE[0]
    height: int = rules.DEFAULT_SIZE[1]
    batch_size: int = 1
    n_iter: int = 1
    model_name: str = rules.SDXL_MODEL

    @property
    def image_count(self) -> int:
        return self.batch_size * self.n_iter

    def validate(self) -> None:
        """Raise `InvalidRequest` naming the first field that breaks the SDXL rules.

        Runs once per submit: the messages are only worded for a field that fails.
        """
        problem = rules.prompt_problem(self.prompt, self.negative_prompt)
        if problem is not None:
            raise _refused(*problem)
        if self.sampler_name not in rules.SDXL_SAMPLERS:
            raise _refused(
                "sampler_name",
                f"{self.sampler_name!r} is not available for SDXL 1.0; "
                f"choose one of: {', '.join(rules.SDXL_SAMPLERS)}",
            )
        _check_int("steps", self.steps, rules.STEPS)
        if not (_is_number(self.cfg_scale) and self.cfg_scale in rules.CFG_SCALE):
            raise _refused(
                "cfg_scale",
                f"must be a number from {rules.CFG_SCALE.describe()} (got {self.cfg_scale!r})",
            )
        if not (_is_int(self.seed) and (self.seed == rules.RANDOM_SEED or self.seed in rules.SEED)):
            raise _refused(
                "seed",
                f"must be -1 (random) or a whole number from {rules.SEED.describe()} "
                f"(got {self.seed!r})",
            )
        if (self.width, self.height) not in rules.SDXL_SIZES:
            sizes = ", ".join(rules.size_label(w, h) for w, h in rules.SDXL_SIZES)
            raise _refused(
                "size",
                f"{self.width}x{self.height} is not an SDXL 1.0 size; choose one of: {sizes}",
            )
        _check_int("batch_size", self.batch_size, rules.BATCH_SIZE)
        _check_int("n_iter", self.n_iter, rules.N_ITER)
        if not self.model_name:
            raise _refused("model_name", "must not be empty")

    def to_payload(self) -> dict[str, Any]:
        """The JSON body: the fields as they are (all flat values, so no `asdict` deep copy)."""
        payload = dict(vars(self))
        payload["cfg_scale"] = float(self.cfg_scale)
        return payload


@dataclass(frozen=True)
class Img2ImgRequest(Txt2ImgRequest):
    """An SDXL image-to-image request: the txt2img fields plus the starting picture.

    `init_image` is image bytes (PNG/JPEG/WebP), sent base64-encoded as the API's one-item
    `init_images`; `denoising_strength` 0 keeps the picture, 1 ignores it (SDK default 0.75).
    The output has the requested `width`×`height`, whatever the picture's size.
    """

    init_image: bytes = field(default=b"", repr=False)
    denoising_strength: float = rules.DEFAULT_DENOISING_STRENGTH

    def validate(self) -> None:
        super().validate()
        if not (isinstance(self.init_image, bytes | bytearray) and len(self.init_image) > 0):
            raise _refused("init_image", "must be an image")
        if len(self.init_image) > rules.MAX_INIT_IMAGE_BYTES:
            raise _refused(
                "init_image",
                f"must be at most {rules.MAX_INIT_IMAGE_BYTES // (1024 * 1024)} MiB "
                f"(got {len(self.init_image)} bytes)",
            )
        if not (
            _is_number(self.denoising_strength)
            and self.denoising_strength in rules.DENOISING_STRENGTH
        ):
            raise _refused(
                "denoising_strength",
                f"must be a number from {rules.DENOISING_STRENGTH.describe()} "
                f"(got {self.denoising_strength!r})",
            )

    def to_payload(self) -> dict[str, Any]:
        payload = super().to_payload()
        del payload["init_image"]
        payload["init_images"] = [base64.b64encode(self.init_image).decode("ascii")]
        payload["denoising_strength"] = float(self.denoising_strength)
        return payload


@dataclass(frozen=True)
class UpscaleRequest:
    """Upscale one image (PNG bytes) by a factor with Omniinfer's upscaler."""

    image: bytes = field(repr=False)
    factor: float = rules.DEFAULT_UPSCALE_FACTOR
    upscaler: str = rules.DEFAULT_UPSCALER

    def validate(self) -> None:
        if not self.image:
            raise _refused("image", "must not be empty")
        if not (isinstance(self.factor, int | float) and self.factor in rules.UPSCALE_FACTOR):
            raise _refused(
                "factor",
                f"must be a number from {rules.UPSCALE_FACTOR.describe()} (got {self.factor!r})",
            )

    def to_payload(self) -> dict[str, Any]:
        return {
            "image": base64.b64encode(self.image).decode("ascii"),
            "upscaler_1": self.upscaler,
            "resize_mode": 0,
            "upscaling_resize": float(self.factor),
        }


class TaskStatus(IntEnum):
    """`/v2/progress` statuses. `UNKNOWN` stands for any value the API documents nowhere: it
    is not final, so a caller keeps polling until the task ends or its own wait runs out."""

    UNKNOWN = -1
    QUEUED = 0
    RUNNING = 1
    SUCCEEDED = 2
    FAILED = 3
    TIMED_OUT = 4

    @property
    def is_final(self) -> bool:
        return self >= TaskStatus.SUCCEEDED


@dataclass(frozen=True)
class GenerationInfo:
    """The parts of the `info` JSON string worth showing: what was really generated."""

    seed: int | None
    all_seeds: tuple[int, ...]
    sampler_name: str | None
    steps: int | None
    cfg_scale: float | None
    width: int | None
    height: int | None
    model_hash: str | None
    raw: dict[str, Any]

    @classmethod
    def parse(cls, info: object) -> GenerationInfo | None:
        """Parse `info` (a JSON string, sometimes already an object); None when absent."""
        if isinstance(info, str):
            if not info.strip():
                return None
            try:
                info = json.loads(info)
            except ValueError:
                return None
        if not isinstance(info, dict):
            return None
        seeds = info.get("all_seeds")
        seed = info.get("seed")
        return cls(
            seed=seed if isinstance(seed, int) else None,
            all_seeds=tuple(s for s in seeds if isinstance(s, int))
            if isinstance(seeds, list)
            else (),
            sampler_name=info.get("sampler_name"),
            steps=info.get("steps"),
            cfg_scale=info.get("cfg_scale"),
            width=info.get("width"),
            height=info.get("height"),
            model_hash=info.get("sd_model_hash"),
            raw=info,
        )


@dataclass(frozen=True)
class Progress:
    """One reading of `/v2/progress`."""

    task_id: str
    status: TaskStatus
    progress: float
    eta_relative: float
    images: tuple[str, ...]
    preview_images: tuple[str, ...]
    failed_reason: str
    info: GenerationInfo | None

    @classmethod
    def parse(cls, task_id: str, data: object) -> Progress:
        if not isinstance(data, dict):
            raise MalformedResponse(f"progress for {task_id}: data is not an object")
        raw_status = data.get("status")
        try:
            status = TaskStatus(int(raw_status))  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):
            status = TaskStatus.UNKNOWN
        if isinstance(raw_status, bool) or (
            isinstance(raw_status, float) and not raw_status.is_integer()
        ):
            status = TaskStatus.UNKNOWN
        return cls(
            task_id=task_id,
            status=status,
            progress=_number(data.get("progress"), 0.0),
            eta_relative=max(0.0, _number(data.get("eta_relative"), 0.0)),
            images=_urls(data.get("imgs")),
            preview_images=_urls(data.get("current_images")),
            failed_reason=str(data.get("failed_reason") or ""),
            info=GenerationInfo.parse(data.get("info")),
        )


def _number(value: object, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


def _urls(value: object) -> tuple[str, ...]:
    """Keep only what reads as an http(s) URL; previews' encoding is undocumented."""
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str) and v.startswith(("http://", "https://")))


@dataclass(frozen=True)
class ModelInfo:
    name: str
    type: str
    hash: str | None = None

    @classmethod
    def parse(cls, data: object) -> ModelInfo | None:
        if not isinstance(data, dict):
            return None
        if not isinstance(data.get("sd_name") or data.get("name"), str):
            return None
        return cls(
            name=data.get("sd_name") or data["name"],
            type=str(data.get("type") or "checkpoint"),
            hash=data.get("hash"),
        )


@dataclass(frozen=True)
class Submission:
    """The answer to a submit: the task to follow, and any warning Omniinfer attached."""

    task_id: str
    warning: str = ""
