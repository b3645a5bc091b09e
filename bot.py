"""The front door: load settings, build the bot and its services, run until told to stop.

    python bot.py

Reads `.env` and the environment (see `.env.example`). Exits 2 with one line per problem
when a setting is missing or malformed, or when Discord refuses the bot for good (a reset
token, too few shards, intents not allowed).

Several processes may share one PostgreSQL database, each running some of the shards
(`SHARD_COUNT`, `SHARD_IDS`) under its own `INSTANCE_ID`; see jobs.runner for how their jobs
are kept apart and taken over.
"""

from __future__ import annotations

import asyncio
import gc
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
from cogs.utils.tree import CommandTree
from jobs.admission import Admission
from jobs.intake import Intake
from jobs.leases import Lease, default_identity
from jobs.runner import JobRunner
from jobs.store import JobStore
from logs import configure_logging
from quota import ledger
from quota.moderation import Moderation
from services import Services
from settings import ConfigError, Settings, load_settings
from sharing.gallery import Gallery
from storage import Database, StorageError, app_state, open_database

log = logging.getLogger("bot")

EXTENSIONS = (
    "cogs.errors",
    "cogs.imagine",
    "cogs.limits",
    "cogs.gallery",
    "cogs.history",
    "cogs.privacy",
    "cogs.defaults",
)


# Gateway close codes after which reconnecting cannot help: the operator must act.
FATAL_CLOSES = {
    4004: "DISCORD_TOKEN was refused by Discord: reset it in the Developer Portal",
    4010: "SHARD_IDS names a shard outside SHARD_COUNT",
    4011: "Discord requires more shards: raise SHARD_COUNT (or unset it to use Discord's "
    "recommendation)",
    4012: "this discord.py speaks a gateway version Discord no longer accepts: upgrade it",
    4013: "the bot asked for intents Discord does not know: upgrade discord.py",
    4014: "the bot asked for privileged intents not enabled in the Developer Portal",
}


def identity(settings: Settings) -> str:
    """This process's name among those sharing the database (stable across restarts)."""
    return settings.instance_id or default_identity(settings.shard_ids)


def shard_options(settings: Settings) -> dict[str, Any]:
    """AutoShardedBot's options: the shards asked for, else Discord's recommended count."""
    options: dict[str, Any] = {}
    if settings.shard_count is not None:
        options["shard_count"] = settings.shard_count
    if settings.shard_ids is not None:
        options["shard_ids"] = list(settings.shard_ids)
    return options


