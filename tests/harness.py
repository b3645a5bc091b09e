"""The whole bot, for end-to-end tests: real discord.py against the fake Discord, the real
client against the Omniinfer emulator, a real database."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import discord

from bot import ImagineBot
from jobs.backend import Bounds, Capabilities
from omni.emulator import Emulator
from settings import Settings
from storage import open_database
from tests.fakes.discord import Channel, FakeDiscord, Guild, InteractionRecord, Member, Role

logging.getLogger("discord").setLevel(logging.WARNING)


def plain_capabilities(**options: Any) -> Capabilities:
    """A backend as tests without a real one describe it: one sampler, 1–50 steps, CFG scale
    1–30, 1024² only, up to 4 images; `options` set the rest (upscale, img2img, subseed)."""
    return Capabilities(
        name="test",
        samplers=("Euler a",),
        default_sampler="Euler a",
        steps=Bounds(1, 50),
        cfg_scale=Bounds(1, 30),
        sizes=((1024, 1024),),
        max_images=4,
        **options,
    )


class FakeClock:
    """Wall-clock time that tests can move forward (cooldowns, rolling windows, tokens)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


async def loosen_limits(database_url: str, guild_ids: Iterable[int]) -> None:
    """Members of these servers may run many jobs back to back, for tests about crashes and
    processes rather than limits. Applies the migrations first if no bot has yet."""
    db = await open_database(database_url)
    for guild_id in guild_ids:
        for field_name, value in [
            ("cooldown_seconds", 0),
            ("concurrent_jobs", 20),
            ("images_per_day", 10000),
            ("images_per_hour", 10000),
        ]:
            await db.execute(
                "INSERT INTO limit_rules VALUES ($1, 'guild', $2, $3, $4)",
                guild_id,
                guild_id,
                field_name,
                value,
            )
    await db.close()


@dataclass
class World:
    """A server with channels, members and a moderator role."""

    guild: Guild
    general: Channel
    nsfw: Channel
    gallery: Channel
    modlog: Channel
    mods: Role
    alice: Member
    bob: Member
    mod: Member


def build_world(fake: FakeDiscord, *, upload_limit: int | None = None) -> World:
    guild = fake.add_guild(upload_limit=upload_limit)
    mods = guild.add_role(
        "Mods", discord.Permissions(manage_guild=True, manage_messages=True).value
    )
    return World(
        guild=guild,
        general=fake.add_channel(guild, "general"),
        nsfw=fake.add_channel(guild, "after-dark", nsfw=True),
        gallery=fake.add_channel(guild, "gallery"),
        modlog=fake.add_channel(guild, "bot-log"),
        mods=mods,
        alice=guild.add_member("alice"),
        bob=guild.add_member("bob"),
        mod=guild.add_member("mod", roles=[mods]),
    )


@dataclass
class Harness:
    fake: FakeDiscord
    emulator: Emulator
    world: World
    database_url: str
    clock: FakeClock = field(default_factory=FakeClock)
    bot: ImagineBot | None = None
    _task: asyncio.Task[None] | None = None
    settings_overrides: dict[str, Any] = field(default_factory=dict)

    def settings(self) -> Settings:
        base = Settings(
            discord_token=self.fake.bot_token,
            omni_api_key=self.emulator.api_key,
            omni_base_url=self.emulator.base_url,
            database_url=self.database_url,
            dev_guild_id=self.world.guild.id,
            account_credit=1000,
            omni_timeout=2.0,
        )
        return replace(base, **self.settings_overrides)

    async def start_bot(self) -> ImagineBot:
        """Log in, sync commands and resume jobs, as `python bot.py` does."""
        bot = ImagineBot(self.settings(), clock=self.clock, guild_ready_timeout=0.05)
        self._task = await self.fake.connect(bot)
        self.bot = bot
        return bot

    async def stop_bot(self) -> None:
        if self.bot is not None and self._task is not None:
            await self.fake.disconnect(self.bot, self._task)
        self.bot, self._task = None, None

    async def restart_bot(self) -> ImagineBot:
        await self.stop_bot()
        return await self.start_bot()

    # -- what members do -------------------------------------------------------------------

    async def imagine(
        self, member: Member | None = None, channel: Channel | None = None, **options: Any
    ) -> InteractionRecord:
        options.setdefault("prompt", "a lighthouse at dusk")
        return await self.fake.slash(
            self.world.guild,
            channel or self.world.general,
            member or self.world.alice,
            "imagine",
            options,
        )

    async def one_running_one_waiting(
        self, task_seconds: float, **settings: Any
    ) -> tuple[InteractionRecord, InteractionRecord]:
        """Restart with one job at a time (and `settings`); alice's job runs at Omniinfer
        while bob's waits first in line."""
        self.settings_overrides = {"max_jobs_in_flight": 1, **settings}
        await self.restart_bot()
        self.emulator.duration = task_seconds
        running = await self.imagine()
        await self.fake.wait_for(lambda: self.emulator.stats.tasks_created == 1)
        waiting = await self.imagine(member=self.world.bob)
        await self.fake.wait_for(
            lambda: waiting.latest is not None and "position 1" in waiting.latest.text
        )
        return running, waiting

    async def command(self, member: Member, name: str, **options: Any) -> InteractionRecord:
        return await self.fake.slash(self.world.guild, self.world.general, member, name, options)

    async def click(
        self, member: Member, record: InteractionRecord, label: str, nth: int = 0
    ) -> InteractionRecord:
        """Click the `nth` button of kind `label` (reroll, share, upscale...) on the reply."""
        message = record.original
        assert message is not None
        custom_id = [c for c in message.custom_ids() if c.split(":")[1] == label][nth]
        channel = self.fake.channels[message.channel_id]
        return await self.fake.click(self.world.guild, channel, member, message, custom_id)

    async def finished(self, record: InteractionRecord, timeout: float = 15.0) -> InteractionRecord:
        """Wait until the reply shows its ending: images, a failure, or a refusal."""
        await self.fake.wait_for(lambda: _ended(record), timeout)
        return record

    async def answered(self, record: InteractionRecord, timeout: float = 10.0) -> InteractionRecord:
        """Wait for a first response plus anything it leads to (for quick commands)."""
        await self.fake.wait_for(
            lambda: (
                (record.acknowledged and (record.latest is None or not record.latest.loading))
                or bool(record.followups)
            ),
            timeout,
        )
        return record


def _ended(record: InteractionRecord) -> bool:
    if record.followups:
        return True
    latest = record.latest
    if latest is None or latest.loading:
        return False
    text = latest.text
    return bool(latest.attachments) or "❌" in text or "⛔" in text or "Images ready" in text


def image_bytes(record: InteractionRecord) -> list[bytes]:
    assert record.latest is not None
    return [data for _, data in record.latest.attachments]


ROOT = Path(__file__).resolve().parents[1]


def one_image_per_message(prompt: str, seed: int, images: int, size: int = 1024) -> int:
    """An upload limit that holds any one of the emulator's images for (prompt, seed...) but
    never two, so a result is split into exactly one message per image, whatever the seed
    makes the PNGs weigh."""
    from omni.emulator_images import render

    sizes = [len(render(prompt, seed + i, size, size)) for i in range(images)]
    limit = max(sizes)
    assert 2 * min(sizes) > limit, f"these images cannot be split one per message: {sizes}"
    return limit
