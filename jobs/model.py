"""A job: one request for images, from the moment it is admitted until it ends exactly once."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from omni import Txt2ImgRequest

# Discord lets an interaction token be used for 15 minutes; keep a margin for the last edit.
TOKEN_LIFETIME = 15 * 60.0
TOKEN_SAFETY_MARGIN = 30.0
UPSCALE_FACTOR = 2.0


class JobState(StrEnum):
    QUEUED = "queued"  # credit reserved, waiting for a slot at Omniinfer
    SUBMITTING = "submitting"  # the POST is under way: Omniinfer may or may not have it
    SUBMITTED = "submitted"  # Omniinfer has it (task_id known): poll, never submit again
    DELIVERING = "delivering"  # images fetched, being posted to Discord
    DONE = "done"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED)


class Charge(StrEnum):
    RESERVED = "reserved"
    COMMITTED = "committed"  # Omniinfer spent (or may have spent) the credit
    RELEASED = "released"  # nothing was spent: the reservation is returned


class JobKind(StrEnum):
    TXT2IMG = "txt2img"
    UPSCALE = "upscale"


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
    """What was really generated (from Omniinfer's `info`), kept for the embed and rerolls."""

    seeds: tuple[int, ...]
    width: int
    height: int
    duration: float  # seconds from admission to images in hand

    def to_json(self) -> str:
        return json.dumps(
            {
                "seeds": list(self.seeds),
                "width": self.width,
                "height": self.height,
                "duration": self.duration,
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
        )


@dataclass(frozen=True)
class Job:
    id: str
    kind: JobKind
    state: JobState
    charge: Charge
    cost: int
    origin: Origin
    request: Txt2ImgRequest
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
    more_message_ids: tuple[int, ...] = ()  # messages with the images the first could not hold

    @property
    def images_posted(self) -> bool:
        """The images are (being) shown: buttons that act on them may be used."""
        return self.state in (JobState.DELIVERING, JobState.DONE)

    @property
    def output_size(self) -> tuple[int, int]:
        scale = UPSCALE_FACTOR if self.kind is JobKind.UPSCALE else 1
        return int(self.request.width * scale), int(self.request.height * scale)

    def with_(self, **changes: Any) -> Job:
        return replace(self, **changes)


def request_to_json(request: Txt2ImgRequest) -> str:
    return json.dumps(request.to_payload())


def request_from_json(text: str) -> Txt2ImgRequest:
    return Txt2ImgRequest(**json.loads(text))
