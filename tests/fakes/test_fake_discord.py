"""The fake Discord holds the real discord.py to Discord's contract."""

from __future__ import annotations

import asyncio
import contextlib

import discord
import pytest
from discord import app_commands

from tests.fakes.discord import FakeDiscord


class TinyBot(discord.Client):
    """A bot with two commands: /say (replies with text) and /twice (acknowledges twice)."""

    def __init__(self, guild_id: int) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.errors: list[discord.HTTPException] = []
        self.failed = asyncio.Event()
        guild = discord.Object(guild_id)

        @self.tree.command(guild=guild)
        async def say(interaction: discord.Interaction, text: str) -> None:
            try:
                await interaction.response.send_message(text)
            except discord.HTTPException as error:
                self.errors.append(error)
                self.failed.set()

        @self.tree.command(guild=guild)
        async def twice(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            route = discord.http.Route(
                "POST",
                "/interactions/{id}/{token}/callback",
                id=interaction.id,
                token=interaction.token,
            )
            try:  # the library refuses a second response itself, so go to the wire
                await self.http.request(route, json={"type": 5})
            except discord.HTTPException as error:
                self.errors.append(error)

        self.guild_id = guild_id

    async def setup_hook(self) -> None:
        await self.tree.sync(guild=discord.Object(self.guild_id))


@pytest.fixture
async def running(fake_discord: FakeDiscord):
    guild = fake_discord.add_guild()
    channel = fake_discord.add_channel(guild, "general")
    member = guild.add_member("alice")
    bot = TinyBot(guild.id)
    await bot.login(fake_discord.bot_token)
    task = asyncio.create_task(bot.connect(reconnect=False))
    await fake_discord.wait_until_ready()
    await bot.wait_until_ready()
    yield fake_discord, bot, guild, channel, member
    await bot.close()
    with contextlib.suppress(Exception):
        await task


async def test_login_ready_and_command_sync_are_recorded(running):
    fake, bot, guild, *_ = running
    assert bot.get_guild(guild.id) is not None
    assert {c["name"] for c in fake.guild_commands[guild.id]} == {"say", "twice"}


async def test_a_reply_is_recorded_as_a_person_would_see_it(running):
    fake, _, guild, channel, member = running
    record = await fake.slash(guild, channel, member, "say", {"text": "hello"})
    await fake.wait_for(lambda: record.acknowledged)
    assert record.response_type == 4 and record.latest.content == "hello"
    assert fake.channel_messages(channel)[0].content == "hello"


async def test_content_over_2000_characters_is_refused_like_discord_does(running):
    fake, bot, guild, channel, member = running
    record = await fake.slash(guild, channel, member, "say", {"text": "x" * 2001})
    await asyncio.wait_for(bot.failed.wait(), 5)
    assert fake.rejections and not record.acknowledged
    assert [e.code for e in bot.errors] == [50035]


async def test_a_second_first_response_gets_40060(running):
    fake, _bot, guild, channel, member = running
    record = await fake.slash(guild, channel, member, "twice")
    await fake.wait_for(lambda: 40060 in record.errors)
    assert record.response_type == 5


async def test_a_first_response_after_the_deadline_gets_10062(running):
    fake, _bot, guild, channel, member = running
    fake.ack_deadline = 0.0
    record = await fake.slash(guild, channel, member, "say", {"text": "late"})
    await fake.wait_for(lambda: 10062 in record.errors)
    assert not record.acknowledged


async def test_a_wrong_token_cannot_log_in(fake_discord):
    bot = TinyBot(1)
    with pytest.raises(discord.LoginFailure):
        await bot.login("not.the.token")
    await bot.close()
