"""The front door: load settings, build the bot and its services, run until told to stop.

    python bot.py

Reads `.env` and the environment (see `.env.example`). Exits 2 with one line per problem
when a setting is missing or malformed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

import aiohttp
import discord
from discord.ext import commands
from dotenv import find_dotenv, load_dotenv

from backends.build import Built, build_backend
from clock import Clock, system_clock
from cogs.utils.buttons import result_view
from cogs.utils.reporter import DiscordReporter
from cogs.utils.sources import DiscordSourceImages
from jobs.admission import Admission
from jobs.intake import Intake
from jobs.runner import JobRunner
from jobs.store import JobStore
from quota import ledger
from quota.moderation import Moderation
from services import Services
from settings import ConfigError, RedactingFormatter, Settings, load_settings
from sharing.gallery import Gallery
from storage import Database, open_database

log = logging.getLogger("bot")

EXTENSIONS = ("cogs.errors", "cogs.imagine", "cogs.limits", "cogs.gallery", "cogs.history")


class ImagineBot(commands.Bot):
    services: Services

    def __init__(self, settings: Settings, *, clock: Clock = system_clock, **options: Any) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            help_command=None,
            **options,
        )
        self.settings = settings
        self.clock = clock
        self.session: aiohttp.ClientSession | None = None
        self.backend: Built | None = None
        self.db: Database | None = None
        self._closing: asyncio.Future[None] | None = None

    async def setup_hook(self) -> None:
        settings = self.settings
        self.session = aiohttp.ClientSession()
        self.db = db = await open_database(settings.database_url)
        async with db.transaction() as conn:
            await ledger.ensure_account(conn, settings.account_credit, self.clock())
        self.backend = built = await build_backend(settings, self.session)
        if settings.sandbox:
            log.info(
                "sandbox mode: %s emulator at %s; no credit is spent",
                settings.backend,
                built.base_url,
            )
        store = JobStore(db, self.clock)
        intake = Intake(db, self.clock)
        moderation = Moderation(db, self.clock)
        reporter = DiscordReporter(
            self,
            result_view=lambda job: result_view(job, built.backend.capabilities),
            moderator_channels=moderation.modlog_channels,
            clock=self.clock,
        )
        runner = JobRunner(
            db,
            store,
            built.backend,
            reporter,
            self.clock,
            sources=DiscordSourceImages(self, store),
            intake=intake,
            max_in_flight=settings.max_jobs_in_flight,
        )
        admission = Admission(
            db,
            store,
            self.clock,
            max_queue_length=settings.max_queue_length,
            max_jobs_in_flight=settings.max_jobs_in_flight,
        )
        self.services = Services(
            settings=settings,
            clock=self.clock,
            db=db,
            backend=built.backend,
            jobs=store,
            admission=admission,
            intake=intake,
            runner=runner,
            moderation=moderation,
            gallery=Gallery(db, self.clock, moderation),
        )
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self._sync_commands()
        await runner.start()

    async def _sync_commands(self) -> None:
        if self.settings.dev_guild_id:
            guild = discord.Object(self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
        else:
            synced = await self.tree.sync()
        log.info("synced %d application commands", len(synced))

    async def on_ready(self) -> None:
        log.info("logged in as %s (%s) in %d guild(s)", self.user, self.user.id, len(self.guilds))  # type: ignore[union-attr]

    async def close(self) -> None:
        """Stop taking jobs, disconnect, then release what we own. discord.py calls this
        again on its way out of `connect`, so the second call only waits for the first."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close_once())
        await asyncio.shield(self._closing)

    async def _close_once(self) -> None:
        if hasattr(self, "services"):
            await self.services.runner.stop()
        await super().close()
        if self.db is not None:
            await self.db.close()
        if self.backend is not None:
            await self.backend.close()
        if self.session is not None:
            await self.session.close()


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", settings.secrets)
    )
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)


async def run(settings: Settings) -> int:
    bot = ImagineBot(settings)
    loop = asyncio.get_running_loop()
    closing: list[asyncio.Task[None]] = []

    def stop() -> None:
        if closing:  # a second signal: stop now; every job is in the database already
            os._exit(1)
        log.info("shutting down; jobs in progress resume at next start")
        closing.append(loop.create_task(bot.close()))

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        async with bot:
            await bot.start(settings.discord_token)
    except discord.LoginFailure:
        print(
            "error: DISCORD_TOKEN was refused by Discord: reset it in the Developer Portal",
            file=sys.stderr,
        )
        return 2
    return 0


def main() -> int:
    load_dotenv(find_dotenv(usecwd=True))
    try:
        settings = load_settings(os.environ)
    except ConfigError as error:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    configure_logging(settings)
    return asyncio.run(run(settings))


if __name__ == "__main__":
    sys.exit(main())
