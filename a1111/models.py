"""Request and reply shapes of the `/sdapi/v1` API (and `/internal/progress`).

Replies are read defensively: a server is another program, maybe another version or fork,
so a field of the wrong type is dropped rather than trusted. Images stay base64 text here;
decoding and checking them is the caller's business.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from a1111.errors import MalformedReply

RANDOM = -1


@dataclass(frozen=True)
class GenerationRequest:
    """A txt2img request, or img2img when `init_images` (base64) is set.

    Sizes in pixels, `seed`/`subseed` -1 for random; `denoising_strength` 0..1 (img2img).
    `force_task_id` lets `/internal/progress` follow this very request.
    """

    prompt: str
    negative_prompt: str = ""
    sampler_name: str = "Euler a"
    steps: int = 20
    cfg_scale: float = 7.0
    seed: int = RANDOM
    subseed: int = RANDOM
    subseed_strength: float = 0.0
    width: int = 1024
    height: int = 1024
    batch_size: int = 1
    n_iter: int = 1
    force_task_id: str | None = None
    init_images: tuple[str, ...] | None = field(default=None, repr=False)
    denoising_strength: float | None = None
    override_settings: Mapping[str, Any] | None = None

    @property
    def is_img2img(self) -> bool:
        return self.init_images is not None

    def to_json(self) -> dict[str, Any]:
        """The body A1111 expects. `save_images=False` also keeps the batch grid out of the
        reply (A1111 draws a grid only when it saves one)."""
        body: dict[str, Any] = {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "sampler_name": self.sampler_name,
            "steps": self.steps,
            "cfg_scale": self.cfg_scale,
            "seed": self.seed,
            "subseed": self.subseed,
            "subseed_strength": self.subseed_strength,
            "width": self.width,
            "height": self.height,
            "batch_size": self.batch_size,
            "n_iter": self.n_iter,
            "send_images": True,
            "save_images": False,
        }
        if self.force_task_id is not None:
            body["force_task_id"] = self.force_task_id
        if self.override_settings:
            body["override_settings"] = dict(self.override_settings)
        if self.init_images is not None:
            body["init_images"] = list(self.init_images)
            if self.denoising_strength is not None:
                body["denoising_strength"] = self.denoising_strength
        return body


@dataclass(frozen=True)
class GenerationResult:
    """A finished txt2img/img2img reply: base64 images as sent, the parsed `info` (empty when
    the server sent none or something unreadable) and the echoed `parameters`."""

    images: tuple[str, ...] = field(repr=False)
    info: dict[str, Any]
    parameters: dict[str, Any] = field(repr=False)

    @classmethod
    def parse(cls, body: object) -> GenerationResult:
        if not isinstance(body, dict):
            raise MalformedReply("the generation reply is not a JSON object")
        images = body.get("images")
        if images is None:
            images = []
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            raise MalformedReply("the generation reply's images are not a list of text")
        parameters = body.get("parameters")
        return cls(
            images=tuple(images),
            info=parse_info(body.get("info")),
            parameters=parameters if isinstance(parameters, dict) else {},
        )

    @property
    def generated(self) -> tuple[str, ...]:
        """The generated images only: without a leading grid (`index_of_first_image`) and
        without what extensions append after them (ControlNet maps...), when `info` says."""
        first = self.info.get("index_of_first_image")
        first = first if _is_int(first) and 0 <= first <= len(self.images) else 0
        seeds = self.info.get("all_seeds")
        count = len(seeds) if isinstance(seeds, list) and seeds else len(self.images)
        return self.images[first : first + count]


def parse_info(value: object) -> dict[str, Any]:
    """A1111's `info`: a JSON string (sometimes already an object); anything else → {}."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip():
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


