"""The gateway websocket: HELLO, IDENTIFY → READY and one GUILD_CREATE per guild, heartbeats,
RESUME with the missed events replayed, and events sent to the session that should get them.

Sessions may be shards (`shard: [id, count]` in IDENTIFY), from one process or several: each
guild's events go to the session of the shard that owns it, `(guild_id >> 22) % count`, and
events without a guild (DMs) to shard 0. IDENTIFY is refused with Discord's close codes
(https://discord.com/developers/docs/topics/opcodes-and-status-codes#gateway-gateway-close-event-codes):
4004 bad token, 4010 invalid shard, 4011 sharding required, 4012 unsupported version, 4013
invalid intents, 4014 privileged intents the application may not use.

Frames go out as uncompressed text: discord.py asks for zlib-stream (or zstd-stream) but only
passes binary frames through its decompressor.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from tests.fakes.discord.state import Application, Guild, shard_of

if TYPE_CHECKING:
    from tests.fakes.discord.server import FakeDiscord

DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE_UPDATE, VOICE_STATE_UPDATE = 0, 1, 2, 3, 4
RESUME, RECONNECT, REQUEST_GUILD_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 6, 7, 8, 9, 10, 11
GUILD_MEMBERS, GUILD_PRESENCES, MESSAGE_CONTENT = 1 << 1, 1 << 8, 1 << 15
PRIVILEGED_INTENTS = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT
HEARTBEAT_INTERVAL_MS = 41_250
BACKLOG = 1000  # events kept per session for a RESUME
CLEAN_CLOSES = (1000, 1001)  # the client is leaving: its session ends (others may resume)


@dataclass(eq=False)
class Session:
    """One bot's gateway session; it outlives its socket until it is resumed or ended."""

    id: str
    app: Application
    intents: int
    shard: tuple[int, int]
    ws: web.WebSocketResponse | None
    seq: int = 0
    backlog: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=BACKLOG))
    ended: bool = False
    ready: bool = False  # sent READY and every GUILD_CREATE

    @property
    def connected(self) -> bool:
        return self.ws is not None

    def covers(self, guild_id: int | None) -> bool:
        """Whether this session's shard gets the guild's events (None: a DM, shard 0)."""
        shard_id, count = self.shard
        return shard_of(guild_id, count) == shard_id

    def guild_create(self, guild: Guild) -> dict[str, Any]:
        """GUILD_CREATE for this session: every member only with the presences intent."""
        return guild.gateway_json(self.app, all_members=bool(self.intents & GUILD_PRESENCES))

    async def send(self, event: str, data: dict[str, Any]) -> None:
        """Dispatch an event; without a socket it waits in the backlog for a RESUME."""
        self.seq += 1
        frame = json.dumps({"op": DISPATCH, "t": event, "s": self.seq, "d": data})
        self.backlog.append((self.seq, frame))
        if self.ws is not None:
            try:
                await self.ws.send_str(frame)
            except ConnectionError:
                self.ws = None


