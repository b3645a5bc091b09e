"""The whole bot against each backend's emulator: Novita v3 and a pool of A1111 servers.

`tests/harness.py` drives the bot; these fixtures only change which API it talks to
(`BACKEND=novita` with `OMNI_BASE_URL` at the v3 emulator, or `BACKEND=a1111` with
`A1111_URLS` at local A1111 emulators started with `--api-auth`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import pytest

from a1111.emulator import Emulator as A1111Emulator
from jobs.model import JobState
from omni.v3.emulator import Emulator as NovitaEmulator
from quota import ledger
from settings import Settings
from tests.fakes.discord import InteractionRecord
from tests.harness import Harness, build_world

NOVITA_KEY = "sk-novita-e2e-5f1d2c"
A1111_AUTH = "bot:gpu-box-secret-99"


@dataclass
class A1111Harness(Harness):
    """The harness with `BACKEND=a1111` over `servers` (`emulator` is the first of them)."""

    servers: list[A1111Emulator] = field(default_factory=list)

    def settings(self) -> Settings:
        base = Settings(
            discord_token=self.fake.bot_token,
            omni_api_key="",
            backend="a1111",
            a1111_urls=tuple(server.base_url for server in self.servers),
            a1111_auth=A1111_AUTH,
            database_url=self.database_url,
            dev_guild_id=self.world.guild.id,
            account_credit=1000,
            omni_timeout=2.0,
        )
        return replace(base, **self.settings_overrides)


@pytest.fixture
async def novita() -> AsyncIterator[NovitaEmulator]:
    async with NovitaEmulator(api_key=NOVITA_KEY, duration=0.8) as emulator:
        yield emulator


@pytest.fixture
async def novita_harness(fake_discord, novita, tmp_path) -> AsyncIterator[Harness]:
    """The bot with `BACKEND=novita`, its key and base URL pointing at the v3 emulator."""
    harness = Harness(
        fake_discord, novita, build_world(fake_discord), f"sqlite:///{tmp_path}/bot.db"
    )
    harness.settings_overrides = {"backend": "novita"}
    await harness.start_bot()
    yield harness
    await harness.stop_bot()


async def start_a1111_harness(fake_discord, tmp_path, count: int, duration: float):
    servers = [A1111Emulator(duration=duration, auth=A1111_AUTH) for _ in range(count)]
    for server in servers:
        await server.start()
    harness = A1111Harness(
        fake_discord,
        servers[0],  # type: ignore[arg-type]
        build_world(fake_discord),
        f"sqlite:///{tmp_path}/bot.db",
        servers=servers,
    )
    await harness.start_bot()
    return harness


async def stop_a1111_harness(harness: A1111Harness) -> None:
    await harness.stop_bot()
    for server in harness.servers:
        await server.stop()


@pytest.fixture
async def a1111_harness(fake_discord, tmp_path) -> AsyncIterator[A1111Harness]:
    """The bot with `BACKEND=a1111` over one emulated server (1 s a job)."""
    harness = await start_a1111_harness(fake_discord, tmp_path, 1, 1.0)
    yield harness
    await stop_a1111_harness(harness)


@pytest.fixture
async def a1111_pool_harness(fake_discord, tmp_path) -> AsyncIterator[A1111Harness]:
    """The bot with `BACKEND=a1111` over three emulated servers (1 s a job)."""
    harness = await start_a1111_harness(fake_discord, tmp_path, 3, 1.0)
    yield harness
    await stop_a1111_harness(harness)


def ended(record: InteractionRecord) -> bool:
    """The reply shows how the job ended. Unlike `Harness.finished`, an attachment alone is
    not an ending: A1111's live preview is uploaded as one while the job runs."""
    if record.followups:
        return True
    latest = record.latest
    if latest is None or latest.loading:
        return False
    return any(mark in latest.text for mark in ("Images ready", "❌", "⛔"))


async def finished(harness: Harness, record: InteractionRecord, timeout: float = 20.0):
    await harness.fake.wait_for(lambda: ended(record), timeout)
    return record


async def settled(harness: Harness) -> ledger.Balance:
    """Once the runner is idle: nothing reserved, no job left unfinished; the balance."""
    await harness.bot.services.runner.wait_idle()
    balance = await ledger.balance(harness.bot.services.db)
    assert balance.reserved == 0
    assert await harness.bot.services.jobs.unfinished() == []
    return balance


async def job_states(harness: Harness) -> list[tuple[str, str | None]]:
    rows = await harness.bot.services.db.fetch("SELECT state, charge FROM jobs ORDER BY created_at")
    return [(row["state"], row["charge"]) for row in rows]


DONE = JobState.DONE.value
