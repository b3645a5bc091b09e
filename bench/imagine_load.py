"""N concurrent /imagine through the fake Discord against the emulator, end to end.

    python -m bench.imagine_load [--sizes 1 50 200] [--duration 3] [--json out.json]
                                 [--compare previous.json]

The bot runs as its own process (`python bot.py`, pointed at the fake Discord), as in
production; the fake Discord and the emulator run in this process. Prints, per N: time to
acknowledge (interaction dispatched → deferred response received by Discord), bot overhead
beyond the emulator's generation time (dispatch → final edit, minus the task's duration),
Discord edits per job, 429s, and the bot process's peak memory (VmHWM). All three share the
machine's two cores, so the figures are an upper bound for the bot alone.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import tempfile
from pathlib import Path
from typing import Any

import aiosqlite

from bench.common import finish, percentile, table
from omni.emulator import Emulator
from tests.fakes.discord import FakeDiscord
from tests.fakes.run_bot import spawn
from tests.harness import build_world

logging.disable(logging.WARNING)
KEY = "bench-key"


async def start_bot(fake: FakeDiscord, emulator: Emulator, db: Path, guild_id: int, n: int):
    process = await spawn(
        fake.base_url,
        {
            "DISCORD_TOKEN": fake.bot_token,
            "OMNI_API_KEY": KEY,
            "OMNI_BASE_URL": emulator.base_url,
            "DATABASE_URL": f"sqlite:///{db}",
            "DEV_GUILD_ID": str(guild_id),
            "ACCOUNT_CREDIT": "1000000",
            "MAX_JOBS_IN_FLIGHT": str(max(8, n)),
            "MAX_QUEUE_LENGTH": "100000",
            "LOG_LEVEL": "ERROR",
        },
    )
    await fake.wait_until_ready(timeout=60)
    async with aiosqlite.connect(db) as conn:  # no cooldown: this measures load, not limits
        await conn.execute(
            "INSERT INTO limit_rules VALUES (?, 'guild', ?, 'cooldown_seconds', 0)",
            (guild_id, guild_id),
        )
        await conn.commit()
    return process


def peak_memory_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run_once(n: int, duration: float) -> dict[str, float]:
    emulator = Emulator(api_key=KEY, duration=duration)
    await emulator.start()
    fake = FakeDiscord()
    await fake.start()
    world = build_world(fake)
    members = [world.guild.add_member(f"m{i}") for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        process = await start_bot(fake, emulator, Path(tmp) / "bench.db", world.guild.id, n)
        try:
            records = await asyncio.gather(
                *(
                    fake.slash(world.guild, world.general, m, "imagine", {"prompt": "a lighthouse"})
                    for m in members
                )
            )
            await fake.wait_for(
                lambda: all(r.latest is not None and r.latest.attachments for r in records),
                timeout=120 + n,
            )
            memory = peak_memory_mib(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            await process.wait()
    await fake.stop()
    await emulator.stop()
    acks = [(r.history[0].at - r.created) * 1000 for r in records]
    overhead = [(r.latest.at - r.created - duration) * 1000 for r in records]
    edits = [len(r.history) - 1 for r in records]
    return {
        "jobs": n,
        "ack_p50_ms": percentile(acks, 50),
        "ack_p99_ms": percentile(acks, 99),
        "overhead_p50_ms": percentile(overhead, 50),
        "overhead_p99_ms": percentile(overhead, 99),
        "edits_per_job": sum(edits) / len(edits),
        "rate_limited_429s": fake.rate_limited_count,
        "bot_peak_rss_mib": memory,
    }


async def main(args: argparse.Namespace) -> None:
    results = [await run_once(n, args.duration) for n in args.sizes]
    headers = list(results[0])
    print(table(headers, [[r[h] for h in headers] for r in results]))
    figures: dict[str, Any] = {f"{k}@{r['jobs']}": v for r in results for k, v in r.items()}
    finish(args, figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 50, 200])
    parser.add_argument("--duration", type=float, default=3.0, help="emulated seconds per job")
    parser.add_argument("--json")
    parser.add_argument("--compare")
    asyncio.run(main(parser.parse_args()))