class Gateway:
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.sessions: list[Session] = []  # oldest first; ended sessions are dropped
        self.resumes = 0
        self._ready: dict[int, asyncio.Event] = {}

    def ready(self, app: Application) -> asyncio.Event:
        """Set while `app` has a connected session that has been sent all its guilds."""
        return self._ready.setdefault(app.id, asyncio.Event())

    def live(self, app: Application) -> list[Session]:
        return [s for s in self.sessions if s.app is app and s.ws is not None]

    def shard_sessions(self, app: Application, count: int) -> dict[int, Session]:
        """The newest connected, ready session of each shard of `count` shards."""
        found: dict[int, Session] = {}
        for session in self.live(app):
            if session.ready and session.shard[1] == count:
                found[session.shard[0]] = session
        return found

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        version = request.query.get("v", "")
        await _send(ws, HELLO, {"heartbeat_interval": HEARTBEAT_INTERVAL_MS})
        session: Session | None = None
        try:
            async for frame in ws:
                if frame.type is not WSMsgType.TEXT:
                    continue
                try:
                    message = json.loads(frame.data)
                except ValueError:
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                op, data = message.get("op"), message.get("d")
                session = await self._receive(ws, session, op, data, version)
        finally:
            if session is not None and session.ws is ws:
                self._detach(session, ws.close_code)
        return ws

    async def _receive(
        self, ws: web.WebSocketResponse, session: Session | None, op: Any, data: Any, version: str
    ) -> Session | None:
        if op == HEARTBEAT:
            await _send(ws, HEARTBEAT_ACK, None)
        elif op in (IDENTIFY, RESUME) and session is not None:
            await ws.close(code=4005, message=b"Already authenticated.")
        elif op == IDENTIFY:
            return await self._identify(ws, data, version)
        elif op == RESUME:
            return await self._resume(ws, data)
        elif op in (PRESENCE_UPDATE, VOICE_STATE_UPDATE, REQUEST_GUILD_MEMBERS):
            self.fake.unhandled.append(f"gateway op {op}")
        else:
            await ws.close(code=4001, message=b"Unknown opcode.")
        return session

    async def _identify(
        self, ws: web.WebSocketResponse, data: dict[str, Any], version: str
    ) -> Session | None:
        app = self.fake.app_for_token(data.get("token") or "") if isinstance(data, dict) else None
        if app is not None and app.session_start_limit.remaining <= 0:
            await self._limit_spent(app)
        refusal = self._refusal(data, version)
        if refusal is not None:
            code, reason = refusal
            await ws.close(code=code, message=reason.encode())
            return None
        assert app is not None  # checked by _refusal
        app.session_start_limit.remaining -= 1
        shard_id, count = data.get("shard") or (0, 1)
        intents = int(data.get("intents", 0))
        session = Session(secrets.token_hex(16), app, intents, (shard_id, count), ws)
        self.sessions.append(session)
        guilds = [g for g in self.fake.world.guilds.values() if session.covers(g.id)]
        ready: dict[str, Any] = {
            "v": 10,
            "user": app.user.to_json(),
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.fake.gateway_url,
            "application": {"id": str(app.id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
        }
        if "shard" in data:
            ready["shard"] = [shard_id, count]
        await session.send("READY", ready)
        for guild in guilds:
            await session.send("GUILD_CREATE", session.guild_create(guild))
        session.ready = True
        self.ready(app).set()
        self.fake.changed.notify()
        return session

    async def _limit_spent(self, app: Application) -> None:
        """An IDENTIFY past the session start limit: Discord ends the app's sessions and resets
        its token (https://discord.com/developers/docs/events/gateway#session-start-limit-object),
        so this IDENTIFY fails with 4004 and so does anything else using the old token."""
        self.fake.reset_token(app)
        for session in self.live(app):
            if session.ws is not None:
                await session.ws.close(code=4004, message=b"Authentication failed.")

    def _refusal(self, data: Any, version: str) -> tuple[int, str] | None:
        """The close code and reason Discord ends this IDENTIFY with, if any.

        The fake answers a bad version here too, not on connecting: discord.py reports close
        codes met after IDENTIFY, while AutoShardedClient retries a failed connect forever.
        """
        if not isinstance(data, dict):
            return 4002, "Error while decoding payload."
        app = self.fake.app_for_token(data.get("token") or "")
        if app is None:
            return 4004, "Authentication failed."
        if not version.isdigit() or int(version) not in self.fake.gateway_versions:
            return 4012, "Invalid API version."
        try:
            intents = int(data.get("intents", 0))
        except (TypeError, ValueError):
            return 4013, "Invalid intent(s)."
        if intents < 0 or intents & ~self.fake.valid_intents:
            return 4013, "Invalid intent(s)."
        if intents & PRIVILEGED_INTENTS & ~app.privileged_intents:
            return 4014, "Disallowed intent(s)."
        shard = data.get("shard") or (0, 1)
        if not _valid_shard(shard):
            return 4010, "Invalid shard."
        shard_id, count = shard
        # "The session would have handled too many guilds": each shard holds at most
        # max_guilds_per_shard guilds (2500 on Discord).
        held = sum(shard_of(g, count) == shard_id for g in self.fake.world.guilds)
        if held > self.fake.max_guilds_per_shard:
            return 4011, "Sharding required."
        return None

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> Session | None:
        """Resume a session that lost its socket, replaying what it missed; else op 9."""
        session = next((s for s in self.sessions if s.id == data.get("session_id")), None)
        seq = data.get("seq") or 0
        missed = [frame for s, frame in session.backlog if s > seq] if session else []
        lost = session is not None and bool(session.backlog) and session.backlog[0][0] > seq + 1
        if session is None or session.app.token != data.get("token") or lost:
            await _send(ws, INVALID_SESSION, False)
            return None
        if session.ws is not None:
            await session.ws.close(code=4000, message=b"Session resumed elsewhere.")
        session.ws = ws
        for frame in missed:
            await ws.send_str(frame)
        await session.send("RESUMED", {})
        self.resumes += 1
        self.ready(session.app).set()
        self.fake.changed.notify()
        return session

    def _detach(self, session: Session, close_code: int | None) -> None:
        session.ws = None
        if close_code in CLEAN_CLOSES:
            session.ended = True
            self.sessions.remove(session)
        if not self.live(session.app):
            self.ready(session.app).clear()
        self.fake.changed.notify()

    def route(self, app: Application, guild_id: int | None) -> Session:
        """The session that gets the guild's events (None: a DM, shard 0): the app's newest
        for that shard, a connected one if any (a killed process's session lingers until
        its socket is seen closed)."""
        sessions = [s for s in self.sessions if s.app is app and s.covers(guild_id)]
        if not sessions:
            where = "for DMs" if guild_id is None else f"for the guild {guild_id}"
            raise RuntimeError(f"no session of the bot {app.name!r} {where} on the fake gateway")
        connected = [s for s in sessions if s.ws is not None]
        return (connected or sessions)[-1]

    async def dispatch(
        self, app: Application, event: str, data: dict[str, Any], guild_id: int | None
    ) -> Session:
        """Send an event to the session `route` picks; returns that session."""
        session = self.route(app, guild_id)
        await session.send(event, data)
        return session

    async def reconnect(self, app: Application) -> None:
        """Ask the app's connected sessions to reconnect (op 7), as Discord does at times."""
        for session in self.live(app):
            if session.ws is not None:
                await _send(session.ws, RECONNECT, None)

    async def close(self) -> None:
        for session in list(self.sessions):
            if session.ws is not None:
                await session.ws.close()


async def _send(ws: web.WebSocketResponse, op: int, data: Any) -> None:
    await ws.send_str(json.dumps({"op": op, "d": data}))


def _valid_shard(shard: Any) -> bool:
    """`[shard_id, num_shards]` with 0 <= shard_id < num_shards."""
    if not isinstance(shard, list | tuple) or len(shard) != 2:
        return False
    shard_id, count = shard
    integers = all(isinstance(n, int) and not isinstance(n, bool) for n in shard)
    return integers and 0 <= shard_id < count
