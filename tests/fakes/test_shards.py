"""Shards, several bot processes and command scopes on the fake Discord, against the real
discord.py: AutoShardedClients (one or several, with disjoint shard ids, as separate processes
would run them), the close codes that stop a bot, and what members see of global and guild
commands."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import discord
import pytest
from discord import app_commands

from tests.fakes.discord import FakeDiscord, Guild, InteractionRecord

AGAIN = "where:again"


@pytest.fixture(autouse=True)
def quiet_discord() -> Iterator[None]:
    """Refused IDENTIFYs are expected here: keep discord.py's errors out of the output."""
    logger = logging.getLogger("discord")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


class Again(discord.ui.View):
    """A persistent button that answers with the name of the client that got the click."""

    def __init__(self, name: str) -> None:
        super().__init__(timeout=None)
        self.name = name

    @discord.ui.button(label="Again", custom_id=AGAIN)
    async def again(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        await interaction.response.edit_message(content=f"{self.name} again")


class ShardedClient(discord.AutoShardedClient):
    """A plain AutoShardedClient with one global command, /where, that answers with the
    client's name (so a test sees which client, standing for a process, got it)."""

    def __init__(self, name: str, **options: Any) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.05, **options)
        self.name = name
        self.tree = app_commands.CommandTree(self)

        @self.tree.command(description="Which client answers")
        async def where(interaction: discord.Interaction) -> None:
            await interaction.response.send_message(self.name, view=Again(self.name))

    async def setup_hook(self) -> None:
        self.add_view(Again(self.name))
        await self.tree.sync()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py waits 5 s before each IDENTIFY but the first; the fake needs no pacing."""


async def _ready_or_failed(client: discord.Client, connection: asyncio.Task[None]) -> None:
    """Wait until `client` is ready; raise what its connection raised if it ended first."""
    ready = asyncio.create_task(client.wait_until_ready())
    done, _ = await asyncio.wait({ready, connection}, timeout=10, return_when="FIRST_COMPLETED")
    if connection in done:
        ready.cancel()
        connection.result()
        raise AssertionError("the connection ended before the client was ready")
    if ready not in done:
        ready.cancel()
        raise TimeoutError("the client did not get ready within 10 s")


Connections = dict[discord.Client, asyncio.Task[None]]


@contextlib.asynccontextmanager
async def running(fake: FakeDiscord, *clients: discord.Client) -> AsyncIterator[Connections]:
    """Log each client in and connect it (each may stand for a separate bot process); yields
    the task running each one's connection, for `fake.disconnect`."""
    connections: Connections = {}
    try:
        for client in clients:
            await client.login(fake.bot_token)
            connections[client] = asyncio.create_task(client.connect())
            await _ready_or_failed(client, connections[client])
        yield connections
    finally:
        for client, connection in connections.items():
            if not client.is_closed():
                await fake.disconnect(client, connection)


async def _where(fake: FakeDiscord, guild: Guild) -> InteractionRecord:
    """A member runs /where in `guild` and the bot has answered."""
    channel = guild.channels[0]
    ix = await fake.slash(guild, channel, guild.members[0], "where")
    return await ix.wait_for(lambda ix: ix.acknowledged)


def _guild(fake: FakeDiscord, name: str, shard: tuple[int, int]) -> Guild:
    guild = fake.add_guild(name, shard=shard)
    guild.add_channel("general")
    guild.add_member(f"{name}-member")
    return guild


def test_guild_ids_land_on_the_shard_asked_for() -> None:
    fake = FakeDiscord()
    for count in (1, 2, 3, 7):
        for shard_id in range(count):
            guild = fake.add_guild(shard=(shard_id, count))
            assert (guild.id >> 22) % count == shard_id
    with pytest.raises(ValueError, match="no shard 2 among 2"):
        fake.add_guild(shard=(2, 2))


async def test_one_client_runs_the_recommended_shards_each_with_its_guilds(
    fake_discord: FakeDiscord,
) -> None:
    fake = fake_discord
    fake.recommended_shards = 2
    first, second = _guild(fake, "first", (0, 2)), _guild(fake, "second", (1, 2))
    client = ShardedClient("A")
    async with running(fake, client):
        assert client.shard_count == 2  # what GET /gateway/bot recommended
        sessions = await fake.wait_for_shards([0, 1], 2)
        assert {g.id: g.shard_id for g in client.guilds} == {first.id: 0, second.id: 1}
        here, there = await _where(fake, first), await _where(fake, second)
        assert (here.shard, here.session_id) == ((0, 2), sessions[0].id)
        assert (there.shard, there.session_id) == ((1, 2), sessions[1].id)
        assert here.original is not None and here.original.content == "A"
        assert there.original is not None
        click = await fake.click(
            second, second.channels[0], second.members[0], there.original, AGAIN
        )
        await click.wait_for(lambda ix: ix.acknowledged)
        assert click.shard == (1, 2) and click.session_id == sessions[1].id
        assert there.original.content == "A again"
        limits = await client.fetch_session_start_limits()
        assert limits.total == 1000 and limits.remaining == 998  # one IDENTIFY per shard


