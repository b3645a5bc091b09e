"""A local fake Discord: REST routes and the gateway websocket, on 127.0.0.1.

The real, unmodified discord.py logs in to it, syncs its commands, receives the interactions
tests inject, and answers them; the fake records what a person would have seen and enforces
what real Discord enforces (the 3-second first response, one first response, 15-minute
tokens, per-route rate limits with 429s, message and upload limits).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import discord
import yarl
from aiohttp import WSMsgType, web

from tests.fakes.discord.contract import RateLimiter, message_problems, too_large
from tests.fakes.discord.interactions import InteractionRecord, Snapshot
from tests.fakes.discord.state import (
    ALL_PERMISSIONS,
    Attachment,
    Channel,
    Guild,
    Member,
    Message,
    Role,
    User,
    snowflake,
)

API = "/api/v10"
HEARTBEAT_INTERVAL_MS = 41_250
EPHEMERAL, LOADING = 64, 128
EVERYONE_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    read_message_history=True,
    embed_links=True,
    attach_files=True,
    use_application_commands=True,
).value


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py parses a body as JSON only when Content-Type is exactly application/json.
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"message": message, "code": code}, status)


@dataclass
class _Fault:
    method: str
    path: re.Pattern[str]
    status: int
    times: int
    retry_after: float = 0.0  # for forced 429s


class FakeDiscord:
    def __init__(
        self,
        *,
        ack_deadline: float = 3.0,
        token_lifetime: float = 15 * 60,
        rate_limit: tuple[int, float] = (5, 2.0),
    ) -> None:
        self.ack_deadline = ack_deadline
        self.token_lifetime = token_lifetime
        self.bot_token = (
            f"{secrets.token_urlsafe(24)}.{secrets.token_urlsafe(4)}.{secrets.token_urlsafe(27)}"
        )
        self.bot_user = User(snowflake(), "Imagine", bot=True)
        self.application_id = snowflake()
        self.guilds: dict[int, Guild] = {}
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.interactions: dict[str, InteractionRecord] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, Message] = {}
        self.rate_limiter = RateLimiter(*rate_limit)
        self.rate_limited_count = 0
        self.rejections: list[tuple[str, str, dict[str, Any]]] = []
        self.unhandled: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self._faults: list[_Fault] = []
        self._sockets: list[web.WebSocketResponse] = []
        self._sequence = 0
        self._changed = asyncio.Condition()
        self._identified = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._clock_offset = 0.0
        self.upload_delay = 0.0  # seconds before an upload is accepted: slow Discord
        self.base_url = ""

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=200 * 1024 * 1024)
        app.add_routes(self._routes())
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def rest_base(self) -> str:
        return self.base_url + API

    @property
    def gateway_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/gateway"

    @contextlib.contextmanager
    def patch_discord(self) -> Iterator[None]:
        """Point discord.py at this fake (REST and gateway); restore on exit."""
        route_base = discord.http.Route.BASE
        gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.rest_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield
        finally:
            discord.http.Route.BASE = route_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway

    def now(self) -> float:
        return time.monotonic() + self._clock_offset

    def advance(self, seconds: float) -> None:
        """Move the fake's clock on (token lifetimes), without sleeping."""
        self._clock_offset += seconds

    # -- the world tests build -------------------------------------------------------------

    def add_guild(self, name: str = "Test Server", *, upload_limit: int | None = None) -> Guild:
        guild_id = snowflake()
        owner = User(snowflake(), "owner")
        guild = Guild(guild_id, name, owner.id, Role(guild_id, "@everyone", EVERYONE_PERMISSIONS))
        if upload_limit is not None:
            guild.upload_limit = upload_limit
        guild.members.append(Member(owner, guild))
        self.guilds[guild_id] = guild
        return guild

    def add_channel(self, guild: Guild, name: str, *, nsfw: bool = False) -> Channel:
        channel = guild.add_channel(name, nsfw=nsfw)
        self.channels[channel.id] = channel
        return channel

    async def sync_guild(self, guild: Guild) -> None:
        """Tell the connected bot about changes to a guild (as GUILD_CREATE would)."""
        await self.dispatch("GUILD_CREATE", guild.to_json(self._bot_member(guild)))

    def _bot_member(self, guild: Guild) -> Member:
        return Member(self.bot_user, guild, [])

    # -- waiting ---------------------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until `predicate()` holds; re-checked whenever the fake records anything."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def wait_until_ready(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._identified.wait(), timeout)

    # -- injecting interactions ------------------------------------------------------------

    async def slash(
        self,
        guild: Guild,
        channel: Channel,
        member: Member,
        name: str,
        options: dict[str, Any] | None = None,
    ) -> InteractionRecord:
        """A member runs `/name` (e.g. "limits set") with options, as Discord's client would."""
        words = name.split()
        command, in_guild = self._command(guild, words[0])
        resolved: dict[str, dict[str, Any]] = {}
        definitions = command.get("options", [])
        nested: list[dict[str, Any]] = []
        target = nested
        for word in words[1:]:
            definition = next(o for o in definitions if o["name"] == word)
            entry = {"type": definition["type"], "name": word, "options": []}
            target.append(entry)
            target, definitions = entry["options"], definition.get("options", [])
        for key, value in (options or {}).items():
            definition = next((o for o in definitions if o["name"] == key), None)
            option_type = definition["type"] if definition else 3
            target.append(
                {
                    "type": option_type,
                    "name": key,
                    "value": self._option_value(value, guild, resolved),
                }
            )
        data: dict[str, Any] = {
            "id": command["id"],
            "name": words[0],
            "type": 1,
            "options": nested,
        }
        if in_guild:
            data["guild_id"] = str(guild.id)
        if resolved:
            data["resolved"] = resolved
        return await self._interact(2, guild, channel, member, data)

    async def click(
        self, guild: Guild, channel: Channel, member: Member, message: Message, custom_id: str
    ) -> InteractionRecord:
        """A member clicks the button `custom_id` on `message`."""
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interact(3, guild, channel, member, data, message=message)

    def _command(self, guild: Guild, name: str) -> tuple[dict[str, Any], bool]:
        for command in self.guild_commands.get(guild.id, []):
            if command["name"] == name:
                return command, True
        for command in self.global_commands:
            if command["name"] == name:
                return command, False
        raise LookupError(f"the bot has not synced a command named {name!r}")

    def _option_value(self, value: Any, guild: Guild, resolved: dict[str, dict[str, Any]]) -> Any:
        if isinstance(value, Member):
            resolved.setdefault("users", {})[str(value.id)] = value.user.to_json()
            member = value.to_json(with_user=False)
            member["permissions"] = str(value.permissions)
            resolved.setdefault("members", {})[str(value.id)] = member
            return str(value.id)
        if isinstance(value, Role):
            resolved.setdefault("roles", {})[str(value.id)] = value.to_json()
            return str(value.id)
        if isinstance(value, Channel):
            channel = value.to_json()
            channel["permissions"] = str(ALL_PERMISSIONS)
            resolved.setdefault("channels", {})[str(value.id)] = channel
            return str(value.id)
        return value

    async def _interact(
        self,
        kind: int,
        guild: Guild,
        channel: Channel,
        member: Member,
        data: dict[str, Any],
        *,
        message: Message | None = None,
    ) -> InteractionRecord:
        interaction_id = snowflake()
        token = "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(40)
        member_json = member.to_json()
        member_json["permissions"] = str(member.permissions)
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": kind,
            "token": token,
            "version": 1,
            "guild_id": str(guild.id),
            "channel_id": str(channel.id),
            "channel": channel.to_json(),
            "member": member_json,
            "app_permissions": str(ALL_PERMISSIONS),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
            "attachment_size_limit": guild.upload_limit,
            "data": data,
        }
        if message is not None:
            payload["message"] = message.to_json()
        record = InteractionRecord(
            interaction_id, token, kind, guild, channel, member, payload, self.now()
        )
        if message is not None:
            record.original = message  # type 6/7 responses act on this message
        self.interactions[token] = record
        await self.dispatch("INTERACTION_CREATE", payload)
        return record

    # -- gateway ---------------------------------------------------------------------------

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        if not self._sockets:
            raise RuntimeError("no bot is connected to the fake gateway")
        self._sequence += 1
        await self._sockets[-1].send_str(
            json.dumps({"op": 0, "t": event, "s": self._sequence, "d": data})
        )

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(
            json.dumps({"op": 10, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}})
        )
        try:
            async for frame in ws:
                if frame.type is not WSMsgType.TEXT:
                    continue
                message = json.loads(frame.data)
                op = message.get("op")
                if op == 1:
                    await ws.send_str(json.dumps({"op": 11}))
                elif op == 2:
                    await self._identify(ws, message["d"])
                elif op == 6:
                    await ws.send_str(json.dumps({"op": 9, "d": False}))
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        if data.get("token", "").removeprefix("Bot ") != self.bot_token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        self._sockets.append(ws)
        self._sequence = 0
        ready = {
            "v": 10,
            "user": self.bot_user.to_json(),
            "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds],
            "session_id": secrets.token_hex(16),
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
        }
        await self.dispatch("READY", ready)
        for guild in self.guilds.values():
            await self.dispatch("GUILD_CREATE", guild.to_json(self._bot_member(guild)))
        self._identified.set()

    # -- REST: plumbing --------------------------------------------------------------------

    def fail_next(self, method: str, path: str, *, status: int = 500, times: int = 1) -> None:
        """The next `times` requests matching `method` and the regex `path` get `status`."""
        self._faults.append(_Fault(method, re.compile(path), status, times))

    def force_rate_limit(self, path: str, *, retry_after: float = 0.2, times: int = 1) -> None:
        self._faults.append(_Fault("*", re.compile(path), 429, times, retry_after))

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.method in ("*", method) and fault.path.search(path):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path
        if not path.startswith(API):
            return await handler(request)
        self.requests.append((request.method, path))
        fault = self._take_fault(request.method, path)
        if fault is not None and fault.status == 429:
            return self._too_many(fault.retry_after, path)
        if fault is not None:
            return _error(fault.status, 0, "fake server error")
        if not path.startswith((f"{API}/webhooks/", f"{API}/interactions/")):
            auth = request.headers.get("Authorization", "")
            if auth != f"Bot {self.bot_token}":
                return _error(401, 0, "401: Unauthorized")
        allowed, headers, reset_after = self.rate_limiter.take(_bucket(request.method, path))
        if not allowed:
            return self._too_many(reset_after, path)
        response = await handler(request)
        response.headers.update(headers)
        return response

    def _too_many(self, retry_after: float, path: str) -> web.Response:
        self.rate_limited_count += 1
        return _json(
            {"message": "You are being rate limited.", "retry_after": retry_after, "global": False},
            429,
            {"Via": "1.1 google", "Retry-After": f"{retry_after:.3f}", "X-RateLimit-Scope": "user"},
        )

    async def _body(self, request: web.Request) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
        """The JSON payload and uploaded files of a JSON or multipart request."""
        if not request.content_type.startswith("multipart/"):
            raw = await request.read()
            return (json.loads(raw) if raw else {}), []
        payload: dict[str, Any] = {}
        files: list[tuple[str, bytes]] = []
        reader = await request.multipart()
        async for part in reader:
            if part.name == "payload_json":
                payload = json.loads(await part.text())
            elif part.name and part.name.startswith("files["):
                files.append((part.filename or "file", bytes(await part.read())))
        return payload, files

    def _reject(
        self,
        request: web.Request,
        payload: dict[str, Any],
        files: list[tuple[str, bytes]],
        guild: Guild,
    ) -> web.Response | None:
        problems = message_problems(payload, files, guild.upload_limit)
        if problems:
            self.rejections.append((request.method, request.path, {"problems": problems}))
            return _json(
                {"message": "Invalid Form Body", "code": 50035, "errors": {"problems": problems}},
                400,
            )
        if too_large(files, guild.upload_limit):
            self.rejections.append((request.method, request.path, {"problems": ["too large"]}))
            return _error(413, 40005, "Request entity too large")
        return None

    def _apply(
        self,
        message: Message,
        payload: dict[str, Any],
        files: list[tuple[str, bytes]],
        *,
        editing: bool,
    ) -> None:
        if "content" in payload:
            message.content = payload["content"] or ""
        if "embeds" in payload:
            message.embeds = payload["embeds"] or []
        if "components" in payload:
            message.components = payload["components"] or []
        if "flags" in payload and not editing:
            message.flags = (message.flags & LOADING) | (payload["flags"] or 0)
        if "attachments" in payload or files:
            kept = {str(a.id): a for a in message.attachments}
            new: list[Attachment] = []
            listed = payload.get("attachments")
            if listed is None:
                listed = [{"id": i} for i in range(len(files))]
                new = list(message.attachments) if editing else []
            for item in listed:
                item_id = str(item.get("id"))
                if item_id in kept:
                    new.append(kept[item_id])
                elif item_id.isdigit() and int(item_id) < len(files):
                    filename, data = files[int(item_id)]
                    new.append(self._attachment(item.get("filename") or filename, data))
            message.attachments = new
        if editing:
            message.edited = True
            message.flags &= ~LOADING

    def _attachment(self, filename: str, data: bytes) -> Attachment:
        attachment_id = snowflake()
        kind = (
            "image/png"
            if filename.endswith(".png")
            else ("image/webp" if filename.endswith(".webp") else "application/octet-stream")
        )
        return Attachment(
            attachment_id,
            filename,
            data,
            kind,
            f"{self.base_url}/attachments/{attachment_id}/{filename}",
        )

    def _new_message(self, channel: Channel, *, webhook: bool) -> Message:
        message = Message(
            snowflake(),
            channel.id,
            channel.guild.id,
            self.bot_user,
            webhook_id=self.application_id if webhook else None,
        )
        channel.messages[message.id] = message
        self.messages[message.id] = message
        return message

    def channel_messages(self, channel: Channel) -> list[Message]:
        return channel.visible_messages()

    # -- REST: routes ----------------------------------------------------------------------

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.get("/gateway", self._gateway),
            web.get(API + "/gateway", self._get_gateway),
            web.get(API + "/gateway/bot", self._get_gateway),
            web.get(API + "/users/@me", self._me),
            web.get(API + "/oauth2/applications/@me", self._application),
            web.get(API + "/applications/@me", self._application),
            web.put(API + "/applications/{app}/commands", self._put_commands),
            web.get(API + "/applications/{app}/commands", self._get_commands),
            web.put(API + "/applications/{app}/guilds/{guild}/commands", self._put_commands),
            web.get(API + "/applications/{app}/guilds/{guild}/commands", self._get_commands),
            web.post(API + "/interactions/{id}/{token}/callback", self._callback),
            web.get(API + "/webhooks/{app}/{token}/messages/{message}", self._webhook_get),
            web.patch(API + "/webhooks/{app}/{token}/messages/{message}", self._webhook_edit),
            web.delete(API + "/webhooks/{app}/{token}/messages/{message}", self._webhook_delete),
            web.post(API + "/webhooks/{app}/{token}", self._followup),
            web.get(API + "/channels/{channel}", self._get_channel),
            web.get(API + "/channels/{channel}/messages", self._history),
            web.post(API + "/channels/{channel}/messages", self._send),
            web.get(API + "/channels/{channel}/messages/{message}", self._get_message),
            web.patch(API + "/channels/{channel}/messages/{message}", self._edit_message),
            web.delete(API + "/channels/{channel}/messages/{message}", self._delete_message),
            web.get(API + "/guilds/{guild}", self._get_guild),
            web.get(API + "/guilds/{guild}/members/{user}", self._get_member),
            web.get("/attachments/{id}/{filename}", self._get_attachment),
            web.route("*", API + "/{tail:.*}", self._unhandled),
        ]

    async def _unhandled(self, request: web.Request) -> web.Response:
        self.unhandled.append(f"{request.method} {request.path}")
        return _error(404, 0, "404: Not Found")

    async def _get_gateway(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return _json({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    async def _me(self, request: web.Request) -> web.Response:
        return _json(self.bot_user.to_json())

    async def _application(self, request: web.Request) -> web.Response:
        return _json(
            {
                "id": str(self.application_id),
                "name": "Imagine",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "owner": {"id": "1", "username": "owner", "discriminator": "0", "avatar": None},
                "flags": 0,
                "team": None,
            }
        )

    async def _put_commands(self, request: web.Request) -> web.Response:
        commands = await request.json()
        for command in commands:
            command["id"] = str(snowflake())
            command["application_id"] = str(self.application_id)
            command.setdefault("type", 1)
            command["version"] = str(snowflake())
        if "guild" in request.match_info:
            guild_id = int(request.match_info["guild"])
            for command in commands:
                command["guild_id"] = str(guild_id)
            self.guild_commands[guild_id] = commands
        else:
            self.global_commands = commands
        await self._notify()
        return _json(commands)

    async def _get_commands(self, request: web.Request) -> web.Response:
        if "guild" in request.match_info:
            return _json(self.guild_commands.get(int(request.match_info["guild"]), []))
        return _json(self.global_commands)

    def _record_for_token(self, token: str) -> InteractionRecord | web.Response:
        record = self.interactions.get(token)
        if record is None:
            return _error(404, 10015, "Unknown Webhook")
        if self.now() - record.created > self.token_lifetime:
            record.errors.append(50027)
            return _error(401, 50027, "Invalid Webhook Token")
        return record

    async def _callback(self, request: web.Request) -> web.Response:
        record = self.interactions.get(request.match_info["token"])
        if record is None or str(record.id) != request.match_info["id"]:
            return _error(404, 10062, "Unknown interaction")
        if record.acknowledged:
            record.errors.append(40060)
            await self._notify()
            return _error(400, 40060, "Interaction has already been acknowledged.")
        if self.now() - record.created > self.ack_deadline:
            record.errors.append(10062)
            await self._notify()
            return _error(404, 10062, "Unknown interaction")
        body, files = await self._body(request)
        kind, data = body["type"], body.get("data") or {}
        if kind in (4, 7):
            rejected = self._reject(request, data, files, record.guild)
            if rejected:
                await self._notify()
                return rejected
        message = self._respond(record, kind, data, files)
        record.response_type = kind
        await self._notify()
        if request.query.get("with_response") not in ("true", "1", "True"):
            return web.Response(status=204)
        return _json(
            {
                "interaction": {
                    "id": str(record.id),
                    "type": record.type,
                    "response_message_id": str(message.id) if message else None,
                    "response_message_loading": kind == 5,
                    "response_message_ephemeral": bool(message and message.ephemeral),
                },
                "resource": {"type": kind, "message": message.to_json() if message else None},
            }
        )

    def _respond(
        self,
        record: InteractionRecord,
        kind: int,
        data: dict[str, Any],
        files: list[tuple[str, bytes]],
    ) -> Message | None:
        if kind in (4, 5):
            message = self._new_message(record.channel, webhook=True)
            message.flags = (data.get("flags") or 0) | (LOADING if kind == 5 else 0)
            if kind == 4:
                self._apply(message, data, files, editing=False)
            record.original = message
            record.history.append(Snapshot.of(message))
            return message
        if kind == 7 and record.original is not None:
            self._apply(record.original, data, files, editing=True)
            record.history.append(Snapshot.of(record.original))
        return record.original if kind in (6, 7) else None

    def _webhook_message(self, record: InteractionRecord, message_ref: str) -> Message | None:
        if message_ref == "@original":
            if record.original_deleted:
                return None
            return record.original
        message = self.messages.get(int(message_ref)) if message_ref.isdigit() else None
        if message is None or message.deleted:
            return None
        if message is record.original or message in record.followups:
            return message
        return None

    async def _webhook_get(self, request: web.Request) -> web.Response:
        record = self._record_for_token(request.match_info["token"])
        if isinstance(record, web.Response):
            return record
        message = self._webhook_message(record, request.match_info["message"])
        if message is None:
            return _error(404, 10008, "Unknown Message")
        return _json(message.to_json())

    async def _webhook_edit(self, request: web.Request) -> web.Response:
        record = self._record_for_token(request.match_info["token"])
        if isinstance(record, web.Response):
            return record
        message = self._webhook_message(record, request.match_info["message"])
        if message is None:
            return _error(404, 10008, "Unknown Message")
        payload, files = await self._body(request)
        if files and self.upload_delay:
            await asyncio.sleep(self.upload_delay)
        merged = {**Snapshot.of(message).__dict__, **payload}
        rejected = self._reject(
            request, {"content": merged["content"], "embeds": merged["embeds"]}, files, record.guild
        )
        if rejected:
            await self._notify()
            return rejected
        self._apply(message, payload, files, editing=True)
        if message is record.original:
            record.history.append(Snapshot.of(message))
        await self._notify()
        return _json(message.to_json())

    async def _webhook_delete(self, request: web.Request) -> web.Response:
        record = self._record_for_token(request.match_info["token"])
        if isinstance(record, web.Response):
            return record
        message = self._webhook_message(record, request.match_info["message"])
        if message is None:
            return _error(404, 10008, "Unknown Message")
        message.deleted = True
        if message is record.original:
            record.original_deleted = True
        await self._notify()
        return web.Response(status=204)

    async def _followup(self, request: web.Request) -> web.Response:
        record = self._record_for_token(request.match_info["token"])
        if isinstance(record, web.Response):
            return record
        if not record.acknowledged:
            return _error(404, 10015, "Unknown Webhook")
        payload, files = await self._body(request)
        rejected = self._reject(request, payload, files, record.guild)
        if rejected:
            await self._notify()
            return rejected
        original = record.original
        if original is not None and not record.original_deleted and original.flags & LOADING:
            # Discord: the first followup after a deferred reply replaces the "thinking" one.
            self._apply(
                original, {k: v for k, v in payload.items() if k != "flags"}, files, editing=True
            )
            record.history.append(Snapshot.of(original))
            message = original
        else:
            message = self._new_message(record.channel, webhook=True)
            self._apply(message, payload, files, editing=False)
            record.followups.append(message)
        await self._notify()
        return _json(message.to_json())

    def _channel(self, request: web.Request) -> Channel | None:
        return self.channels.get(int(request.match_info["channel"]))

    async def _get_channel(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        return _json(channel.to_json()) if channel else _error(404, 10003, "Unknown Channel")

    async def _history(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel is None:
            return _error(404, 10003, "Unknown Channel")
        limit = int(request.query.get("limit", 50))
        messages = list(reversed(channel.visible_messages()))[:limit]
        return _json([m.to_json() for m in messages])

    async def _send(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel is None:
            return _error(404, 10003, "Unknown Channel")
        payload, files = await self._body(request)
        rejected = self._reject(request, payload, files, channel.guild)
        if rejected:
            await self._notify()
            return rejected
        nonce = payload.get("nonce")
        if nonce is not None and payload.get("enforce_nonce"):
            for existing in channel.messages.values():
                if existing.nonce == str(nonce):
                    return _json(existing.to_json())  # Discord returns the first, sends nothing
        message = self._new_message(channel, webhook=False)
        message.nonce = None if nonce is None else str(nonce)
        self._apply(message, payload, files, editing=False)
        await self._notify()
        return _json(message.to_json())

    def _message(self, request: web.Request) -> Message | None:
        channel = self._channel(request)
        message = channel.messages.get(int(request.match_info["message"])) if channel else None
        return None if message is None or message.deleted else message

    async def _get_message(self, request: web.Request) -> web.Response:
        message = self._message(request)
        return _json(message.to_json()) if message else _error(404, 10008, "Unknown Message")

    async def _edit_message(self, request: web.Request) -> web.Response:
        message = self._message(request)
        if message is None:
            return _error(404, 10008, "Unknown Message")
        payload, files = await self._body(request)
        self._apply(message, payload, files, editing=True)
        await self._notify()
        return _json(message.to_json())

    async def _delete_message(self, request: web.Request) -> web.Response:
        message = self._message(request)
        if message is None:
            return _error(404, 10008, "Unknown Message")
        message.deleted = True
        for record in self.interactions.values():
            if record.original is message:
                record.original_deleted = True
        await self._notify()
        return web.Response(status=204)

    async def _get_guild(self, request: web.Request) -> web.Response:
        guild = self.guilds.get(int(request.match_info["guild"]))
        if guild is None:
            return _error(404, 10004, "Unknown Guild")
        return _json(guild.to_json(self._bot_member(guild)))

    async def _get_member(self, request: web.Request) -> web.Response:
        guild = self.guilds.get(int(request.match_info["guild"]))
        member = guild.member(int(request.match_info["user"])) if guild else None
        return _json(member.to_json()) if member else _error(404, 10007, "Unknown Member")

    async def _get_attachment(self, request: web.Request) -> web.Response:
        attachment_id = int(request.match_info["id"])
        for message in self.messages.values():
            for attachment in message.attachments:
                if attachment.id == attachment_id:
                    return web.Response(body=attachment.data, content_type=attachment.content_type)
        return web.Response(status=404)


def _bucket(method: str, path: str) -> str:
    """Discord's buckets follow the route with its major parameter (channel, webhook token)."""
    path = re.sub(r"/messages/\d+", "/messages/:id", path)
    path = re.sub(r"/interactions/\d+/", "/interactions/:id/", path)
    return f"{method} {path}"
