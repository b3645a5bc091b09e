"""A job: one request for images, from the moment it is admitted until it ends exactly once."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from jobs.backend import Generation

# Discord lets an interaction token be used for 15 minutes; keep a margin for the last edit.
TOKEN_LIFETIME = 15 * 60.0
TOKEN_SAFETY_MARGIN = 30.0
UPSCALE_FACTOR = 2.0


class JobState(StrEnum):
    QUEUED = "queued"  # credit reserved, waiting in the queue (every process's) for a slot
    STARTING = "starting"  # claimed, its source image being read: not sent to the backend yet
    SUBMITTING = "submitting"  # the submit is under way: the backend may or may not have it
    SUBMITTED = "submitted"  # the backend has it (its handle is stored): follow, never resubmit
    DELIVERING = "delivering"  # images fetched, being posted to Discord
    DONE = "done"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED)


class Charge(StrEnum):
    RESERVED = "reserved"
    COMMITTED = "committed"  # the backend spent (or may have spent) the credit
    RELEASED = "released"  # nothing was spent: the reservation is returned


class JobKind(StrEnum):
    TXT2IMG = "txt2img"  # also image-to-image, when the request carries an init image
    UPSCALE = "upscale"  # image `upscale_index` of the parent job, made larger
    VARIATION = "variation"  # image-to-image from image `upscale_index` of the parent job

    @property
    def needs_source(self) -> bool:
        """The job starts from one of its parent's posted images."""
        return self in (JobKind.UPSCALE, JobKind.VARIATION)


@dataclass(frozen=True)
class Origin:
    """Where a job came from and how to answer it."""

    guild_id: int | None
    channel_id: int
    user_id: int
    application_id: int | None = None
    interaction_token: str | None = None
    token_expires_at: float | None = None
    age_restricted: bool = False
    upload_limit: int = 10 * 1024 * 1024

    def can_use_token(self, now: float) -> bool:
        return (
            self.interaction_token is not None
            and self.token_expires_at is not None
            and now < self.token_expires_at - TOKEN_SAFETY_MARGIN
        )


@dataclass(frozen=True)
class JobResult:
    """What was really generated, kept for the embed, Details and rerolls: the seeds the
    backend reports, the size of the images as delivered (pixels) and seconds from admission
    to images in hand."""

    seeds: tuple[int, ...]
    width: int
    height: int
    duration: float
    model: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {
                "seeds": list(self.seeds),
                "width": self.width,
                "height": self.height,
                "duration": self.duration,
                "model": self.model,
            }
        )

    @classmethod
    def from_json(cls, text: str | None) -> JobResult | None:
        if not text:
            return None
        data = json.loads(text)
        return cls(
            seeds=tuple(data["seeds"]),
            width=data["width"],
            height=data["height"],
            duration=data["duration"],
            model=data.get("model", ""),
        )


@dataclass(frozen=True)
class Job:
    id: str
    kind: JobKind
    state: JobState
    charge: Charge
    cost: int
    origin: Origin
    request: Generation
    sandbox: bool = False
    parent_job_id: str | None = None
    task_id: str | None = None
    message_id: int | None = None
    result: JobResult | None = None
    failure: str | None = None
    failure_detail: str | None = None
    created_at: float = 0.0
    finished_at: float | None = None
    deleted_at: float | None = None
    upscale_index: int | None = None
    grant_used: int = 0  # images of the member's one-off grant this job took
    followup_message_ids: tuple[int, ...] = ()  # Discord follow-ups holding images that
    # did not fit in the first message
    refusals: int = 0  # submits the backend certainly refused so far (it was busy)

    @property
    def images_posted(self) -> bool:
        """The images are (being) shown: buttons that act on them may be used."""
        return self.state in (JobState.DELIVERING, JobState.DONE)

    @property
    def output_size(self) -> tuple[int, int]:
        """The size the images really have when known, else the size asked for."""
        if self.result is not None:
            return self.result.width, self.result.height
        scale = UPSCALE_FACTOR if self.kind is JobKind.UPSCALE else 1
        return int(self.request.width * scale), int(self.request.height * scale)

    def with_(self, **changes: Any) -> Job:
        """A copy with `changes`: the fields copied as they are and the changed ones set,
        not `dataclasses.replace` (which rebuilds all 23 fields through `__init__`: about
        10 µs, and a job is copied at each of its state changes; this is under 1 µs)."""
        unknown = changes.keys() - _JOB_FIELDS
        if unknown:
            raise TypeError(f"Job has no field {', '.join(sorted(unknown))}")
        copied = object.__new__(Job)
        copied.__dict__.update(self.__dict__, **changes)  # frozen: not through __setattr__
        return copied


_JOB_FIELDS = frozenset(field.name for field in fields(Job))
_GENERATION_FIELDS = tuple(field.name for field in fields(Generation))


def request_to_json(request: Generation) -> str:
    """The request as stored with its job (an init image as base64)."""
    # Shallow: every field is a plain value (asdict's deep copy was a cost of every job).
    data = {name: getattr(request, name) for name in _GENERATION_FIELDS}
    if request.init_image is not None:
        data["init_image"] = base64.b64encode(request.init_image).decode("ascii")
    return json.dumps(data)


def request_from_json(text: str) -> Generation:
    """Read a stored request, also one stored before the backend boundary (v2 field names)."""
    data = json.loads(text)
    legacy = {"sampler_name": "sampler", "batch_size": "images"}
    for old, new in legacy.items():
        if old in data:
            data[new] = data.pop(old)
    if "n_iter" in data:
        data["images"] = data.get("images", 1) * data.pop("n_iter")
    data.pop("model_name", None)
    if data.get("init_image"):
        data["init_image"] = base64.b64decode(data["init_image"])
    return Generation(**data)
