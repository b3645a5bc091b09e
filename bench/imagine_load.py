"""N concurrent /imagine through the fake Discord against the emulator, end to end.

    python -m bench.imagine_load [--sizes 1 50 200] [--arrivals burst spread]
                                 [--duration 3] [--json out.json] [--compare previous.json]

Three processes, as in production three machines: the bot (`python bot.py`, pointed at the
fake Discord), the Omniinfer emulator (`python -m omni.emulator`, one shared picture per size
so its drawing does not compete with the bot), and this one, which runs the fake Discord.

Two arrival shapes for the N members. `burst`: all N in the same millisecond, the worst case
(every job also finishes in the same instant). `spread`: evenly over one task duration, so all
N are still in flight together at the peak, as when a busy server's members type at human
speed. Prints, per shape and N: time to acknowledge (interaction dispatched → Discord
receiving the deferral), bot overhead beyond the emulator's generation time (dispatch → final
edit, minus the task's duration), Discord edits per job, 429s, the bot's CPU per job and its
peak memory (VmHWM). The processes share the machine's cores, so the figures are an upper
bound for the bot alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.common import finish, percentile, table
from storage import open_database
from tests.fakes.discord import FakeDiscord, InteractionRecord
from tests.fakes.run_bot import spawn
from tests.harness import build_world

logging.disable(logging.WARNING)
KEY = "bench-key"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def emulator_process(duration: float) -> AsyncIterator[str]:
    """`python -m omni.emulator` on a free port; yields its base URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "omni.emulator", "--port", "0", "--key", KEY, "--duration", str(duration)),
        "--shared-pictures",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        yield line.rsplit(" ", 1)[-1].strip()  # "... listening on http://127.0.0.1:PORT"
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()


async def start_bot(fake: FakeDiscord, omni_url: str, db: Path, guild_id: int, n: int):
    process = await spawn(
        fake.base_url,
        {
            "DISCORD_TOKEN": fake.bot_token,
            "OMNI_API_KEY": KEY,
            "OMNI_BASE_URL": omni_url,
            "DATABASE_URL": f"sqlite:///{db}",
            "DEV_GUILD_ID": str(guild_id),
            "ACCOUNT_CREDIT": "1000000",
            "MAX_JOBS_IN_FLIGHT": str(max(8, n)),
            "MAX_QUEUE_LENGTH": "100000",
            "LOG_LEVEL": "ERROR",
        },
    )
    await fake.wait_until_ready(timeout=60)
    database = await open_database(f"sqlite:///{db}")
    await database.execute(  # no cooldown: this measures load, not limits
        "INSERT INTO limit_rules VALUES ($1, 'guild', $2, 'cooldown_seconds', 0)",
        guild_id,
        guild_id,
    )
    await database.close()
    return process


def peak_memory_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


async def run_once(n: int, arrival: str, duration: float) -> dict[str, Any]:
    fake = FakeDiscord()
    await fake.start()
    world = build_world(fake)
    members = [world.guild.add_member(f"m{i}") for i in range(n)]
    gap = duration / n if arrival == "spread" else 0.0

    async def member_runs_imagine(index: int) -> InteractionRecord:
        await asyncio.sleep(index * gap)
        return await fake.slash(
            world.guild, world.general, members[index], "imagine", {"prompt": "a lighthouse"}
        )

    async with emulator_process(duration) as omni_url:
        with tempfile.TemporaryDirectory() as tmp:
            process = await start_bot(fake, omni_url, Path(tmp) / "bench.db", world.guild.id, n)
            try:
                cpu_before = cpu_seconds(process.pid)
                records = await asyncio.gather(*(member_runs_imagine(i) for i in range(n)))
                await fake.wait_for(
                    lambda: all(r.latest is not None and r.latest.attachments for r in records),
                    timeout=120 + n,
                )
                cpu = cpu_seconds(process.pid) - cpu_before
                memory = peak_memory_mib(process.pid)
            finally:
                process.send_signal(signal.SIGTERM)
                await process.wait()
    await fake.stop()
    acks = [(r.history[0].at - r.created) * 1000 for r in records]
    overhead = [(r.latest.at - r.created - duration) * 1000 for r in records]
    edits = [len(r.history) - 1 for r in records]
    return {
        "arrival": arrival,
        "jobs": n,
        "ack_p50_ms": percentile(acks, 50),
        "ack_p99_ms": percentile(acks, 99),
        "overhead_p50_ms": percentile(overhead, 50),
        "overhead_p99_ms": percentile(overhead, 99),
        "edits_per_job": sum(edits) / len(edits),
        "rate_limited_429s": fake.rate_limited_count,
        "bot_cpu_ms_per_job": cpu / n * 1000,
        "bot_peak_rss_mib": memory,
    }


async def main(args: argparse.Namespace) -> None:
    results = [
        await run_once(n, arrival, args.duration) for arrival in args.arrivals for n in args.sizes
    ]
    headers = list(results[0])
    print(table(headers, [[r[h] for h in headers] for r in results]))
    figures = {
        f"{key}@{r['arrival']}/{r['jobs']}": value
        for r in results
        for key, value in r.items()
        if key not in ("arrival", "jobs")
    }
    finish(args, figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 50, 200])
    parser.add_argument(
        "--arrivals", nargs="+", choices=["burst", "spread"], default=["burst", "spread"]
    )
    parser.add_argument("--duration", type=float, default=3.0, help="emulated seconds per job")
    parser.add_argument("--json")
    parser.add_argument("--compare")
    asyncio.run(main(parser.parse_args()))
