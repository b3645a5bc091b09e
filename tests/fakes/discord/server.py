"""A local fake Discord: REST routes and the gateway websocket, on 127.0.0.1.

The real, unmodified discord.py logs in to it, syncs its commands, receives the interactions
tests inject, and answers them; the fake records what a person would have seen and enforces
what real Discord enforces (the 3-second first response, one first response, 15-minute
tokens, per-route rate limits with 429s, message and upload limits).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import discord
import yarl
from aiohttp import web

from tests.fakes.discord.commands import CHAT_INPUT, AppCommands, command_data
from tests.fakes.discord.gateway import Gateway, Session
from tests.fakes.discord.limits import MessageLimits, RateLimiter
from tests.fakes.discord.records import InteractionRecord, Rejection, RequestLog, Signal
from tests.fakes.discord.rest import Rest
from tests.fakes.discord.state import (
    ADMINISTRATOR,
    DEFAULT_UPLOAD_LIMIT,
    Application,
    Channel,
    Guild,
    Member,
    Message,
    World,
    new_bot_token,
    snowflake,
)
from tests.fakes.discord.webhooks import APPLICATION_COMMAND, COMPONENT, Webhooks
from tests.fakes.discord.wire import API, Fault, Faults, middleware

DEFAULT_MESSAGE_LIMITS = MessageLimits()
# https://discord.com/developers/docs/reference#api-versioning: 10 and 9 are available.
GATEWAY_VERSIONS = frozenset({9, 10})
MAX_GUILDS_PER_SHARD = 2500  # https://discord.com/developers/docs/events/gateway#sharding
MAX_BODY = 512 * 1024 * 1024  # let the fake, not aiohttp, decide what is too large
BUTTON = 2


class FakeDiscord:
    """One fake Discord for one test (or one benchmark run).

    `clock` drives the interaction timers (3-second deadline, 15-minute tokens) and the
    recorded times; `advance()` moves it on without sleeping. Set `ack_deadline`,
    `token_lifetime` or `message_limits` to None to switch that rule off, and
    `rate_limits.enabled = False` to switch rate limits off.

    Sharding: GET /gateway/bot recommends `recommended_shards` (raised to what
    `max_guilds_per_shard` requires, as Discord's recommendation always is); a session whose
    shard would hold more than `max_guilds_per_shard` guilds is closed with 4011. Set
    `gateway_versions` or `valid_intents` to have IDENTIFY closed with 4012 or 4013.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        ack_deadline: float | None = 3.0,
        token_lifetime: float | None = 15 * 60,
        rate_limits: RateLimiter | None = None,
        message_limits: MessageLimits | None = DEFAULT_MESSAGE_LIMITS,
        bot_name: str = "Imagine",
        recommended_shards: int = 1,
        max_guilds_per_shard: int = MAX_GUILDS_PER_SHARD,
    ) -> None:
        self.ack_deadline = ack_deadline
        self.token_lifetime = token_lifetime
        self.rate_limits = rate_limits or RateLimiter()
        self.message_limits = message_limits
        self.upload_delay = 0.0  # extra seconds for any request with files: a slow upload
        self.answer_delay = 0.0  # seconds an accepted interaction callback's answer is held
        self.recommended_shards = recommended_shards
        self.max_guilds_per_shard = max_guilds_per_shard
        self.gateway_versions: frozenset[int] = GATEWAY_VERSIONS  # else IDENTIFY gets 4012
        self.valid_intents = discord.Intents.all().value  # other bits: IDENTIFY gets 4013
        self.world = World()
        self._apps: dict[str, Application] = {}
        self._commands: dict[int, AppCommands] = {}
        self.app = self.add_application(bot_name)
        self.interactions: dict[str, InteractionRecord] = {}  # by token
        self.requests: list[RequestLog] = []
        self.rejections: list[Rejection] = []
        self.unhandled: list[str] = []  # routes and gateway ops the fake does not implement
        self.rate_limited_count = 0  # every 429 sent, forced ones included
        self.faults = Faults()
        self.changed = Signal()
        self.gateway = Gateway(self)
        self._clock = clock
        self._offset = 0.0
        self._runner: web.AppRunner | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on 127.0.0.1, on a free port."""
        app = web.Application(middlewares=[middleware(self)], client_max_size=MAX_BODY)
        app.add_routes([web.get("/gateway", self.gateway.handle)])
        app.add_routes(Webhooks(self).routes())
        app.add_routes(Rest(self).routes())
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.world.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return self.world.base_url

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

    # -- time ------------------------------------------------------------------------------

    def now(self) -> float:
        return self._clock() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the fake's clock on (deadlines, token lifetimes) without sleeping."""
        self._offset += seconds

    def expire_token(self, record: InteractionRecord) -> None:
        """End an interaction's token now, as if its 15 minutes had passed."""
        record.token_revoked = True

    # -- applications ----------------------------------------------------------------------

    @property
    def bot_token(self) -> str:
        return self.app.token

    @property
    def application_id(self) -> int:
        return self.app.id

    @property
    def bot_user_id(self) -> int:
        return self.app.user.id

    def add_application(self, name: str) -> Application:
        """Another bot, with its own token, commands and sessions."""
        app = Application.create(name)
        self._apps[app.token] = app
        self._commands[app.id] = AppCommands()
        self.world.users[app.user.id] = app.user
        return app

    def app_for_token(self, token: str) -> Application | None:
        return self._apps.get(token)

    def reset_token(self, app: Application | None = None) -> str:
        """Give the bot a new token, as "Reset Token" does: the old one then fails to log in
        (401) and to IDENTIFY (4004). Returns the new token."""
        app = app or self.app
        del self._apps[app.token]
        app.token = new_bot_token(app.id)
        self._apps[app.token] = app
        return app.token

    def app_by_id(self, app_id: int) -> Application:
        return next(a for a in self._apps.values() if a.id == app_id)

    def commands_of(self, app: Application) -> AppCommands:
        return self._commands[app.id]

    @property
    def guild_commands(self) -> dict[int, list[dict[str, Any]]]:
        """The default bot's commands synced per guild, as Discord stored them."""
        return self._commands[self.app.id].guilds

    @property
    def global_commands(self) -> list[dict[str, Any]]:
        return self._commands[self.app.id].global_

    def listed_commands(
        self, guild: Guild, member: Member | None = None, *, app: Application | None = None
    ) -> list[str]:
        """The slash commands a member of `guild` is offered: the guild's commands, then the
        global ones. A name synced both ways is listed twice, as Discord's client shows it.
        With `member`, commands whose `default_member_permissions` they lack are left out
        (https://discord.com/developers/docs/interactions/application-commands#permissions)."""
        commands = self.commands_of(app or self.app)
        both = [*commands.guilds.get(guild.id, []), *commands.global_]
        permissions = None if member is None else member.permissions
        return [
            c["name"]
            for c in both
            if c["type"] == CHAT_INPUT and _may_use(c["default_member_permissions"], permissions)
        ]

    # -- the world tests build -------------------------------------------------------------

    def add_guild(
        self,
        name: str = "Test Server",
        *,
        upload_limit: int | None = None,
        shard: tuple[int, int] | None = None,
    ) -> Guild:
        """A guild with an owner and @everyone; the bots are in it once they connect. With
        `shard=(shard_id, count)` its id puts it on that shard when the bot runs `count`
        shards: `(guild.id >> 22) % count == shard_id`."""
        limit = upload_limit or DEFAULT_UPLOAD_LIMIT
        return self.world.add_guild(name, upload_limit=limit, shard=shard)

    @property
    def required_shards(self) -> int:
        """The fewest shards that leave at most `max_guilds_per_shard` guilds per shard, if
        the guilds spread evenly (ids from `add_guild(shard=...)` choose where they go)."""
        return max(1, math.ceil(len(self.world.guilds) / self.max_guilds_per_shard))

    @property
    def shard_count_recommended(self) -> int:
        """What GET /gateway/bot answers as `shards`."""
        return max(self.recommended_shards, self.required_shards)

    def add_channel(self, guild: Guild, name: str, *, nsfw: bool = False) -> Channel:
        return guild.add_channel(name, nsfw=nsfw)

    @property
    def guilds(self) -> dict[int, Guild]:
        return self.world.guilds

    @property
    def channels(self) -> dict[int, Channel]:
        return self.world.channels

    @property
    def messages(self) -> dict[int, Message]:
        return self.world.messages

    def channel_messages(self, channel: Channel) -> list[Message]:
        """What members see in the channel, oldest first: the bot's posts and its
        non-ephemeral interaction responses and followups, minus deleted ones."""
        return channel.visible_messages()

    async def sync_guild(self, guild: Guild, app: Application | None = None) -> None:
        """Send a guild's current state to the bot (GUILD_CREATE), after changing it."""
        for session in self.gateway.live(app or self.app):
            if session.covers(guild.id):
                await session.send("GUILD_CREATE", session.guild_create(guild))

    async def reconnect(self, app: Application | None = None) -> None:
        """Ask the bot to reconnect (gateway op 7); discord.py resumes its session."""
        await self.gateway.reconnect(app or self.app)

    # -- waiting ---------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until `predicate()` holds; re-checked whenever the fake records anything,
        and every few milliseconds (for what the fake does not record)."""
        await self.changed.wait_for(predicate, timeout, "the predicate")

    async def wait_until_ready(self, timeout: float = 10.0, app: Application | None = None) -> None:
        """Wait until the bot is connected and has been sent READY and every GUILD_CREATE."""
        ready = self.gateway.ready(app or self.app)
        await self.changed.wait_for(ready.is_set, timeout, "the bot to connect")

    async def wait_until_disconnected(
        self,
        timeout: float = 10.0,
        app: Application | None = None,
        *,
        shard_ids: Iterable[int] | None = None,
    ) -> None:
        """Wait until the bot has no connected session (after `bot.close()`, before a restart,
        so that the next `wait_until_ready` is about the new connection); with `shard_ids`,
        none for those shards (one process of several stopped or killed)."""
        app = app or self.app
        shards = None if shard_ids is None else set(shard_ids)

        def gone() -> bool:
            live = self.gateway.live(app)
            return not [s for s in live if shards is None or s.shard[0] in shards]

        what = "a disconnect" if shards is None else f"shards {sorted(shards)} to disconnect"
        await self.changed.wait_for(gone, timeout, what)

    def sessions(self, app: Application | None = None) -> list[Session]:
        """The bot's connected gateway sessions, oldest first (one per shard per process)."""
        return self.gateway.live(app or self.app)

    async def wait_for_shards(
        self,
        shard_ids: Iterable[int],
        shard_count: int,
        *,
        app: Application | None = None,
        timeout: float = 10.0,
    ) -> dict[int, Session]:
        """Wait until each of `shard_ids` (of `shard_count` shards) has a connected session
        that has been sent READY and its guilds, from any process; returns them by shard id."""
        app = app or self.app
        wanted = set(shard_ids)

        def connected() -> bool:
            return wanted <= self.gateway.shard_sessions(app, shard_count).keys()

        what = f"shards {sorted(wanted)} of {shard_count} to connect"
        await self.changed.wait_for(connected, timeout, what)
        found = self.gateway.shard_sessions(app, shard_count)
        return {shard_id: found[shard_id] for shard_id in sorted(wanted)}

    async def connect(self, client: discord.Client, timeout: float = 10.0) -> asyncio.Task[None]:
        """Log `client` in as the default bot and wait until both sides are ready; returns
        the task running its connection (hand it to `disconnect`)."""
        await client.login(self.bot_token)
        connection = asyncio.create_task(client.connect(reconnect=False))
        await self.wait_until_ready(timeout)
        await asyncio.wait_for(client.wait_until_ready(), timeout)
        return connection

    async def disconnect(self, client: discord.Client, connection: asyncio.Task[None]) -> None:
        """Close `client` and wait until the fake has seen its sessions go (other clients of
        the same bot, e.g. other shards' processes, stay connected)."""
        app = self.app_for_token(client.http.token or "") or self.app
        mine = self._sessions_of(client, app)
        await client.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await connection

        def gone() -> bool:
            return not any(s.connected for s in mine)

        await self.changed.wait_for(gone, 10.0, f"{len(mine)} session(s) to close")

    def _sessions_of(self, client: discord.Client, app: Application) -> list[Session]:
        """The fake's sessions of a connected discord.py client: its websocket's session, or
        for an AutoShardedClient the sessions of its shards."""
        if isinstance(client, discord.AutoShardedClient):
            count = client.shard_count or 1
            ids = set(client.shards)
            return [s for s in self.gateway.live(app) if s.shard[1] == count and s.shard[0] in ids]
        session_id = client.ws.session_id if client.ws is not None else None
        return [s for s in self.gateway.live(app) if s.id == session_id]

    # -- faults ----------------------------------------------------------------------------

    def fail_next(self, method: str, path: str, *, status: int = 500, times: int = 1) -> None:
        """The next `times` requests with `method` ("*": any) whose path matches the regex
        `path` get `status` with a JSON body (discord.py retries 500, 502, 504)."""
        self.faults.add(Fault(method, re.compile(path), status, times))

    def force_rate_limit(
        self, path: str, *, retry_after: float = 0.2, times: int = 1, method: str = "*"
    ) -> None:
        """The next `times` matching requests get a 429 asking to retry after `retry_after`."""
        self.faults.add(Fault(method, re.compile(path), 429, times, retry_after))

    # -- injecting interactions ------------------------------------------------------------

    async def slash(
        self,
        guild: Guild,
        channel: Channel,
        member: Member,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        app: Application | None = None,
    ) -> InteractionRecord:
        """`member` runs `/name` ("limits set" for a subcommand) with `options`, typed as the
        bot synced them: members, roles and channels are resolved, guild_id is set for a
        guild command. Raises what Discord's client would not let a member send."""
        app = app or self.app
        first, *path = name.split()
        command = self.commands_of(app).find(guild.id, first)
        if command is None:
            raise LookupError(f"{app.name} has not synced a command /{first} for {guild.name}")
        data = command_data(self.world, command, path, options or {}, member)
        return await self._interact(app, APPLICATION_COMMAND, channel, member, data)

    async def click(
        self,
        guild: Guild,
        channel: Channel,
        member: Member,
        message: Message,
        custom_id: str,
    ) -> InteractionRecord:
        """`member` clicks the button `custom_id` on `message` (which must show it). A deleted
        message can still be clicked: a member's client may not have caught up yet."""
        component = message.component(custom_id)
        if component is None or component.get("type") != BUTTON:
            raise LookupError(f"message {message.id} shows no button {custom_id!r}")
        if component.get("disabled"):
            raise ValueError(f"the button {custom_id!r} is disabled")
        if message.channel is not channel or channel.guild is not guild:
            raise ValueError(f"message {message.id} is not in #{channel.name}")
        app = self.app_by_id(message.app_id) if message.app_id is not None else self.app
        data = {"custom_id": custom_id, "component_type": BUTTON}
        return await self._interact(app, COMPONENT, channel, member, data, message=message)

    async def _interact(
        self,
        app: Application,
        kind: int,
        channel: Channel,
        member: Member,
        data: dict[str, Any],
        *,
        message: Message | None = None,
    ) -> InteractionRecord:
        guild = channel.guild
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(120)
        permissions = str(member.permissions)
        member_json = member.to_json() | {"permissions": permissions}
        payload: dict[str, Any] = {
            "id": str(snowflake()),
            "application_id": str(app.id),
            "type": kind,
            "token": token,
            "version": 1,
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
            "channel_id": str(channel.id),
            "channel": channel.to_json() | {"permissions": permissions},
            "member": member_json,
            "app_permissions": str(guild.bot_member(app).permissions),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
            "attachment_size_limit": guild.upload_limit,
            "data": data,
        }
        if message is not None:
            payload["message"] = message.to_json(app.user.id)
        record = InteractionRecord(
            id=int(payload["id"]),
            token=token,
            type=kind,
            app_id=app.id,
            guild=guild,
            channel=channel,
            member=member,
            payload=payload,
            created=self.now(),
            message=message,
        )
        session = self.gateway.route(app, guild.id)
        record.session_id, record.shard = session.id, session.shard
        self.interactions[token] = record
        await session.send("INTERACTION_CREATE", payload)
        return record


def _may_use(required: str | None, permissions: int | None) -> bool:
    """Whether a member with `permissions` (None: anyone) is offered a command needing
    `required`: "0" leaves it to administrators, who (like owners) may use every command."""
    if required is None or permissions is None or permissions & ADMINISTRATOR:
        return True
    needed = int(required)
    return needed != 0 and permissions & needed == needed