async def test_the_recommendation_covers_the_guilds_per_shard_limit(
    fake_discord: FakeDiscord,
) -> None:
    fake = fake_discord
    fake.max_guilds_per_shard = 2
    for n, shard in enumerate([(0, 3), (1, 3), (2, 3), (0, 3), (1, 3)]):
        _guild(fake, f"g{n}", shard)
    assert fake.shard_count_recommended == 3  # ceil(5 / 2), though 1 was configured
    client = ShardedClient("A")
    async with running(fake, client):
        assert client.shard_count == 3 and len(client.guilds) == 5
        assert sorted(s.shard for s in fake.sessions()) == [(0, 3), (1, 3), (2, 3)]


@pytest.mark.parametrize("count", [2, 3])
async def test_clients_with_disjoint_shards_each_get_their_guilds(
    fake_discord: FakeDiscord, count: int
) -> None:
    fake = fake_discord
    guilds = [_guild(fake, f"on-{n}", (n, count)) for n in range(count)]
    extra = _guild(fake, "also-on-0", (0, count))
    clients = [ShardedClient(f"P{n}", shard_ids=[n], shard_count=count) for n in range(count)]
    async with running(fake, *clients) as connections:
        await fake.wait_for_shards(range(count), count)
        assert {g.id for g in clients[0].guilds} == {guilds[0].id, extra.id}
        for n in range(1, count):
            assert [g.id for g in clients[n].guilds] == [guilds[n].id]
        for n, guild in enumerate([*guilds, extra]):
            ix = await _where(fake, guild)
            expected = n % count
            assert ix.original is not None and ix.original.content == f"P{expected}"
            assert ix.shard == (expected, count)

        typing = asyncio.create_task(clients[0].wait_for("raw_typing", timeout=5))
        dm = {"channel_id": "1", "user_id": str(guilds[0].members[0].id), "timestamp": 0}
        session = await fake.gateway.dispatch(fake.app, "TYPING_START", dm, None)
        assert session.shard == (0, count)  # DMs go to shard 0
        assert (await typing).user_id == guilds[0].members[0].id

        last = clients[-1]  # that process stops; the others carry on
        await last.close()
        await connections[last]
        await fake.wait_until_disconnected(shard_ids=[count - 1])
        assert sorted(s.shard[0] for s in fake.sessions()) == list(range(count - 1))
        ix = await _where(fake, guilds[0])
        assert ix.original is not None and ix.original.content == "P0"
        restarted = ShardedClient("P-new", shard_ids=[count - 1], shard_count=count)
        async with running(fake, restarted):
            ix = await _where(fake, guilds[-1])
            assert ix.original is not None and ix.original.content == "P-new"


def _plain(**options: Any) -> discord.Client:
    return discord.Client(intents=discord.Intents.default(), guild_ready_timeout=0.05, **options)


async def _refused(fake: FakeDiscord, client: discord.Client, token: str | None = None) -> Any:
    """Connect `client` (which would reconnect after ordinary closes) and return what
    discord.py raised, once the fake has no session left."""
    await client.login(token or fake.bot_token)
    try:
        with pytest.raises(Exception) as raised:
            await asyncio.wait_for(client.connect(reconnect=True), 10)
    finally:
        await client.close()
    await fake.wait_until_disconnected()
    return raised.value


async def _cannot_log_in(token: str) -> None:
    client = _plain()
    try:
        with pytest.raises(discord.LoginFailure):
            await client.login(token)
    finally:
        await client.close()


TOO_FEW = {
    "Client": _plain,
    "AutoShardedClient(shard_count=1)": lambda: ShardedClient("A", shard_count=1),
    "AutoShardedClient(shard_count=2)": lambda: ShardedClient("A", shard_count=2),
}


@pytest.mark.parametrize("make", TOO_FEW.values(), ids=TOO_FEW.keys())
async def test_a_shard_with_too_many_guilds_is_closed_with_4011(
    fake_discord: FakeDiscord, make: Callable[[], discord.Client]
) -> None:
    """Four guilds, at most two a shard: one shard is too few, and so are two shards when
    three guilds fall on shard 1 (shard 0 connects; shard 1 is refused)."""
    fake = fake_discord
    fake.max_guilds_per_shard = 2
    for n, shard in enumerate([(0, 2), (1, 2), (1, 2), (1, 2)]):
        _guild(fake, f"g{n}", shard)
    error = await _refused(fake, make())
    assert isinstance(error, discord.ConnectionClosed) and error.code == 4011


