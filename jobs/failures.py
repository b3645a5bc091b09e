"""How a job can end badly, and whether its credit was spent.

The Discord layer words each kind for members; this module decides what it means for the
ledger, once, for every caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from jobs.backend import (
    BackendError,
    BadOutput,
    CredentialsRefused,
    NotAccepted,
    OptionRefused,
    OutOfCredit,
    SubmitUncertain,
    TaskFailed,
    TaskLost,
    TaskTimedOut,
    Unavailable,
)


class FailureKind(StrEnum):
    INVALID_OPTION = "invalid_option"
    BAD_KEY = "bad_key"
    OUT_OF_CREDIT = "out_of_credit"
    TASK_FAILED = "task_failed"
    TIMED_OUT = "timed_out"  # the backend gave up on the task: nothing was made
    STOPPED_WAITING = "stopped_waiting"  # the bot gave up waiting: it may still be billed
    UNAVAILABLE = "unavailable"  # the backend down or unreachable
    UNCERTAIN = "uncertain"  # a submit whose fate is unknown: may have been charged
    TASK_LOST = "task_lost"  # the backend no longer knows the task (or its reply is gone)
    DOWNLOAD_FAILED = "download_failed"  # made (and billed), but the output failed the checks
    DELIVERY_FAILED = "delivery_failed"
    SOURCE_MISSING = "source_missing"  # an upscale's image is no longer in Discord
    EXPIRED = "expired"  # queued across a restart until the member could not be answered
    SHUTDOWN = "shutdown"
    INTERNAL = "internal"


# Kinds where the backend has (or may have) done the work and billed it.
_SPENT = frozenset(
    {
        FailureKind.UNCERTAIN,
        FailureKind.STOPPED_WAITING,
        FailureKind.DOWNLOAD_FAILED,
        FailureKind.DELIVERY_FAILED,
    }
)


@dataclass(frozen=True)
class Failure:
    """How a job ended badly. `detail` is the upstream's own words, already cleaned of
    secrets by the backend; `option` names the member's option a refusal was about;
    `billed` overrides the kind's usual answer to "was it spent?" when the backend knows."""

    kind: FailureKind
    detail: str = ""
    option: str | None = None
    billed: bool | None = None

    @property
    def spent(self) -> bool:
        return self.kind in _SPENT if self.billed is None else self.billed


def classify(error: BackendError) -> Failure:
    """Map a backend error to the failure a member is told about."""
    detail = error.message
    match error:
        case TaskFailed():
            return Failure(FailureKind.TASK_FAILED, error.reason)
        case TaskTimedOut(by_server=True):
            return Failure(FailureKind.TIMED_OUT, detail)
        case TaskTimedOut():
            return Failure(FailureKind.STOPPED_WAITING, detail)
        case OptionRefused():
            return Failure(FailureKind.INVALID_OPTION, detail, option=error.option)
        case CredentialsRefused():
            return Failure(FailureKind.BAD_KEY, detail)
        case OutOfCredit():
            return Failure(FailureKind.OUT_OF_CREDIT, detail)
        case SubmitUncertain():
            return Failure(FailureKind.UNCERTAIN, detail)
        case TaskLost():
            return Failure(FailureKind.TASK_LOST, detail, billed=error.spent)
        case BadOutput():
            return Failure(FailureKind.DOWNLOAD_FAILED, detail)
        case NotAccepted() | Unavailable():
            return Failure(FailureKind.UNAVAILABLE, detail)
    return Failure(FailureKind.INTERNAL, detail)
