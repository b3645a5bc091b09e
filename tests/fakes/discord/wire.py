"""HTTP plumbing shared by every route: Discord-shaped replies and errors, JSON or multipart
bodies, injected faults, and the middleware that authenticates, rate-limits and records each
request (so handlers only deal with what the route means)."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from tests.fakes.discord.records import Call, Rejection, RequestLog, Upload
from tests.fakes.discord.state import Application, content_type_of

if TYPE_CHECKING:
    from tests.fakes.discord.server import FakeDiscord

API = "/api/v10"
UNHANDLED = "unhandled"
MAJOR_PARAMETERS = (
    "channel_id",
    "guild_id",
    "webhook_id",
    "webhook_token",
    "interaction_id",
    "interaction_token",
)
BODY_REFUSALS = {50035, 50006, 40005, 50109}
FILE_FIELD = re.compile(r"^files\[(\d+)\]$")
ARRIVED = web.RequestKey("arrived", float)  # the fake's clock when the request came in
APP = web.RequestKey("app", Application)  # whose bot token authenticated it
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    # discord.py parses a body as JSON only when Content-Type is exactly application/json.
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def no_content() -> web.Response:
    return web.Response(status=204)


class Refused(Exception):
    """Raised by a handler to answer with a Discord error: {"message", "code", "errors"?}."""

    def __init__(
        self, status: int, code: int, message: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        body: dict[str, Any] = {"message": message, "code": code}
        if errors:
            body["errors"] = errors
        self.response = json_response(body, status)


@dataclass(frozen=True)
class Body:
    """A request's JSON payload and its uploaded files by index (`files[n]` parts)."""

    payload: Any  # an object; a list for a command sync
    files: dict[int, Upload]


BODY = web.RequestKey("body", Body)  # the parsed body, for the records


async def read_body(request: web.Request, *, upload_delay: float = 0.0) -> Body:
    """Read a JSON or multipart (payload_json + files[n]) body, as discord.py sends them;
    with files, take `upload_delay` more seconds (a slow upload, when a test asks for one).
    Handlers look at state only after this, so nothing changes under them."""
    payload: Any = {}
    files: dict[int, Upload] = {}
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue
            data = bytes(await part.read())
            match = FILE_FIELD.match(part.name or "")
            if part.name == "payload_json":
                payload = _loads(data)
            elif match:
                filename = part.filename or f"file{match[1]}"
                files[int(match[1])] = Upload(filename, content_type_of(filename), data)
    else:
        raw = await request.read()
        payload = _loads(raw) if raw else {}
    body = Body(payload, files)
    request[BODY] = body
    if files and upload_delay:
        await asyncio.sleep(upload_delay)
    return body


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise Refused(400, 50109, "The request body contains invalid JSON.") from None


@dataclass
class Fault:
    method: str  # "*" for any
    path: re.Pattern[str]
    status: int
    times: int
    retry_after: float = 0.0  # for 429s


class Faults:
    """Failures tests ask for: the next matching requests get a 5xx or a 429."""

    def __init__(self) -> None:
        self._pending: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self._pending.append(fault)

    def take(self, method: str, path: str) -> Fault | None:
        for fault in self._pending:
            if fault.method in ("*", method) and fault.path.search(path):
                fault.times -= 1
                if fault.times <= 0:
                    self._pending.remove(fault)
                return fault
        return None


def route_of(request: web.Request) -> str:
    """The route as "METHOD /template", without the API prefix: "GET /channels/{channel_id}"."""
    canonical = request.match_info.route.resource.canonical  # type: ignore[union-attr]
    return f"{request.method} {canonical.removeprefix(API)}"


def call_kind(method: str, route: str) -> str:
    if route.endswith("/callback"):
        return "callback"
    return {"POST": "followup", "GET": "get", "PATCH": "edit", "DELETE": "delete"}[method]


def middleware(fake: FakeDiscord) -> Any:
    """Faults, authentication and rate limits before the handler; records after it."""

    @web.middleware
    async def handle(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(API):
            return await handler(request)
        request[ARRIVED] = fake.now()
        unhandled = request.match_info.route.name == UNHANDLED
        route = "" if unhandled else route_of(request)
        try:
            response = await _answer(fake, request, handler, route, unhandled=unhandled)
        except Refused as refusal:
            response = refusal.response
        _record(fake, request, route, response)
        fake.changed.notify()
        return response

    return handle


async def _answer(
    fake: FakeDiscord, request: web.Request, handler: Handler, route: str, *, unhandled: bool
) -> web.StreamResponse:
    if unhandled:
        return await handler(request)
    fault = fake.faults.take(request.method, request.path)
    if fault is not None and fault.status == 429:
        return _too_many(fake, fault.retry_after, {})
    if fault is not None:
        raise Refused(fault.status, 0, f"{fault.status}: injected server error")
    if not request.path.startswith((f"{API}/webhooks/", f"{API}/interactions/")):
        app = fake.app_for_token(request.headers.get("Authorization", "").removeprefix("Bot "))
        if app is None:
            raise Refused(401, 0, "401: Unauthorized")
        request[APP] = app
    if not fake.rate_limits.enabled:
        return await handler(request)
    major = ":".join(request.match_info.get(key, "") for key in MAJOR_PARAMETERS)
    verdict = fake.rate_limits.take(route, major)
    if not verdict.allowed:
        return _too_many(fake, verdict.retry_after, verdict.headers)
    try:
        response = await handler(request)
    except Refused as refusal:
        response = refusal.response
    response.headers.update(verdict.headers)
    return response


def _too_many(fake: FakeDiscord, retry_after: float, headers: dict[str, str]) -> web.Response:
    """A 429 discord.py honours: JSON body with retry_after, and a `Via` header (without it
    the library takes the 429 for a Cloudflare ban and gives up)."""
    fake.rate_limited_count += 1
    body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
    headers = {
        **headers,
        "Via": "1.1 google",
        "Retry-After": str(math.ceil(retry_after)),
        "X-RateLimit-Scope": "user",
    }
    return json_response(body, 429, headers)


def _record(
    fake: FakeDiscord, request: web.Request, route: str, response: web.StreamResponse
) -> None:
    at = fake.now()
    fake.requests.append(RequestLog(request.method, request.path, route, response.status, at))
    error: dict[str, Any] = {}
    if response.status >= 400 and response.content_type == "application/json":
        error = json.loads(response.body)  # type: ignore[arg-type]
    code = error.get("code") or None
    if code in BODY_REFUSALS:
        fake.rejections.append(
            Rejection(request.method, request.path, response.status, code, error.get("errors", {}))
        )
    token = request.match_info.get("webhook_token") or request.match_info.get("interaction_token")
    record = fake.interactions.get(token) if token else None
    if record is not None:
        body = request.get(BODY)
        call = Call(
            kind=call_kind(request.method, route),
            method=request.method,
            path=request.path,
            status=response.status,
            payload=body.payload if body else {},
            files=tuple(body.files.values()) if body else (),
            code=code,
            at=at,
        )
        record.add_call(call)
