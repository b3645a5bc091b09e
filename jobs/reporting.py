"""What the job runner tells the outside world; the Discord layer implements it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from jobs.failures import Failure
from jobs.intake import PendingRequest
from jobs.model import Job


class Stage(StrEnum):
    WAITING = "waiting"  # in line, every process's (JobState.QUEUED)
    ACCEPTED = "accepted"  # the backend has it in its own queue, not started
    RUNNING = "running"
    RESTARTING = "restarting"  # the bot is shutting down; the job resumes after


@dataclass(frozen=True)
class Update:
    stage: Stage
    progress: float = 0.0
    eta: float | None = None
    queue_position: int | None = None
    preview_url: str | None = None
    preview_image: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Posted:
    """Where a job's images went: the message with its buttons, and any that hold the rest."""

    message_id: int | None
    followup_message_ids: tuple[int, ...] = ()


FollowupRecorder = Callable[[tuple[int, ...]], Awaitable[object]]


class DeliveryFailed(Exception):
    """The images could not be posted anywhere the member would see them."""


class SourceImageMissing(Exception):
    """An upscale's source image is gone (its message deleted, or never posted)."""


class SourceImages(Protocol):
    async def fetch(self, job: Job) -> bytes:
        """The image an upscale job starts from (image `upscale_index` of its parent);
        raises SourceImageMissing when it cannot be found."""


class Reporter(Protocol):
    def update(self, job: Job, update: Update) -> None:
        """Show progress. Must not block or raise: implementations coalesce and throttle."""

    def forget(self, job_id: str) -> None:
        """Stop showing progress for a job another process has taken over: nothing more is
        sent for it from here, and what was kept for it is dropped. Must not block."""

    async def drain(self) -> None:
        """Wait for progress already scheduled to be shown (before a shutdown)."""

    async def deliver(
        self, job: Job, images: list[bytes], *, record: FollowupRecorder | None = None
    ) -> Posted:
        """Post the finished images; say which messages show them.

        Follow-ups already in `job.followup_message_ids` (posted by an earlier delivery of the
        same job) are not posted again; `record` is awaited with every follow-up id so far
        after each one is posted, so that stays true if this delivery is cut short."""

    async def fail(self, job: Job, failure: Failure) -> None:
        """Tell the member how the job ended. Best effort: must not raise."""

    async def account_paused(self, reason: str) -> None:
        """Tell moderators that generation is paused for everyone."""

    async def lost(self, request: PendingRequest) -> None:
        """Tell a member that their acknowledged request died with the previous process.
        Best effort: must not raise."""
