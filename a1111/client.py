"""An async client for one AUTOMATIC1111/Forge/SD.Next server started with `--api`.

txt2img and img2img **block** until the images are made (the server runs one generation at
a time; others queue behind its lock), so a caller runs them as background tasks and follows
them with `progress(task_id)`, using the `force_task_id` it sent. Servers that lack
`/internal/progress` (404: older versions, `--nowebui`) are read through the global
`/sdapi/v1/progress` instead, which describes whatever the server is running.

Every failure is an `a1111.errors.A1111Error`; the distinction that matters most is
`ServerDown` (nothing was sent: safe to send elsewhere) against `ConnectionLost` (the request
may be running on the server).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from yarl import URL

from a1111.errors import (
    ConnectionLost,
    CredentialsRefused,
    EndpointMissing,
    HTTPError,
    InvalidField,
    MalformedReply,
    ServerDown,
)
from a1111.models import (
    GenerationRequest,
    GenerationResult,
    Sampler,
    SDModel,
    TaskProgress,
    Upscaler,
    UpscaleResult,
    parse_models,
    parse_samplers,
    parse_upscalers,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0  # seconds for a short call (lists, progress, interrupt)
DEFAULT_GENERATION_TIMEOUT = 1800.0  # seconds for a blocking generation, queue wait included
MAX_REPLY_BYTES = 256 * 1024 * 1024  # a reply larger than this is refused, not buffered
DETAIL_LIMIT = 300  # characters of a server's error text kept in messages
# Words in A1111's string errors ("Sampler not found", "Init image not found"...) that tell
# which field was at fault.
_FIELD_HINTS = (
    ("sampler", "sampler_name"),
    ("scheduler", "scheduler"),
    ("init image", "init_images"),
    ("upscaler", "upscaler_1"),
    ("script", "script_name"),
)


def parse_auth(auth: str | None) -> tuple[str, str] | None:
    """`"user:password"` (as the server's `--api-auth`) → (user, password); None for none.

    Raises ValueError (without echoing the text) when it has no colon or no user.
    """
    if auth is None or auth == "":
        return None
    user, colon, password = auth.partition(":")
    if not colon or not user:
        raise ValueError("the credentials must be user:password")
    return user, password


class A1111Client:
    """One server. Safe to share between tasks; the aiohttp session belongs to the caller.

    `base_url` may carry `user:password@`; it is taken out of the URL (and used when `auth`
    is not given) so the URL can be logged. `timeout` bounds short calls and every connect;
    `generation_timeout` bounds a blocking txt2img/img2img/upscale, queue wait included.
    """

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession,
        auth: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        generation_timeout: float = DEFAULT_GENERATION_TIMEOUT,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        url = URL(base_url.strip())
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("the server URL must be http(s)://host[:port]")
        if auth is None and url.user is not None:
            auth = f"{url.user}:{url.password or ''}"
        self.base_url = str(url.with_user(None).with_password(None)).rstrip("/")
        credentials = parse_auth(auth)
        # HTTP Basic, sent with every request; kept out of reprs and messages.
        self._headers = (
            {}
            if credentials is None
            else {"Authorization": aiohttp.encode_basic_auth(*credentials)}
        )
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=timeout)
        self._generation_timeout = aiohttp.ClientTimeout(
            total=generation_timeout, sock_connect=timeout
        )
        self._max_reply_bytes = max_reply_bytes
        # Whether /internal/progress exists: None until asked, False after a 404.
        self.has_task_progress: bool | None = None

    def __repr__(self) -> str:  # the password must not leak through a repr in a log line
        return f"A1111Client({self.base_url!r})"

    # -- generation --------------------------------------------------------------------------

    async def txt2img(
        self, request: GenerationRequest, *, sent: asyncio.Event | None = None
    ) -> GenerationResult:
        """Generate (blocks until done). `sent` is set once the connection is made and the
        body is going out: from then on the server may be running it."""
        path = "/sdapi/v1/img2img" if request.is_img2img else "/sdapi/v1/txt2img"
        body = await self._call(
            "POST", path, json=request.to_json(), sent=sent, timeout=self._generation_timeout
        )
        return GenerationResult.parse(body)

    async def img2img(
        self, request: GenerationRequest, *, sent: asyncio.Event | None = None
    ) -> GenerationResult:
        if not request.is_img2img:
            raise ValueError("img2img needs init_images")
        return await self.txt2img(request, sent=sent)

    async def upscale(
        self,
        image: str,
        *,
        factor: float,
        upscaler: str,
        sent: asyncio.Event | None = None,
    ) -> UpscaleResult:
        """`POST /sdapi/v1/extra-single-image`: `image` base64 scaled by `factor` (1..8 on
        A1111) with the named upscaler; blocks until done."""
        body = await self._call(
            "POST",
            "/sdapi/v1/extra-single-image",
            json={
                "image": image,
                "resize_mode": 0,
                "upscaling_resize": factor,
                "upscaler_1": upscaler,
                "show_extras_results": True,
            },
            sent=sent,
            timeout=self._generation_timeout,
        )
        return UpscaleResult.parse(body)

    async def interrupt(self) -> None:
        """Stop whatever the server is generating now (A1111 returns what it has so far)."""
        await self._call("POST", "/sdapi/v1/interrupt")

    # -- progress ----------------------------------------------------------------------------

    async def progress(
        self, task_id: str, *, preview_id: int = -1, live_preview: bool = True
    ) -> TaskProgress:
        """How `task_id` (a `force_task_id` sent before) is doing.

        `preview_id` is the `id_live_preview` last received: the server then sends a live
        preview only when it has a newer one. Falls back to the global progress for good
        after `/internal/progress` answers 404 (or 401: behind the web UI's login).
        """
        if self.has_task_progress is not False:
            try:
                body = await self._call(
                    "POST",
                    "/internal/progress",
                    json={
                        "id_task": task_id,
                        "id_live_preview": preview_id,
                        "live_preview": live_preview,
                    },
                )
            except (EndpointMissing, CredentialsRefused) as exc:
                # 404: an older server, or one run --nowebui. 401: the web UI's own login
                # guards its routes (the API's global progress takes the API credentials).
                why = "has no" if isinstance(exc, EndpointMissing) else "guards"
                log.info("%s %s /internal/progress; reading the global progress", self, why)
                self.has_task_progress = False
            else:
                self.has_task_progress = True
                return TaskProgress.from_internal(body)
        body = await self._call(
            "GET",
            "/sdapi/v1/progress",
            params={"skip_current_image": "false" if live_preview else "true"},
        )
        return TaskProgress.from_global(body, task_id)

    # -- what the server offers --------------------------------------------------------------

    async def samplers(self) -> list[Sampler]:
        return parse_samplers(await self._call("GET", "/sdapi/v1/samplers"))

    async def sd_models(self) -> list[SDModel]:
        return parse_models(await self._call("GET", "/sdapi/v1/sd-models"))

    async def upscalers(self) -> list[Upscaler]:
        return parse_upscalers(await self._call("GET", "/sdapi/v1/upscalers"))

    # -- transport ---------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        sent: asyncio.Event | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> Any:
        """One request, no retries; returns the parsed JSON of a 2xx reply."""
        where = f"{method} {self.base_url}{path}"
        kwargs: dict[str, Any] = {"params": params, "headers": self._headers}
        if sent is not None and json is not None:
            kwargs["data"] = _announcing_body(_dumps(json), sent)
            kwargs["headers"] = {**self._headers, "Content-Type": "application/json"}
        else:
            kwargs["json"] = json
        try:
            async with self._session.request(
                method,
                self.base_url + path,
                timeout=timeout or self._timeout,
                **kwargs,
            ) as response:
                status = response.status
                body = await _read_limited(response, self._max_reply_bytes, where)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise ServerDown(f"{where}: cannot connect ({_reason(exc)})") from None
        except TimeoutError:
            raise ConnectionLost(f"{where}: no reply within the timeout", timed_out=True) from None
        except aiohttp.ClientError as exc:
            raise ConnectionLost(f"{where}: connection lost ({type(exc).__name__})") from None
        if 200 <= status < 300:
            try:
                return _loads(body)
            except ValueError:
                raise MalformedReply(f"{where}: HTTP {status} but the reply is not JSON") from None
        raise _http_error(where, status, body)


async def _announcing_body(data: bytes, sent: asyncio.Event) -> AsyncIterator[bytes]:
    """A request body that sets `sent` when aiohttp starts writing it, which it does only
    once the connection is made: before that moment a failure means nothing was sent."""
    sent.set()
    yield data


async def _read_limited(response: aiohttp.ClientResponse, limit: int, where: str) -> bytes:
    if response.content_length is not None and response.content_length > limit:
        raise MalformedReply(f"{where}: the reply is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(256 * 1024):
        size += len(chunk)
        if size > limit:
            raise MalformedReply(f"{where}: the reply is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _http_error(where: str, status: int, body: bytes) -> HTTPError | CredentialsRefused:
    """Map a non-2xx reply: FastAPI's `{"detail": [{"loc", "msg", "type"}]}`, A1111's
    `{"error", "detail", "body", "errors"}`, or whatever a proxy in front sent."""
    if status in (401, 403):
        return CredentialsRefused(
            f"{where}: HTTP {status}: the server refused the credentials (user:password)"
        )
    try:
        payload = _loads(body)
    except ValueError:
        payload = None
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if isinstance(detail, list) and detail:
        field, text = _first_validation_error(detail)
        shown = f"{field}: {text}" if field else text
        return InvalidField(
            f"{where}: HTTP {status}: {shown}", status=status, detail=shown, field=field
        )
    if isinstance(detail, str) and detail:
        text = _short(detail)
        if status == 404 and detail == "Not Found":
            return EndpointMissing(f"{where}: HTTP 404: no such endpoint", status=404, detail=text)
        if 400 <= status < 500 and status not in (408, 429):
            field = _field_from_text(detail)
            return InvalidField(
                f"{where}: HTTP {status}: {text}", status=status, detail=text, field=field
            )
    else:
        errors = payload.get("errors") if isinstance(payload, dict) else None
        text = _short(
            errors if isinstance(errors, str) and errors else body.decode("utf-8", "replace")
        )
    if status == 404:
        return EndpointMissing(f"{where}: HTTP 404: no such endpoint", status=404, detail=text)
    return HTTPError(f"{where}: HTTP {status}: {text or 'no details'}", status=status, detail=text)


def _first_validation_error(errors: list[Any]) -> tuple[str | None, str]:
    """The field (last name in `loc`, after "body") and message of FastAPI's first error."""
    first = errors[0] if isinstance(errors[0], dict) else {}
    loc = first.get("loc")
    names = (
        [part for part in loc if isinstance(part, str) and part != "body"]
        if isinstance(loc, list)
        else []
    )
    message = first.get("msg")
    return (names[-1] if names else None), _short(
        message if isinstance(message, str) else "invalid"
    )


def _field_from_text(detail: str) -> str | None:
    lowered = detail.lower()
    return next((name for word, name in _FIELD_HINTS if word in lowered), None)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= DETAIL_LIMIT else text[: DETAIL_LIMIT - 1] + "…"


def _reason(exc: aiohttp.ClientError) -> str:
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError) and os_error.strerror:
        return os_error.strerror
    return type(exc).__name__


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _loads(body: bytes) -> Any:
    return json.loads(body)
