"""How a job can end badly, and whether its credit was spent.

The Discord layer words each kind for members; this module decides what it means for the
ledger, once, for every caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from omni import (
    AuthenticationError,
    DownloadFailed,
    InsufficientCredit,
    InvalidRequest,
    OmniError,
    SubmissionUncertain,
    TaskFailed,
    TaskNotFound,
    TaskTimedOut,
    TransientError,
)


class FailureKind(StrEnum):
    INVALID_OPTION = "invalid_option"
    BAD_KEY = "bad_key"
    OUT_OF_CREDIT = "out_of_credit"
    TASK_FAILED = "task_failed"
    TIMED_OUT = "timed_out"
    UNAVAILABLE = "unavailable"  # Omniinfer down or unreachable
    UNCERTAIN = "uncertain"  # a submit whose fate is unknown: may have been charged
    TASK_LOST = "task_lost"  # Omniinfer no longer knows the task
    DOWNLOAD_FAILED = "download_failed"
    DELIVERY_FAILED = "delivery_failed"
    SOURCE_MISSING = "source_missing"  # an upscale's image is no longer in Discord
    EXPIRED = "expired"  # queued across a restart until the member could not be answered
    SHUTDOWN = "shutdown"
    INTERNAL = "internal"


# Kinds where Omniinfer has (or may have) done the work and billed it.
_SPENT = frozenset(
    {FailureKind.UNCERTAIN, FailureKind.DOWNLOAD_FAILED, FailureKind.DELIVERY_FAILED}
)


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    detail: str = ""

    @property
    def spent(self) -> bool:
        return self.kind in _SPENT


def classify(error: OmniError) -> Failure:
    """Map an omni exception to the failure a member is told about."""
    detail = error.message
    match error:
        case TaskFailed():
            return Failure(FailureKind.TASK_FAILED, error.reason)
        case TaskTimedOut():
            return Failure(FailureKind.TIMED_OUT, detail)
        case InvalidRequest():
            return Failure(FailureKind.INVALID_OPTION, detail)
        case AuthenticationError():
            return Failure(FailureKind.BAD_KEY, detail)
        case InsufficientCredit():
            return Failure(FailureKind.OUT_OF_CREDIT, detail)
        case SubmissionUncertain():
            return Failure(FailureKind.UNCERTAIN, detail)
        case TaskNotFound():
            return Failure(FailureKind.TASK_LOST, detail)
        case DownloadFailed():
            return Failure(FailureKind.DOWNLOAD_FAILED, detail)
        case TransientError():
            return Failure(FailureKind.UNAVAILABLE, detail)
    return Failure(FailureKind.INTERNAL, detail)
