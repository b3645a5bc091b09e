"""The gateway websocket: HELLO, IDENTIFY → READY and one GUILD_CREATE per guild, heartbeats,
RESUME with the missed events replayed, and events sent to the session that should get them.

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

from tests.fakes.discord.state import Application, Guild

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

    def covers(self, guild_id: int) -> bool:
        shard_id, count = self.shard
        return (guild_id >> 22) % count == shard_id

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

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
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
                session = await self._receive(ws, session, message.get("op"), message.get("d"))
        finally:
            if session is not None and session.ws is ws:
                self._detach(session, ws.close_code)
        return ws

    async def _receive(
        self, ws: web.WebSocketResponse, session: Session | None, op: Any, data: Any
    ) -> Session | None:
        if op == HEARTBEAT:
            await _send(ws, HEARTBEAT_ACK, None)
        elif op in (IDENTIFY, RESUME) and session is not None:
            await ws.close(code=4005, message=b"Already authenticated.")
        elif op == IDENTIFY:
            return await self._identify(ws, data)
        elif op == RESUME:
            return await self._resume(ws, data)
        elif op in (PRESENCE_UPDATE, VOICE_STATE_UPDATE, REQUEST_GUILD_MEMBERS):
            self.fake.unhandled.append(f"gateway op {op}")
        else:
            await ws.close(code=4001, message=b"Unknown opcode.")
        return session

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> Session | None:
        app = self.fake.app_for_token(data.get("token", ""))
        if app is None:
            await ws.close(code=4004, message=b"Authentication failed.")
            return None
        intents = int(data.get("intents", 0))
        if intents & PRIVILEGED_INTENTS & ~app.privileged_intents:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return None
        shard_id, count = data.get("shard") or (0, 1)
        if not 0 <= shard_id < count:
            await ws.close(code=4010, message=b"Invalid shard.")
            return None
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
        self.ready(app).set()
        self.fake.changed.notify()
        return session

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

    async def dispatch(
        self, app: Application, event: str, data: dict[str, Any], guild_id: int
    ) -> None:
        """Send an event to the app's newest session for the guild's shard (a connected one
        if any: a killed process's session lingers until its socket is seen closed)."""
        sessions = [s for s in self.sessions if s.app is app and s.covers(guild_id)]
        if not sessions:
            raise RuntimeError(f"no session of the bot {app.name!r} is on the fake gateway")
        connected = [s for s in sessions if s.ws is not None]
        await (connected or sessions)[-1].send(event, data)

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