@pytest.mark.parametrize(
    "make",
    [_plain, lambda: ShardedClient("A", shard_count=2)],
    ids=["Client", "AutoShardedClient(shard_count=2)"],
)
async def test_a_reset_token_is_closed_with_4004(
    fake_discord: FakeDiscord, make: Callable[[], discord.Client]
) -> None:
    old = fake_discord.bot_token
    client = make()
    await client.login(old)
    fake_discord.reset_token()  # after the login, before the IDENTIFY
    try:
        with pytest.raises(discord.ConnectionClosed) as raised:
            await asyncio.wait_for(client.connect(reconnect=True), 10)
    finally:
        await client.close()
    assert raised.value.code == 4004
    await _cannot_log_in(old)


async def test_identifying_past_the_session_start_limit_resets_the_token(
    fake_discord: FakeDiscord,
) -> None:
    old = fake_discord.bot_token
    fake_discord.app.session_start_limit.remaining = 0
    error = await _refused(fake_discord, _plain(), old)
    assert isinstance(error, discord.ConnectionClosed) and error.code == 4004
    assert fake_discord.bot_token != old
    await _cannot_log_in(old)


def _versions(fake: FakeDiscord) -> None:
    fake.gateway_versions = frozenset({9})  # discord.py speaks v10


def _intents(fake: FakeDiscord) -> None:
    fake.valid_intents = discord.Intents.default().value & ~discord.Intents(dm_typing=True).value


def _privileged(fake: FakeDiscord) -> None:
    fake.app.privileged_intents = 0  # as by default, but the client asks for all intents


REFUSALS = {
    "4012 version": (_versions, {}, 4012),
    "4013 intents": (_intents, {}, 4013),
    "4014 privileged": (_privileged, {"intents": discord.Intents.all()}, 4014),
    "4010 shard": (lambda fake: None, {"shard_ids": [2], "shard_count": 2}, 4010),
}


@pytest.mark.parametrize(("configure", "options", "code"), REFUSALS.values(), ids=REFUSALS.keys())
@pytest.mark.parametrize("sharded", [False, True], ids=["Client", "AutoShardedClient"])
async def test_a_refused_identify_stops_the_client(
    fake_discord: FakeDiscord,
    configure: Callable[[FakeDiscord], None],
    options: dict[str, Any],
    code: int,
    sharded: bool,
) -> None:
    configure(fake_discord)
    intents = options.get("intents", discord.Intents.default())
    if sharded:
        shards = {k: v for k, v in options.items() if k != "intents"}
        client: discord.Client = discord.AutoShardedClient(intents=intents, **shards)
    elif "shard_ids" in options:
        client = discord.Client(intents=intents, shard_id=2, shard_count=2)
    else:
        client = discord.Client(intents=intents)
    error = await _refused(fake_discord, client)
    if code == 4014:
        assert isinstance(error, discord.PrivilegedIntentsRequired)
    else:
        assert isinstance(error, discord.ConnectionClosed) and error.code == code


async def test_members_see_a_command_synced_globally_and_to_their_guild_twice(
    fake_discord: FakeDiscord,
) -> None:
    fake = fake_discord
    home, elsewhere = fake.add_guild("home"), fake.add_guild("elsewhere")
    alice = home.add_member("alice")
    mod = home.add_member("mod", roles=[home.add_role("Mods", 1 << 5)])
    client = discord.Client(intents=discord.Intents.default())
    tree = app_commands.CommandTree(client)

    @tree.command(description="Generate")
    async def imagine(interaction: discord.Interaction) -> None: ...

    @tree.command(description="Moderators only")
    @app_commands.default_permissions(manage_guild=True)
    async def credit(interaction: discord.Interaction) -> None: ...

    await client.login(fake.bot_token)
    try:
        tree.copy_global_to(guild=home)
        await tree.sync()
        await tree.sync(guild=home)
        assert fake.listed_commands(home) == ["imagine", "credit", "imagine", "credit"]
        assert fake.listed_commands(home, alice) == ["imagine", "imagine"]
        assert fake.listed_commands(elsewhere) == ["imagine", "credit"]
        tree.clear_commands(guild=home)
        await tree.sync(guild=home)  # the guild's list emptied; the global one untouched
        assert fake.listed_commands(home) == ["imagine", "credit"]
        assert fake.listed_commands(home, alice) == ["imagine"]
        assert fake.listed_commands(home, mod) == ["imagine", "credit"]
        assert fake.listed_commands(home, home.owner) == ["imagine", "credit"]
    finally:
        await client.close()
