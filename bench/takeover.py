"""Several bot processes on one PostgreSQL: how long a takeover after SIGKILL takes, and jobs
per second with one and with two processes.

    python -m bench.takeover [--kills 3] [--jobs 24] [--duration 1.0] [--cap 8]
                             [--database-url postgresql://...] [--json out.json]
                             [--compare previous.json]

Real bot processes (`python bot.py`, shards 0 and 1 of 2) against the fake Discord and the
Omniinfer emulator. Without --database-url a throwaway PostgreSQL cluster is started from the
installed binaries (as the tests do). Takeover: process a has jobs at Omniinfer and queued,
is killed, and b's clock runs from the kill to b owning every one of them (the lease expiring
plus b's next sweep) and to all of them delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid
from collections import Counter
from urllib.parse import urlsplit

import asyncpg

from bench.common import finish, percentile, table
from tests.jobs.test_processes import all_ended, cluster, jobs, wait_for_jobs
from tests.pg import Cluster as PgCluster

logging.disable(logging.WARNING)


async def fresh_database(server: str) -> str:
    """A new empty database on `server` (its maintenance database's URL)."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    return urlsplit(server)._replace(path=f"/{name}").geturl()


async def one_takeover(server: str, duration: float) -> tuple[float, float]:
    """Seconds from SIGKILL of a to b owning all of a's jobs, and to all of them ended."""
    url = await fresh_database(server)
    async with cluster(url) as scene:
        scene.emulator.duration = duration
        await scene.start("a")
        await scene.start("b")
        await scene.imagine("a", 4)
        await wait_for_jobs(
            url,
            lambda rows: Counter(r["state"] for r in rows) == {"submitted": 2, "queued": 2},
            timeout=30,
            what="a's jobs at the backend and queued",
        )
        killed = time.perf_counter()
        await scene.kill("a")
        await wait_for_jobs(
            url,
            lambda rows: {r["owner"] for r in rows} == {"b"},
            timeout=60,
            what="b to own a's jobs",
        )
        owned = time.perf_counter() - killed
        rows = await wait_for_jobs(url, all_ended, timeout=60, what="a's jobs to end")
        ended = time.perf_counter() - killed
        assert all(r["state"] == "done" for r in rows), [r["failure"] for r in rows]
        await scene.terminate("b")
    return owned, ended


async def throughput(server: str, processes: int, count: int, duration: float, cap: int) -> float:
    """Jobs per second from the first request to the last delivery, over `processes`."""
    url = await fresh_database(server)
    names = ["a", "b"][:processes]
    async with cluster(url) as scene:
        scene.emulator.duration = duration
        for name in names:
            await scene.start(name, MAX_JOBS_IN_FLIGHT=str(cap))
        started = time.perf_counter()
        shares = [count // processes + (n < count % processes) for n in range(processes)]
        await asyncio.gather(
            *(scene.imagine(n, share) for n, share in zip(names, shares, strict=True))
        )
        rows = await wait_for_jobs(url, all_ended, timeout=300, what="every job to end")
        took = time.perf_counter() - started
        assert len(rows) == count and all(r["state"] == "done" for r in rows)
        assert len(await jobs(url)) == count
        for name in names:
            await scene.terminate(name)
    return count / took


async def main(args: argparse.Namespace) -> None:
    pg: PgCluster | None = None
    server = args.database_url
    if server is None:
        pg = PgCluster()
        pg.start()
        server = pg.url
    try:
        owned, ended = [], []
        for _ in range(args.kills):
            took_over, finished = await one_takeover(server, args.duration)
            owned.append(took_over)
            ended.append(finished)
        rates = {n: await throughput(server, n, args.jobs, args.duration, args.cap) for n in (1, 2)}
    finally:
        if pg is not None:
            pg.stop()
    figures = {
        "takeover_p50_s": percentile(owned, 50),
        "takeover_p99_s": percentile(owned, 99),
        "all_ended_after_kill_p50_s": percentile(ended, 50),
        "all_ended_after_kill_p99_s": percentile(ended, 99),
        "jobs_per_s_1_process": rates[1],
        "jobs_per_s_2_processes": rates[2],
    }
    print(
        table(
            ["figure", "value"],
            [[key, value] for key, value in figures.items()]
            + [["kills", args.kills], ["jobs per throughput run", args.jobs], ["cap", args.cap]],
        )
    )
    finish(args, figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per emulated task")
    parser.add_argument("--cap", type=int, default=8, help="MAX_JOBS_IN_FLIGHT for throughput")
    parser.add_argument("--database-url", help="a PostgreSQL maintenance database URL")
    parser.add_argument("--json")
    parser.add_argument("--compare")
    asyncio.run(main(parser.parse_args()))