class ImagineBot(commands.AutoShardedBot):
    services: Services

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = system_clock,
        db: Database | None = None,
        **options: Any,
    ) -> None:
        # The bot never joins a voice channel: discord.py's warnings that voice support is
        # missing (PyNaCl, davey) are only noise in the operator's log.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            help_command=None,
            tree_cls=CommandTree,
            **{**shard_options(settings), **options},
        )
        self.identity = identity(settings)
        self.settings = settings
        self.clock = clock
        self.session: aiohttp.ClientSession | None = None
        self.backend: Built | None = None
        self.db: Database | None = db
        self._closing: asyncio.Future[None] | None = None

    async def setup_hook(self) -> None:
        settings = self.settings
        self.session = aiohttp.ClientSession()
        if self.db is None:
            self.db = await open_database(settings.database_url)
        db = self.db
        ledger.use_sandbox_ledger(settings.sandbox)
        async with db.transaction() as conn:
            await ledger.ensure_account(conn, settings.account_credit, self.clock())
        await self._note_credit_setting(db)
        self.backend = built = await build_backend(settings, self.session)
        if settings.sandbox:
            log.info(
                "sandbox mode: %s emulator at %s; no credit is spent",
                settings.backend,
                built.base_url,
            )
        store = JobStore(db, self.clock, self.identity)
        intake = Intake(db, self.clock, self.identity)
        moderation = Moderation(db, self.clock)
        reporter = DiscordReporter(
            self,
            result_view=lambda job: result_view(job, built.backend.capabilities),
            moderator_channels=moderation.modlog_channels,
            clock=self.clock,
        )
        admission = Admission(
            db,
            store,
            self.clock,
            max_queue_length=settings.max_queue_length,
            max_jobs_in_flight=settings.max_jobs_in_flight,
        )
        runner = JobRunner(
            db,
            store,
            admission,
            built.backend,
            reporter,
            self.clock,
            sources=DiscordSourceImages(self, store),
            intake=intake,
            max_in_flight=settings.max_jobs_in_flight,
            lease=Lease(
                db,
                self.clock,
                self.identity,
                seconds=settings.lease_seconds,
                renew_every=settings.lease_renew_seconds,
            ),
        )
        self.services = Services(
            settings=settings,
            clock=self.clock,
            db=db,
            backend=built.backend,
            jobs=store,
            intake=intake,
            runner=runner,
            moderation=moderation,
            gallery=Gallery(db, self.clock, moderation),
        )
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self._sync_commands()
        await runner.start()
        # What start-up built (modules, cogs, commands, the parts above) lives as long as
        # the process: frozen, full collections stop scanning it again and again (one took
        # 26 ms, a stall of every job in flight, in bench/imagine_load).
        gc.collect()
        gc.freeze()

    async def _note_credit_setting(self, db: Database) -> None:
        """ACCOUNT_CREDIT seeds the ledger once; a later change to it is said once, not
        silently ignored."""
        now = (
            "unlimited"
            if self.settings.account_credit is None
            else str(self.settings.account_credit)
        )
        before = await app_state.get(db, app_state.ACCOUNT_CREDIT_KEY)
        if before is not None and before != now:
            log.warning(
                "ACCOUNT_CREDIT changed from %s to %s, but the ledger keeps its own figure "
                "after the first start: use /credit set to change the account's credit",
                before,
                now,
            )
        await app_state.put(db, app_state.ACCOUNT_CREDIT_KEY, now)

    async def _sync_commands(self) -> None:
        """Sync to the dev server (instant) or globally, and remove the other set, so no
        command is ever listed twice in a server."""
        assert self.db is not None
        previous = await app_state.get(self.db, app_state.DEV_GUILD_KEY)
        dev_guild = self.settings.dev_guild_id
        if dev_guild:
            guild = discord.Object(dev_guild)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            self.tree.clear_commands(guild=None)
            await self.tree.sync()  # no global commands while a dev server has them
        else:
            synced = await self.tree.sync()
        if previous and previous != str(dev_guild or "") and self.application_id is not None:
            await self.http.bulk_upsert_guild_commands(self.application_id, int(previous), [])
        await app_state.put(self.db, app_state.DEV_GUILD_KEY, str(dev_guild or ""))
        log.info("synced %d application commands", len(synced))

    async def on_ready(self) -> None:
        log.info(
            "logged in as %s (%s) in %d guild(s); shards %s of %s; instance %s",
            self.user,
            self.user.id,  # type: ignore[union-attr]
            len(self.guilds),
            sorted(self.shards),
            self.shard_count,
            self.identity,
        )

    async def close(self) -> None:
        """Stop taking jobs, disconnect, then release what we own. discord.py calls this
        again on its way out of `connect`, so the second call only waits for the first."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close_once())
        await asyncio.shield(self._closing)

    async def _close_once(self) -> None:
        if hasattr(self, "services"):
            try:
                await self.services.runner.stop()
            except Exception:  # e.g. the database is gone: Discord must still be left
                log.exception("the job runner did not stop cleanly")
        await super().close()
        if self.db is not None:
            await self.db.close()
        if self.backend is not None:
            await self.backend.close()
        if self.session is not None:
            await self.session.close()


async def run(settings: Settings) -> int:
    # The database first: a folder the bot cannot write, a corrupt file or a PostgreSQL that
    # refuses us is one clear line, before anything talks to Discord.
    try:
        db = await open_database(settings.database_url)
    except StorageError as error:
        print(f"error: DATABASE_URL cannot be used: {error}", file=sys.stderr)
        return 2
    bot = ImagineBot(settings, db=db)
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
        print(f"error: {FATAL_CLOSES[4004]}", file=sys.stderr)
        return 2
    except discord.PrivilegedIntentsRequired:
        print(f"error: {FATAL_CLOSES[4014]}", file=sys.stderr)
        return 2
    except discord.ConnectionClosed as error:
        if error.code not in FATAL_CLOSES:
            raise
        print(f"error: {FATAL_CLOSES[error.code]} (gateway close {error.code})", file=sys.stderr)
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
    configure_logging(settings.log_level, settings.secrets)
    return asyncio.run(run(settings))


if __name__ == "__main__":
    sys.exit(main())
