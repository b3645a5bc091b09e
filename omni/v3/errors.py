"""Novita v3's errors, as the classes of `omni.errors` (one hierarchy for the vendor).

v3 answers a refusal with a non-2xx status and `{"code", "reason", "message", "metadata"}`.
The *reason* decides the class, not the status: `BILLING_BALANCE_NOT_ENOUGH` arrives as 400
in the reference's table and as 403 in at least one report, and 403 is also
`INVALID_API_KEY`. Only when no known reason is given does the status decide.
"""

from __future__ import annotations

import re

from omni.errors import (
    AuthenticationError,
    InsufficientCredit,
    InvalidRequest,
    OmniError,
    ServerError,
    TaskNotFound,
    TransientError,
    UnknownAPIError,
)

INVALID_API_KEY = "INVALID_API_KEY"
RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
TASK_NOT_FOUND = "TASK_NOT_FOUND"
BILLING_BALANCE_NOT_ENOUGH = "BILLING_BALANCE_NOT_ENOUGH"
INVALID_REQUEST_BODY = "INVALID_REQUEST_BODY"

# Request fields a 400's message may name, longest first so "negative_prompt" beats "prompt".
REQUEST_FIELDS = (
    "negative_prompt",
    "guidance_scale",
    "sampler_name",
    "image_base64",
    "model_name",
    "image_num",
    "clip_skip",
    "strength",
    "prompt",
    "height",
    "width",
    "steps",
    "seed",
)
_FIELD = re.compile(r"(?<![A-Za-z_])(" + "|".join(REQUEST_FIELDS) + r")(?![A-Za-z_])")


class RateLimited(TransientError):
    """HTTP 429 `RATE_LIMIT_EXCEEDED`: the request was not taken; nothing was billed.

    `retry_after` is seconds to wait when the reply said (a `Retry-After` header), else None.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def field_named(message: str) -> str | None:
    """The first request field `message` names (`"request.steps: ..."` → `"steps"`)."""
    match = _FIELD.search(message)
    return match.group(1) if match else None


def error_for_reply(
    status: int, reason: str, message: str, *, what: str, retry_after: float | None = None
) -> OmniError:
    """The exception for a non-2xx v3 reply. `what` ("POST /v3/async/txt2img") starts the
    message; `message` must already be safe to log (the caller removes the key)."""
    text = f"{what}: HTTP {status}" + (f" {reason}" if reason else "")
    if message:
        text += f": {message}"
    if reason == INVALID_API_KEY:
        return AuthenticationError(text)
    if reason == TASK_NOT_FOUND:
        return TaskNotFound(text)
    if reason == BILLING_BALANCE_NOT_ENOUGH:
        return InsufficientCredit(text)
    if reason == RATE_LIMIT_EXCEEDED or status == 429:
        return RateLimited(text, retry_after=retry_after)
    if status >= 500 or status == 408:
        return ServerError(text, status=status)
    if status in (401, 403):
        return AuthenticationError(text)
    if status == 400:
        return InvalidRequest(text, field=field_named(message))
    return UnknownAPIError(text)
