"""The fake Discord against the real discord.py: a tiny bot logs in, syncs, answers slash
commands and buttons, and meets each rule of Discord's contract the fake enforces."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.fakes.discord import BucketSize, FakeDiscord, Guild, RateLimiter

logging.getLogger("discord").setLevel(logging.CRITICAL)  # 429 retries and refusals are expected

PAYLOAD = bytes(range(256)) * 40  # 10 KiB to upload


class Counter(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"count:(?P<n>\d+)"):
    """A button whose state lives in its custom id, so it works across restarts."""

    def __init__(self, n: int) -> None:
        super().__init__(discord.ui.Button(label=f"Clicked {n}", custom_id=f"count:{n}"))
        self.n = n

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> Counter:
        return cls(int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        view = discord.ui.View()
        view.add_item(Counter(self.n + 1))
        await interaction.response.edit_message(content=f"clicked {self.n + 1}", view=view)


class TinyBot(commands.Bot):
    """/ping, /slow, /hold, /twice, /think and /limits set, synced to one guild."""

    def __init__(self, guild_id: int) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            guild_ready_timeout=0.05,
        )
        self.guild = discord.Object(guild_id)
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()
        self.release = asyncio.Event()  # /hold edits its reply once a test sets this

    async def setup_hook(self) -> None:
        self.add_dynamic_items(Counter)
        for command in _commands(self):
            self.tree.add_command(command, guild=self.guild)
        await self.tree.sync(guild=self.guild)

    @contextlib.asynccontextmanager
    async def reporting(self) -> AsyncIterator[None]:
        """Hand Discord's refusals to the test instead of the log."""
        try:
            yield
        except (discord.HTTPException, discord.InteractionResponded) as error:
            self.errors.put_nowait(error)

    async def next_error(self) -> Exception:
        return await asyncio.wait_for(self.errors.get(), 5)


