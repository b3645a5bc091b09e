"""The async client for Novita's v3 async image API: submit, poll, safe retries.

    client = NovitaClient(key, session=session)
    task_id = await client.txt2img(Txt2ImgRequest(prompt="a lighthouse", image_num=2))
    async for result in client.wait(task_id, max_wait=300):
        ...                                # TaskResult readings; the last one has SUCCEED
    urls = result.image_urls               # presigned, expire after about an hour

Submits are retried only when Novita certainly did not take them (the connection was never
made). A 429 is not slept on here: Novita counts images per minute, far longer than a retry
back-off, so `RateLimited` goes to the caller's queue with the server's `Retry-After` when it
sent one. After a timeout, a dropped connection, a 5xx or an unreadable 2xx the task may exist
and be billed: those raise `SubmissionUncertain` and are never repeated.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from omni.errors import (
    AuthenticationError,
    ConnectionFailed,
    MalformedResponse,
    RequestTimedOut,
    SubmissionUncertain,
    TaskFailed,
    TaskTimedOut,
    TransientError,
)
from omni.retry import RetryPolicy
from omni.session import SessionHolder
from omni.v3.errors import RateLimited, error_for_reply
from omni.v3.models import Img2ImgRequest, TaskResult, TaskStatus, Txt2ImgRequest

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.novita.ai"
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)
DEFAULT_MAX_WAIT = 600.0
MESSAGE_LIMIT = 300  # characters of an upstream message kept in an exception
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class PollPolicy:
    """When to ask `/v3/async/task-result` next, following the task's own `eta` (seconds).

    Queued: back off towards `max_queued_interval`. Running with an estimate: sleep a share of
    the time left and, near the end, aim just past the predicted finish. No estimate (or an
    unknown status): back off gently. Novita's SDKs poll at a fixed interval instead.
    """

    first_delay: float = 1.0
    min_interval: float = 0.25
    max_queued_interval: float = 5.0
    max_running_interval: float = 4.0
    eta_fraction: float = 0.5
    near_end: float = 2.0
    finish_margin: float = 0.05
    stale_growth: float = 1.5
    stale_max_interval: float = 2.0

    def next_delay(self, result: TaskResult, previous: float) -> float:
        eta = result.eta if result.eta is not None else 0.0
        if result.status is TaskStatus.QUEUED:
            if eta > 0:
                return self._clamp(eta * self.eta_fraction, self.max_queued_interval)
            return self._clamp(previous * self.stale_growth, self.max_queued_interval)
        if result.status is not TaskStatus.PROCESSING or eta <= 0:
            return self._clamp(previous * self.stale_growth, self.stale_max_interval)
        if eta <= self.near_end:
            return self._clamp(eta + self.finish_margin, self.max_running_interval)
        return self._clamp(eta * self.eta_fraction, self.max_running_interval)

    def _clamp(self, value: float, ceiling: float) -> float:
        return max(self.min_interval, min(ceiling, value))


class NovitaClient(SessionHolder):
    """Talks to Novita's v3 API. Knows nothing of Discord; safe to share between many jobs.

    `session`: the process's aiohttp session (closing it stays with its owner); without one
    the client opens its own and closes it in `close()`. `bare_key=True` sends the key without
    "Bearer ", as Novita's JS SDK does.
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        session: aiohttp.ClientSession | None = None,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy = RetryPolicy(),
        poll: PollPolicy = PollPolicy(),
        bare_key: bool = False,
    ) -> None:
        if not api_key:
            raise AuthenticationError("no Novita API key given")
        self._api_key = api_key
        self._headers = {
            "Authorization": api_key if bare_key else f"Bearer {api_key}",
            "Accept": "application/json",
        }
        self.base_url = base_url.rstrip("/")
        self._hold(session)
        self._timeout = timeout
        self._retry = retry
        self._poll = poll

    def __repr__(self) -> str:  # the key must never reach a log line through a repr
        return f"NovitaClient(base_url={self.base_url!r})"

    # -- the API -----------------------------------------------------------------------------

    async def txt2img(self, request: Txt2ImgRequest) -> str:
        """Start a text-to-image task; returns its task id.

        Raises `InvalidRequest` (locally, before any HTTP call, or from a 400),
        `AuthenticationError`, `InsufficientCredit`, `RateLimited` (not taken: submit again
        after `retry_after`), `ConnectionFailed` (never connected: not taken) or
        `SubmissionUncertain` (may have been taken and billed: never submit it again).
        """
        return await self._submit("/v3/async/txt2img", request)

    async def img2img(self, request: Img2ImgRequest) -> str:
        """Start an image-to-image task; returns its task id. Raises as `txt2img`."""
        return await self._submit("/v3/async/img2img", request)

    async def task_result(self, task_id: str) -> TaskResult:
        """One reading of the task. Raises `TaskNotFound` (404 `TASK_NOT_FOUND`: unknown or
        forgotten), `AuthenticationError`, or a `TransientError` once retries are spent."""
        data = await self._call("GET", "/v3/async/task-result", params={"task_id": task_id})
        return TaskResult.parse(task_id, data)

    async def wait(
        self, task_id: str, *, max_wait: float = DEFAULT_MAX_WAIT
    ) -> AsyncIterator[TaskResult]:
        """Yield each reading until the task succeeds (the last one yielded).

        Raises `TaskFailed` (with Novita's `reason`) for a failed task, and
        `TaskTimedOut(by_server=False)` when `max_wait` seconds pass first. Transient faults
        (5xx, dropped connections, 429 on polls) are ridden out until then, and an unknown
        status is read as "not final yet".
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        delay = self._poll.first_delay
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TaskTimedOut(task_id, by_server=False)
            await asyncio.sleep(min(delay, remaining))
            try:
                result = await self.task_result(task_id)
            except TransientError as exc:
                log.warning("task-result for %s unavailable (%s); will try again", task_id, exc)
                delay = max(self._poll.max_running_interval, getattr(exc, "retry_after", 0) or 0)
                continue
            yield result
            if result.status is TaskStatus.SUCCEED:
                return
            if result.status is TaskStatus.FAILED:
                raise TaskFailed(task_id, self._safe(result.reason))
            if result.status is TaskStatus.UNKNOWN:
                log.info(
                    "task %s reports %r; still waiting", task_id, self._safe(result.raw_status)
                )
            delay = self._poll.next_delay(result, delay)

    # -- transport ---------------------------------------------------------------------------

    async def _submit(self, path: str, request: Txt2ImgRequest) -> str:
        request.validate()
        data = await self._call("POST", path, payload=request.to_payload(), submit=True)
        task_id = data.get("task_id") if isinstance(data, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise SubmissionUncertain(f"POST {path}: accepted, but the reply carries no task_id")
        return task_id

    async def _call(
        self,
        method: str,
        path: str,
        *,
        payload: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        submit: bool = False,
    ) -> Any:
        """One API call with retries; returns the decoded JSON body of a 2xx reply."""
        failures = 0
        while True:
            try:
                return await self._call_once(
                    method, path, payload=payload, params=params, submit=submit
                )
            except TransientError as exc:
                final = isinstance(exc, SubmissionUncertain) or (
                    submit and isinstance(exc, RateLimited)
                )
                failures += 1
                if final or failures >= self._retry.attempts:
                    raise
                delay = max(self._retry.delay(failures - 1), getattr(exc, "retry_after", 0) or 0)
                if delay > self._retry.max_delay:
                    raise
                log.info("%s %s failed (%s); retry %d in %.2fs", method, path, exc, failures, delay)
                await asyncio.sleep(delay)

    async def _call_once(
        self,
        method: str,
        path: str,
        *,
        payload: dict[str, Any] | None,
        params: dict[str, str] | None,
        submit: bool,
    ) -> Any:
        what = f"{method} {path}"

        def uncertain_or(kind: type[TransientError], fault: str) -> TransientError:
            if submit:
                return SubmissionUncertain(
                    f"{what}: {fault}; the task may have been created, not retrying"
                )
            return kind(f"{what}: {fault}")

        try:
            async with self.session.request(
                method,
                self.base_url + path,
                json=payload,
                params=params,
                headers=self._headers,
                timeout=self._timeout,
            ) as response:
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
                body = await response.read()
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Never connected: nothing was sent, so even a submit is safe to repeat.
            raise ConnectionFailed(f"{what}: cannot connect ({type(exc).__name__})") from None
        except TimeoutError:
            raise uncertain_or(RequestTimedOut, "no reply within the timeout") from None
        except aiohttp.ClientError as exc:
            raise uncertain_or(
                ConnectionFailed, f"connection dropped ({type(exc).__name__})"
            ) from None

        if 200 <= status < 300:
            try:
                return json.loads(body)
            except ValueError:
                raise uncertain_or(
                    MalformedResponse, f"HTTP {status} with a body that is not JSON"
                ) from None
        reason, message = self._error_fields(body)
        if submit and (status >= 500 or status == 408):
            raise uncertain_or(TransientError, f"HTTP {status}" + (f" {reason}" if reason else ""))
        raise error_for_reply(status, reason, message, what=what, retry_after=retry_after)

    def _error_fields(self, body: bytes) -> tuple[str, str]:
        """`reason` and `message` of an error body; a proxy's HTML page gives neither."""
        try:
            data = json.loads(body)
        except ValueError:
            return "", ""
        if not isinstance(data, dict):
            return "", ""
        reason = data.get("reason")
        reason = self._safe(reason) if isinstance(reason, str) and len(reason) <= 64 else ""
        return reason, self._safe(data.get("message") or "")

    def _safe(self, text: object) -> str:
        """Upstream words made safe to log: the key removed, control characters gone, short."""
        cleaned = _CONTROL.sub(" ", str(text)).replace(self._api_key, "[redacted]").strip()
        if len(cleaned) > MESSAGE_LIMIT:
            cleaned = cleaned[: MESSAGE_LIMIT - 1] + "…"
        return cleaned


def _retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds when it is a number (an HTTP date is not worth guessing)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds < 86_400 else None