@dataclass(frozen=True)
class TaskProgress:
    """One look at a task. `progress` 0..1 and `eta` seconds while active; `live_preview` is
    a data: URI (per-task endpoint) or bare base64 (global one), or None when unchanged.

    `per_task` is False when read from the global `/sdapi/v1/progress` (servers without
    `/internal/progress`): that one describes whatever the server is running, so `active`
    there assumes the running job is ours when the server does not name it.
    """

    active: bool
    queued: bool
    completed: bool
    progress: float | None = None
    eta: float | None = None
    live_preview: str | None = field(default=None, repr=False)
    preview_id: int | None = None
    textinfo: str | None = None
    per_task: bool = True

    @classmethod
    def from_internal(cls, body: object) -> TaskProgress:
        """`POST /internal/progress` → {active, queued, completed, progress, eta,
        live_preview, id_live_preview, textinfo}."""
        if not isinstance(body, dict):
            raise MalformedReply("the progress reply is not a JSON object")
        preview = body.get("live_preview")
        preview_id = body.get("id_live_preview")
        return cls(
            active=body.get("active") is True,
            queued=body.get("queued") is True,
            completed=body.get("completed") is True,
            progress=_fraction(body.get("progress")),
            eta=_seconds(body.get("eta")),
            live_preview=preview if isinstance(preview, str) and preview else None,
            preview_id=preview_id if _is_int(preview_id) else None,
            textinfo=_text(body.get("textinfo")),
        )

    @classmethod
    def from_global(cls, body: object, task_id: str) -> TaskProgress:
        """`GET /sdapi/v1/progress` → {progress, eta_relative, state {job_count,
        interrupted...}, current_image, textinfo, current_task}, seen from `task_id`."""
        if not isinstance(body, dict):
            raise MalformedReply("the progress reply is not a JSON object")
        raw_state = body.get("state")
        state = raw_state if isinstance(raw_state, dict) else {}
        job_count = state.get("job_count")
        busy = _is_int(job_count) and job_count > 0
        current = body.get("current_task")
        # A1111 binds `current_task` at import time, so it is null there; forks fill it in.
        active = current == task_id if isinstance(current, str) and current else busy
        image = body.get("current_image")
        return cls(
            active=active,
            queued=not active,
            completed=False,
            progress=_fraction(body.get("progress")) if active else None,
            eta=_seconds(body.get("eta_relative")) if active else None,
            live_preview=image if active and isinstance(image, str) and image else None,
            preview_id=None,
            textinfo=_text(body.get("textinfo")),
            per_task=False,
        )


@dataclass(frozen=True)
class Sampler:
    name: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class SDModel:
    title: str
    model_name: str
    hash: str | None = None


@dataclass(frozen=True)
class Upscaler:
    name: str
    scale: float | None = None


@dataclass(frozen=True)
class UpscaleResult:
    """`POST /sdapi/v1/extra-single-image` → one base64 image and the server's HTML note."""

    image: str = field(repr=False)
    html_info: str = ""

    @classmethod
    def parse(cls, body: object) -> UpscaleResult:
        if not isinstance(body, dict) or not isinstance(body.get("image"), str):
            raise MalformedReply("the upscale reply has no image")
        return cls(image=body["image"], html_info=_text(body.get("html_info")) or "")


def parse_samplers(body: object) -> list[Sampler]:
    """`[{"name", "aliases", "options"}]`; entries without a name are skipped."""
    samplers = []
    for item in _list(body, "samplers"):
        if isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"]:
            aliases = item.get("aliases")
            names = (
                tuple(a for a in aliases if isinstance(a, str)) if isinstance(aliases, list) else ()
            )
            samplers.append(Sampler(item["name"], names))
    return samplers


def parse_models(body: object) -> list[SDModel]:
    """`[{"title", "model_name", "hash", "sha256", "filename", "config"}]`."""
    models = []
    for item in _list(body, "sd-models"):
        if isinstance(item, dict) and isinstance(item.get("title"), str):
            name = item.get("model_name")
            models.append(
                SDModel(
                    title=item["title"],
                    model_name=name if isinstance(name, str) else item["title"],
                    hash=_text(item.get("hash")),
                )
            )
    return models


def parse_upscalers(body: object) -> list[Upscaler]:
    """`[{"name", "model_name", "model_path", "model_url", "scale"}]`."""
    upscalers = []
    for item in _list(body, "upscalers"):
        if isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"]:
            scale = item.get("scale")
            upscalers.append(Upscaler(item["name"], float(scale) if _is_number(scale) else None))
    return upscalers


def _list(body: object, what: str) -> list[Any]:
    if not isinstance(body, list):
        raise MalformedReply(f"the {what} reply is not a JSON list")
    return body


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fraction(value: object) -> float | None:
    return min(1.0, max(0.0, float(value))) if _is_number(value) else None


def _seconds(value: object) -> float | None:
    return max(0.0, float(value)) if _is_number(value) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
