"""The async Omniinfer v2 client: one reused aiohttp session, typed calls, safe retries."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from omni.download import DEFAULT_MAX_IMAGE_BYTES, download_images
from omni.errors import (
    AuthenticationError,
    ConnectionFailed,
    MalformedResponse,
    RequestTimedOut,
    ServerError,
    SubmissionUncertain,
    TaskFailed,
    TaskTimedOut,
    TransientError,
    UnknownAPIError,
    error_for_code,
)
from omni.models import (
    Img2ImgRequest,
    ModelInfo,
    Progress,
    Submission,
    TaskStatus,
    Txt2ImgRequest,
    UpscaleRequest,
)
from omni.polling import PollPolicy
from omni.retry import RetryPolicy
from omni.session import SessionHolder

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.omniinfer.io"
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)
DEFAULT_MAX_WAIT = 600.0


class OmniClient(SessionHolder):
    """Talks to Omniinfer. Knows nothing of Discord; safe to share between many jobs.

    Pass `session` to share the process's aiohttp session (the client then leaves closing it
    to its owner); otherwise the client opens one and closes it in `close()`.
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
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    ) -> None:
        if not api_key:
            raise AuthenticationError("no API key given (set OMNI_API_KEY)")
        self._headers = {"X-Omni-Key": api_key, "Accept": "application/json"}
        self.base_url = base_url.rstrip("/")
        self._hold(session)
        self._timeout = timeout
        self._retry = retry
        self._poll = poll
        self._max_image_bytes = max_image_bytes

    def __repr__(self) -> str:  # the key must not leak through a repr in a log line
        return f"OmniClient(base_url={self.base_url!r})"

    # -- the API -----------------------------------------------------------------------------

    async def txt2img(self, request: Txt2ImgRequest) -> Submission:
        """Start a task. Validates first, so a bad request costs no HTTP call and no credit."""
        request.validate()
        data = await self._call("POST", "/v2/txt2img", json=request.to_payload(), submit=True)
        return _submission(data)

    async def img2img(self, request: Img2ImgRequest) -> Submission:
        """Start an image-to-image task; validated first, like `txt2img`."""
        request.validate()
        data = await self._call("POST", "/v2/img2img", json=request.to_payload(), submit=True)
        return _submission(data)

    async def upscale(self, request: UpscaleRequest) -> Submission:
        request.validate()
        data = await self._call("POST", "/v2/upscale", json=request.to_payload(), submit=True)
        return _submission(data)

    async def progress(self, task_id: str) -> Progress:
        data = await self._call("GET", "/v2/progress", params={"task_id": task_id})
        return Progress.parse(task_id, data)

    async def models(self, model_type: str | None = None) -> list[ModelInfo]:
        params = {"type": model_type} if model_type else None
        data = await self._call("GET", "/v2/models", params=params)
        items = data.get("models") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise MalformedResponse("models: data.models is not a list")
        return [m for m in (ModelInfo.parse(item) for item in items) if m is not None]

    async def download(self, urls: list[str] | tuple[str, ...]) -> list[bytes]:
        """The result images' bytes, in order (never sends the API key with them)."""
        return await download_images(self.session, urls, max_bytes=self._max_image_bytes)

    async def wait(
        self, task_id: str, *, max_wait: float = DEFAULT_MAX_WAIT
    ) -> AsyncIterator[Progress]:
        """Yield each progress reading until the task succeeds (the last one yielded).

        Raises `TaskFailed` or `TaskTimedOut` for a task that ends badly, and
        `TaskTimedOut(by_server=False)` when `max_wait` seconds pass first. Transient faults
        while polling are ridden out until then: reading progress is safe to repeat.
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
                progress = await self.progress(task_id)
            except TransientError as exc:
                log.warning("progress for %s unavailable (%s); will try again", task_id, exc)
                delay = self._poll.max_running_interval
                continue
            yield progress
            if progress.status is TaskStatus.SUCCEEDED:
                return
            if progress.status is TaskStatus.FAILED:
                raise TaskFailed(task_id, progress.failed_reason)
            if progress.status is TaskStatus.TIMED_OUT:
                raise TaskTimedOut(task_id, by_server=True)
            delay = self._poll.next_delay(progress, delay)

    async def wait_until_done(
        self, task_id: str, *, max_wait: float = DEFAULT_MAX_WAIT
    ) -> Progress:
        """Like `wait`, for callers that only want the final reading."""
        final: Progress | None = None
        async for final in self.wait(task_id, max_wait=max_wait):  # noqa: B007
            pass
        assert final is not None
        return final

    # -- transport ---------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        submit: bool = False,
    ) -> Any:
        """One API call with retries; returns the envelope's `data`.

        A submit (POST that creates a billed task) is retried only when Omniinfer cannot have
        accepted it: the connection was never made, or the API answered with an envelope
        refusing it. After a timeout, a dropped connection, a 5xx or an unreadable 200, the
        task may exist and be billed already; retrying would start and bill a second one, so
        those raise `SubmissionUncertain` instead.
        """
        failures = 0
        while True:
            try:
                return await self._call_once(method, path, json=json, params=params, submit=submit)
            except TransientError as exc:
                retryable = not isinstance(exc, SubmissionUncertain)
                failures += 1
                if not retryable or failures >= self._retry.attempts:
                    raise
                delay = self._retry.delay(failures - 1)
                log.info("%s %s failed (%s); retry %d in %.2fs", method, path, exc, failures, delay)
                await asyncio.sleep(delay)

    async def _call_once(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None,
        params: dict[str, str] | None,
        submit: bool,
    ) -> Any:
        def fault(kind: type[TransientError], what: str) -> TransientError:
            if submit:
                return SubmissionUncertain(
                    f"{method} {path}: {what}; the task may have been created, not retrying"
                )
            return kind(f"{method} {path}: {what}")

        try:
            async with self.session.request(
                method,
                self.base_url + path,
                json=json,
                params=params,
                headers=self._headers,
                timeout=self._timeout,
            ) as response:
                status = response.status
                body = await response.read()
        except aiohttp.ClientConnectorError as exc:
            # Never connected: nothing was sent, so even a submit is safe to repeat.
            raise ConnectionFailed(f"{method} {path}: cannot connect ({exc.os_error})") from None
        except TimeoutError:
            raise fault(RequestTimedOut, "no reply within the timeout") from None
        except aiohttp.ClientError as exc:
            raise fault(ConnectionFailed, f"connection dropped ({type(exc).__name__})") from None

        if status >= 500:
            if submit:
                raise fault(ServerError, f"HTTP {status}")
            raise ServerError(f"{method} {path}: HTTP {status}", status=status)
        if status in (408, 429):
            raise ServerError(f"{method} {path}: HTTP {status}", status=status)
        if status in (401, 403):
            raise AuthenticationError(f"{method} {path}: HTTP {status}, check the API key")
        if status != 200:
            raise UnknownAPIError(f"{method} {path}: unexpected HTTP {status}")
        return _unwrap(method, path, body, submit)


def _unwrap(method: str, path: str, body: bytes, submit: bool) -> Any:
    try:
        envelope = json.loads(body)
    except ValueError:
        envelope = None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("code"), int):
        what = f"{method} {path}: the reply is not a JSON envelope"
        if submit:
            raise SubmissionUncertain(what + "; the task may have been created, not retrying")
        raise MalformedResponse(what)
    code = envelope["code"]
    if code != 0:
        raise error_for_code(code, str(envelope.get("msg") or ""))
    return envelope.get("data")


def _submission(data: Any) -> Submission:
    if not isinstance(data, dict) or not isinstance(data.get("task_id"), str):
        raise SubmissionUncertain("submit: accepted, but the reply carries no task_id")
    return Submission(task_id=data["task_id"], warning=str(data.get("warn") or ""))
