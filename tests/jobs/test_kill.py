"""Kill tests: the bot process is SIGKILLed at random points of its jobs (while submitting,
polling and uploading) and restarted, over and over. At the end every job has ended exactly
once, none was submitted twice, and the ledger balances.

Randomness is seeded (KILL_TEST_SEED, default below), so a failure can be replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from omni.emulator import Emulator, Fault
from storage import open_database
from tests.fakes.discord import FakeDiscord
from tests.fakes.run_bot import spawn
from tests.harness import World, build_world, loosen_limits

SEED = int(os.environ.get("KILL_TEST_SEED", "20261125"))
ROUNDS = 22
KEY = "kill-test-key"


@dataclass
class Stage:
    """The stand-ins, one database file, and one bot process (`python bot.py`) at a time."""

    emulator: Emulator
    fake: FakeDiscord
    world: World
    db_path: str
    process: asyncio.subprocess.Process | None = None

    async def start_bot(self) -> None:
        self.process = await spawn(
            self.fake.base_url,
            {
                "DISCORD_TOKEN": self.fake.bot_token,
                "OMNI_API_KEY": KEY,
                "OMNI_BASE_URL": self.emulator.base_url,
                "OMNI_TIMEOUT": "3",
                "DATABASE_URL": f"sqlite:///{self.db_path}",
                "DEV_GUILD_ID": str(self.world.guild.id),
                "ACCOUNT_CREDIT": "100000",
                "LOG_LEVEL": "WARNING",
            },
        )
        await self.fake.wait_until_ready(timeout=30)

    async def kill_bot(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        await self.fake.wait_until_disconnected()

    async def stop_bot(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self.process.wait(), 30)


@contextlib.asynccontextmanager
async def stage(tmp_path: Path, task_seconds: float) -> AsyncIterator[Stage]:
    emulator = Emulator(api_key=KEY, duration=task_seconds)
    await emulator.start()
    fake = FakeDiscord()
    await fake.start()
    scene = Stage(emulator, fake, build_world(fake), str(tmp_path / "bot.db"))
    try:
        yield scene
    finally:
        if scene.process is not None and scene.process.returncode is None:
            scene.process.kill()
            await scene.process.wait()
        await fake.stop()
        await emulator.stop()


async def settle(db_path: str, timeout: float = 90) -> None:
    """Wait until the bot process has ended every stored job (reading its database)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while sum((await phases(db_path)).values()):
        assert loop.time() < deadline, await phases(db_path)
        await asyncio.sleep(0.2)


async def phases(db_path: str) -> Counter[str]:
    db = await open_database(f"sqlite:///{db_path}")
    rows = await db.fetch("SELECT state FROM jobs WHERE state NOT IN ('done', 'failed')")
    await db.close()
    return Counter(row["state"] for row in rows)


async def test_sigkill_at_random_points_loses_and_duplicates_nothing(tmp_path):
    rng = random.Random(SEED)
    records = []
    killed_during: Counter[str] = Counter()
    async with stage(tmp_path, task_seconds=0.8) as scene:
        emulator, fake, world, db_path = scene.emulator, scene.fake, scene.world, scene.db_path
        await scene.start_bot()
        await loosen_limits(f"sqlite:///{db_path}", [world.guild.id])
        for _ in range(ROUNDS):
            if rng.random() < 0.3:  # a slow submit, so some kills land inside it
                emulator.faults.add(Fault("txt2img", "delay", seconds=0.6))
            fake.upload_delay = 0.5 if rng.random() < 0.3 else 0.0
            for _ in range(rng.randint(1, 3)):
                member = rng.choice([world.alice, world.bob, world.mod])
                records.append(
                    await fake.slash(
                        world.guild,
                        world.general,
                        member,
                        "imagine",
                        {"prompt": f"kill test {len(records)}", "images": rng.randint(1, 2)},
                    )
                )
            await asyncio.sleep(rng.uniform(0.2, 2.0))
            killed_during.update(await phases(db_path))
            await scene.kill_bot()
            fake.upload_delay = 0.0
            await scene.start_bot()
        # Let the last process finish everything it knows about.
        await settle(db_path)
        await scene.stop_bot()

    db = await open_database(f"sqlite:///{db_path}")
    jobs = await db.fetch("SELECT * FROM jobs")
    account = await db.fetchrow("SELECT * FROM account")
    await db.close()

    # Kills landed in every phase of a job's life.
    assert killed_during["submitted"] > 0, killed_during
    assert killed_during["queued"] + killed_during["submitting"] > 0, killed_during
    # Every job ended exactly once, and the ledger balances.
    assert all(j["state"] in ("done", "failed") for j in jobs)
    assert account["reserved"] == 0
    assert account["spent"] == sum(j["cost"] for j in jobs if j["charge"] == "committed")
    assert all(
        (j["charge"] == "committed")
        == (
            j["state"] == "done"
            or j["failure"] in ("uncertain", "download_failed", "delivery_failed")
        )
        for j in jobs
    )
    # Nothing submitted twice: one Omniinfer task at most per job, never shared.
    task_ids = [j["task_id"] for j in jobs if j["task_id"]]
    assert len(task_ids) == len(set(task_ids))
    assert emulator.stats.tasks_created <= len(jobs)
    # Every member who was acknowledged sees exactly one ending.
    by_message = {j["message_id"]: j for j in jobs}
    for record in records:
        if record.original is None:
            continue  # never acknowledged: Discord showed "interaction failed", nothing spent
        job = by_message.get(record.original.id)
        if job is None:
            continue  # acknowledged, then killed before admission: no job, nothing reserved
        assert _ended(record), record.latest
        shown_images = bool(record.latest.attachments) if not record.original_deleted else False
        assert shown_images == (job["state"] == "done"), (job["state"], record.latest.text)
    reposts = [
        m for m in fake.channel_messages(world.general) if m.attachments and m.webhook_id is None
    ]
    assert reposts == []  # replies stayed editable: no result was re-posted to the channel


def _ended(record) -> bool:
    if record.original is None or record.followups or record.original_deleted:
        return True
    latest = record.latest
    if latest is None or latest.loading:
        return False
    return bool(latest.attachments) or "❌" in latest.text or "⛔" in latest.text


async def test_a_request_acknowledged_just_before_a_kill_is_answered_after_the_restart(tmp_path):
    async with stage(tmp_path, task_seconds=0.5) as scene:
        fake, world = scene.fake, scene.world
        await scene.start_bot()
        fake.answer_delay = 5  # Discord shows "thinking…"; the bot never hears back in time
        record = await fake.slash(
            world.guild, world.general, world.alice, "imagine", {"prompt": "lost"}
        )
        await fake.wait_for(lambda: record.acknowledged)
        await scene.kill_bot()
        fake.answer_delay = 0.0
        await scene.start_bot()
        await fake.wait_for(lambda: not record.latest.loading, timeout=30)
        assert "restarted before it could take your request" in record.latest.text
        await scene.stop_bot()
    db = await open_database(f"sqlite:///{scene.db_path}")
    assert await db.fetchval("SELECT COUNT(*) FROM jobs") == 0
    assert await db.fetchval("SELECT COUNT(*) FROM pending_interactions") == 0
    assert await db.fetchval("SELECT reserved FROM account") == 0
    await db.close()
    assert scene.emulator.stats.tasks_created == 0