def _commands(bot: TinyBot) -> list[app_commands.Command[Any, ..., Any] | app_commands.Group]:
    @app_commands.command(description="Say something, with a counter button")
    async def ping(interaction: discord.Interaction, text: str, private: bool = False) -> None:
        view = discord.ui.View()
        view.add_item(Counter(0))
        async with bot.reporting():
            await interaction.response.send_message(text, view=view, ephemeral=private)

    @app_commands.command(description="Defer, show progress, then a file")
    async def slow(interaction: discord.Interaction, size: int = len(PAYLOAD)) -> None:
        async with bot.reporting():
            await interaction.response.defer(thinking=True)
            await interaction.edit_original_response(content="working…")
            data = (PAYLOAD * (size // len(PAYLOAD) + 1))[:size]
            file = discord.File(io.BytesIO(data), "result.bin")
            await interaction.edit_original_response(content="done", attachments=[file])

    @app_commands.command(description="Defer, then edit once released (by a test)")
    async def hold(interaction: discord.Interaction, edits: int = 1) -> None:
        await interaction.response.defer(thinking=True)
        await bot.release.wait()
        async with bot.reporting():
            for n in range(edits):
                await interaction.edit_original_response(content=f"edit {n + 1}")

    @app_commands.command(description="Acknowledge twice")
    async def twice(interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        async with bot.reporting():
            await interaction.response.defer()  # the library refuses by itself
        route = discord.http.Route(
            "POST",
            "/interactions/{interaction_id}/{interaction_token}/callback",
            interaction_id=interaction.id,
            interaction_token=interaction.token,
        )
        async with bot.reporting():
            await bot.http.request(route, json={"type": 5})  # so ask the wire

    @app_commands.command(description="Defer publicly, then follow up ephemerally")
    async def think(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.followup.send("first", ephemeral=True)
        await interaction.followup.send("second", ephemeral=True)

    limits = app_commands.Group(
        name="limits",
        description="Per-member limits",
        default_permissions=discord.Permissions(manage_guild=True),
    )

    @limits.command(name="set", description="Set a member's daily images")
    async def limits_set(
        interaction: discord.Interaction, member: discord.Member, images: int
    ) -> None:
        text = f"{member.display_name}: {images} a day"
        await interaction.response.send_message(text, ephemeral=True)

    return [ping, slow, hold, twice, think, limits]


class World:
    """A guild with a channel and two members, and the bot connected to the fake."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.guild: Guild = fake.add_guild("Test")
        self.channel = self.guild.add_channel("general")
        mods = self.guild.add_role("Mods", discord.Permissions(manage_guild=True).value)
        self.alice = self.guild.add_member("alice")
        self.mod = self.guild.add_member("mod", roles=[mods])
        self.bot: TinyBot | None = None
        self._task: asyncio.Task[None] | None = None

    async def start_bot(self) -> TinyBot:
        bot = TinyBot(self.guild.id)
        self._task = await self.fake.connect(bot, timeout=5)
        self.bot = bot
        return bot

    async def stop_bot(self) -> None:
        if self.bot is not None and self._task is not None:
            await self.fake.disconnect(self.bot, self._task)

    async def slash(self, name: str, **options: Any) -> Any:
        return await self.fake.slash(self.guild, self.channel, self.alice, name, options)


@pytest.fixture
async def world(fake_discord: FakeDiscord) -> AsyncIterator[World]:
    w = World(fake_discord)
    yield w
    await w.stop_bot()


@pytest.fixture
async def bot(world: World) -> TinyBot:
    return await world.start_bot()


async def test_the_bot_logs_in_and_sees_the_guild(world: World, bot: TinyBot) -> None:
    guild = bot.get_guild(world.guild.id)
    assert guild is not None and guild.get_channel(world.channel.id) is not None
    assert bot.user is not None and bot.user.id == world.fake.bot_user_id
    assert guild.me.guild_permissions.administrator  # its managed role
    routes = [r.route for r in world.fake.requests]
    assert routes[:2] == ["GET /users/@me", "GET /oauth2/applications/@me"]
    assert world.fake.unhandled == []


async def test_command_sync_is_stored_as_discord_stores_it(world: World, bot: TinyBot) -> None:
    synced = {c["name"]: c for c in world.fake.guild_commands[world.guild.id]}
    assert set(synced) == {"ping", "slow", "hold", "twice", "think", "limits"}
    assert all(c["id"].isdigit() and c["guild_id"] == str(world.guild.id) for c in synced.values())
    assert [o["type"] for o in synced["ping"]["options"]] == [3, 5]
    assert synced["limits"]["default_member_permissions"] == str(1 << 5)
    ids = {name: c["id"] for name, c in synced.items()}
    await bot.tree.sync(guild=bot.guild)  # a re-sync keeps ids, as Discord does
    assert {c["name"]: c["id"] for c in world.fake.guild_commands[world.guild.id]} == ids


async def test_a_slash_reply_is_recorded_as_members_see_it(world: World, bot: TinyBot) -> None:
    ix = await world.slash("ping", text="hello")
    await ix.wait_for(lambda ix: ix.acknowledged)
    assert ix.response_type == 4 and ix.original is not None
    assert ix.original.content == "hello" and ix.original.custom_ids() == ["count:0"]
    assert [c.kind for c in ix.responses] == ["callback"]
    assert world.fake.channel_messages(world.channel) == [ix.original]
    private = await world.slash("ping", text="psst", private=True)
    await private.wait_for(lambda ix: ix.acknowledged)
    assert private.latest is not None and private.latest.ephemeral
    assert world.fake.channel_messages(world.channel) == [ix.original]


async def test_subcommand_options_arrive_nested_and_resolved(world: World, bot: TinyBot) -> None:
    ix = await world.fake.slash(
        world.guild, world.channel, world.mod, "limits set", {"member": world.alice, "images": 3}
    )
    await ix.wait_for(lambda ix: ix.acknowledged)
    assert ix.latest is not None and ix.latest.text == "alice: 3 a day"
    [group] = ix.payload["data"]["options"]
    assert group["name"] == "set" and group["options"][1] == {
        "type": 4,
        "name": "images",
        "value": 3,
    }
    assert int(ix.payload["member"]["permissions"]) & (1 << 5)  # Manage Server, from the role


@pytest.mark.parametrize(
    ("name", "options", "error"),
    [
        ("nope", {}, LookupError),
        ("ping", {"text": "x", "loud": True}, LookupError),
        ("limits", {}, LookupError),
        ("limits set", {"images": 3}, ValueError),
        ("slow", {"size": "big"}, TypeError),
    ],
)
async def test_what_discords_client_would_not_send_is_refused_to_the_test(
    world: World, bot: TinyBot, name: str, options: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await world.slash(name, **options)


async def test_defer_then_edits_with_a_file_are_recorded_with_bytes(
    world: World, bot: TinyBot
) -> None:
    ix = await world.slash("slow")
    await ix.wait_for(lambda ix: ix.latest is not None and ix.latest.content == "done")
    assert ix.response_type == 5
    assert [s.loading for s in ix.history] == [True, False, False]
    assert [s.content for s in ix.history] == ["", "working…", "done"]
    assert ix.latest.attachments == [("result.bin", PAYLOAD)]
    [upload] = ix.responses[-1].files
    assert upload.data == PAYLOAD
    assert ix.original is not None
    url = ix.original.attachments[0].url
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert await response.read() == PAYLOAD


async def test_a_button_click_round_trips_through_a_dynamic_item(
    world: World, bot: TinyBot
) -> None:
    ix = await world.slash("ping", text="count me")
    await ix.wait_for(lambda ix: ix.acknowledged)
    message = ix.original
    assert message is not None
    click = await world.fake.click(world.guild, world.channel, world.mod, message, "count:0")
    await click.wait_for(lambda ix: ix.acknowledged)
    assert click.response_type == 7 and click.original is message
    assert message.content == "clicked 1" and message.custom_ids() == ["count:1"]
    again = await world.fake.click(world.guild, world.channel, world.mod, message, "count:1")
    await again.wait_for(lambda ix: ix.acknowledged)
    assert message.content == "clicked 2"
    with pytest.raises(LookupError):
        await world.fake.click(world.guild, world.channel, world.mod, message, "count:0")


async def test_a_first_response_after_the_deadline_gets_10062(world: World, bot: TinyBot) -> None:
    world.fake.ack_deadline = 0.0
    ix = await world.slash("ping", text="late")
    error = await bot.next_error()
    assert isinstance(error, discord.NotFound) and error.code == 10062
    assert not ix.acknowledged and ix.errors == [10062]


async def test_a_second_first_response_gets_40060(world: World, bot: TinyBot) -> None:
    ix = await world.slash("twice")
    assert isinstance(await bot.next_error(), discord.InteractionResponded)
    error = await bot.next_error()
    assert isinstance(error, discord.HTTPException) and error.code == 40060
    assert ix.response_type == 5 and ix.errors == [40060]


async def test_an_expired_token_gets_50027(world: World, bot: TinyBot) -> None:
    ix = await world.slash("hold")
    await ix.wait_for(lambda ix: ix.acknowledged)
    world.fake.advance(15 * 60 + 1)
    bot.release.set()
    error = await bot.next_error()
    assert isinstance(error, discord.HTTPException) and error.status == 401
    assert error.code == 50027 and ix.errors == [50027]


async def test_a_forced_429_is_waited_out_and_counted(world: World, bot: TinyBot) -> None:
    world.fake.force_rate_limit(r"/messages/@original$", retry_after=0.1)
    ix = await world.slash("slow")
    await ix.wait_for(lambda ix: ix.latest is not None and ix.latest.content == "done")
    assert world.fake.rate_limited_count == 1
    assert [c.status for c in ix.calls if c.kind == "edit"] == [429, 200, 200]


async def test_rate_limit_headers_pace_the_library_without_a_429(
    world: World, fake_discord: FakeDiscord
) -> None:
    fake_discord.rate_limits = RateLimiter(default=BucketSize(2, 0.25))
    bot = await world.start_bot()
    ix = await world.slash("hold", edits=6)
    await ix.wait_for(lambda ix: ix.acknowledged)
    bot.release.set()
    await ix.wait_for(lambda ix: len(ix.history) == 7)
    assert fake_discord.rate_limited_count == 0
    edits = [c.at for c in ix.calls if c.kind == "edit"]
    assert edits[-1] - edits[0] >= 0.45  # three windows of two edits


async def test_a_client_ignoring_the_headers_gets_discords_429(fake_discord: FakeDiscord) -> None:
    headers = {"Authorization": f"Bot {fake_discord.bot_token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for _ in range(5):
            async with session.get(f"{fake_discord.rest_base}/users/@me") as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == "application/json"
                assert "X-RateLimit-Bucket" in response.headers
        async with session.get(f"{fake_discord.rest_base}/users/@me") as response:
            assert response.status == 429 and response.headers["Via"] == "1.1 google"
            body = await response.json()
    assert body["retry_after"] > 0 and body["global"] is False
    assert fake_discord.rate_limited_count == 1


async def test_content_over_2000_characters_gets_50035(world: World, bot: TinyBot) -> None:
    ix = await world.slash("ping", text="x" * 2001)
    error = await bot.next_error()
    assert isinstance(error, discord.HTTPException) and error.code == 50035
    assert "data.content" in str(error)
    assert not ix.acknowledged and world.fake.rejections[0].code == 50035


async def test_an_upload_over_the_guilds_limit_gets_40005(world: World, bot: TinyBot) -> None:
    world.guild.upload_limit = 4096
    ix = await world.slash("slow")
    error = await bot.next_error()
    assert isinstance(error, discord.HTTPException) and error.status == 413
    assert error.code == 40005 and ix.errors == [40005]
    assert ix.latest is not None and ix.latest.content == "working…"


async def test_the_first_followup_replaces_a_deferred_reply(world: World, bot: TinyBot) -> None:
    ix = await world.slash("think")
    await ix.wait_for(lambda ix: len(ix.followups) == 1)
    assert ix.latest is not None and ix.latest.content == "first"
    assert not ix.latest.ephemeral  # chosen when deferring, not by the followup
    assert ix.followups[0].content == "second" and ix.followups[0].ephemeral


async def test_channel_messages_post_edit_react_and_delete(world: World, bot: TinyBot) -> None:
    channel = bot.get_channel(world.channel.id)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send("hello", file=discord.File(io.BytesIO(PAYLOAD), "a.bin"))
    [posted] = world.fake.channel_messages(world.channel)
    assert posted.attachments[0].data == PAYLOAD and posted.webhook_id is None
    await sent.edit(content="edited")
    await sent.add_reaction("👍")
    fetched = await channel.fetch_message(sent.id)
    assert fetched.content == "edited" and fetched.edited_at is not None
    assert fetched.reactions[0].me and fetched.attachments[0].filename == "a.bin"
    assert [m.id async for m in channel.history(limit=5)] == [sent.id]
    await sent.delete()
    assert world.fake.channel_messages(world.channel) == []


async def test_two_bots_each_get_their_own_interactions(world: World, bot: TinyBot) -> None:
    fake = world.fake
    other_app = fake.add_application("Other")
    other = TinyBot(world.guild.id)
    await other.login(other_app.token)
    task = asyncio.create_task(other.connect(reconnect=False))
    try:
        await fake.wait_until_ready(app=other_app)
        theirs = await fake.slash(
            world.guild, world.channel, world.alice, "ping", {"text": "b"}, app=other_app
        )
        mine = await world.slash("ping", text="a")
        await theirs.wait_for(lambda ix: ix.acknowledged)
        await mine.wait_for(lambda ix: ix.acknowledged)
        assert theirs.original is not None and theirs.original.author is other_app.user
        assert mine.original is not None and mine.original.author is fake.app.user
    finally:
        await other.close()
        with contextlib.suppress(Exception):
            await task


async def test_injected_server_errors_and_unknown_routes(world: World, bot: TinyBot) -> None:
    world.fake.fail_next("GET", r"/channels/\d+$", status=503)
    with pytest.raises(discord.DiscordServerError):
        await bot.fetch_channel(world.channel.id)
    assert (await bot.fetch_channel(world.channel.id)).id == world.channel.id
    with pytest.raises(discord.NotFound):
        await bot.fetch_stage_instance(world.channel.id)
    assert world.fake.unhandled == [f"GET /api/v10/stage-instances/{world.channel.id}"]


async def test_a_wrong_token_cannot_log_in(fake_discord: FakeDiscord) -> None:
    bot = TinyBot(1)
    with pytest.raises(discord.LoginFailure):
        await bot.login("not.the.token")
    await bot.close()


async def test_a_new_bot_logs_in_after_the_old_one_closed(world: World, bot: TinyBot) -> None:
    await world.stop_bot()
    new_bot = await world.start_bot()
    assert new_bot is not bot
    ix = await world.slash("ping", text="still here")
    await ix.wait_for(lambda ix: ix.acknowledged)
    assert ix.latest is not None and ix.latest.content == "still here"


async def test_a_reconnect_request_is_resumed(world: World, bot: TinyBot) -> None:
    session = bot.ws.session_id
    await world.fake.reconnect()
    await world.fake.wait_for(lambda: world.fake.gateway.resumes == 1)
    assert bot.ws.session_id == session
    ix = await world.slash("ping", text="resumed")
    await ix.wait_for(lambda ix: ix.acknowledged)
