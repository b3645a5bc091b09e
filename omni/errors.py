"""One exception hierarchy for everything that can go wrong talking to Omniinfer.

Callers act on the class, never on message text: `TransientError` may be retried later,
`InvalidRequest` needs different input, `AuthenticationError` and `InsufficientCredit` need an
operator, `TaskFailed`/`TaskTimedOut` end one job. Messages never contain the API key.
"""

from __future__ import annotations


class OmniError(Exception):
    """Base class. `code` is the API envelope code when there was one."""

    code: int | None = None

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidRequest(OmniError):
    """The request was refused for its content (locally, or envelope codes 1, 2, 6, 8, 10, 11;
    code 1 is "invalid parameter" in both Go SDKs, not only a body that is not JSON).

    `field` names the offending field when known, so a caller can point at its own option.
    """

    def __init__(self, message: str, *, field: str | None = None, code: int | None = None):
        super().__init__(message, code=code)
        self.field = field


class AuthenticationError(OmniError):
    """Envelope code 4: the key is missing, wrong or revoked."""

    code = 4


class InsufficientCredit(OmniError):
    """Envelope code 7: the account's credit does not cover the request."""

    code = 7


class TaskNotFound(OmniError):
    """Envelope code 3: the task id is unknown (never existed, or expired)."""

    code = 3


class TransientError(OmniError):
    """A fault that may pass: 5xx, dropped connection, timeout, malformed reply, codes -1/5/9."""


class ServerError(TransientError):
    """HTTP 5xx or envelope codes -1 (internal) and 5 (host unavailable)."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None):
        super().__init__(message, code=code)
        self.status = status


class ConnectionFailed(TransientError):
    """The connection could not be made, or dropped before a full reply arrived."""


class RequestTimedOut(TransientError):
    """No reply within the client's request timeout, or envelope code 9."""


class MalformedResponse(TransientError):
    """The reply was not the JSON envelope the API promises."""


class SubmissionUncertain(TransientError):
    """A submit failed in a way that may have happened after Omniinfer accepted it.

    It is deliberately not retried: a second POST could start (and bill) a second task.
    """


class UnknownAPIError(OmniError):
    """An envelope code this client does not know."""


class TaskFailed(OmniError):
    """The task reached status 3; `reason` is Omniinfer's `failed_reason`."""

    def __init__(self, task_id: str, reason: str) -> None:
        super().__init__(f"task {task_id} failed: {reason or 'no reason given'}")
        self.task_id = task_id
        self.reason = reason


class TaskTimedOut(OmniError):
    """The task reached status 4, or did not finish within the caller's bounded wait."""

    def __init__(self, task_id: str, *, by_server: bool) -> None:
        who = "Omniinfer timed the task out" if by_server else "gave up waiting for the task"
        super().__init__(f"task {task_id}: {who}")
        self.task_id = task_id
        self.by_server = by_server


class DownloadFailed(OmniError):
    """A result image could not be fetched (after retries), was too big, or had a bad URL."""


_CODE_CLASSES: dict[int, type[OmniError]] = {
    -1: ServerError,
    1: InvalidRequest,
    2: InvalidRequest,
    3: TaskNotFound,
    4: AuthenticationError,
    5: ServerError,
    6: InvalidRequest,
    7: InsufficientCredit,
    8: InvalidRequest,
    9: RequestTimedOut,
    10: InvalidRequest,
    11: InvalidRequest,
}

_CODE_MEANINGS: dict[int, str] = {
    -1: "Omniinfer internal error",
    1: "invalid parameter",
    2: "model does not exist",
    3: "task id does not exist",
    4: "invalid API key",
    5: "Omniinfer host unavailable",
    6: "parameter out of range",
    7: "the account's credit does not cover the request",
    8: "sampler does not exist",
    9: "Omniinfer timed out",
    10: "feature not supported",
    11: "prompt is not allowed",
}

_CODE_FIELDS: dict[int, str] = {2: "model_name", 8: "sampler_name"}


def error_for_code(code: int, msg: str) -> OmniError:
    """Map a non-zero envelope code and its `msg` to the exception a caller can act on."""
    meaning = _CODE_MEANINGS.get(code)
    text = f"{meaning}: {msg}" if meaning and msg else (meaning or msg or "no message")
    cls = _CODE_CLASSES.get(code)
    if cls is None:
        return UnknownAPIError(f"unknown API code {code}: {msg or 'no message'}", code=code)
    if cls is InvalidRequest:
        return InvalidRequest(text, field=_CODE_FIELDS.get(code), code=code)
    return cls(text, code=code)
