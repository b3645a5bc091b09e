"""Several bot processes on one PostgreSQL: how long a takeover after SIGKILL takes, jobs
admitted and delivered per second with 1, 2 and 3 processes, and database round trips per job.

    python -m bench.takeover [--kills 20] [--lease 20] [--renew 2] [--processes 1,2,3]
                             [--jobs 300] [--duration 0.3] [--cap 64] [--tree DIR]
                             [--database-url postgresql://...] [--json out.json]
                             [--compare previous.json]

Real bot processes (`python bot.py` through tests.fakes.run_bot) against the fake Discord and
the Omniinfer emulator, both in this process. Without --database-url a throwaway PostgreSQL
cluster is started from the installed binaries (as the tests do); only then are round trips
counted (they are read from the server's log).

Takeover (`--kills` rounds, one database, one fake Discord and emulator, processes a and b):
the victim (a, then b, in turn) gets `--takeover-jobs` requests; once all are admitted and it
has jobs at the backend and in line, it is sent SIGKILL at one of three moments in turn (see
MOMENTS: a random one, one of its jobs delivering, one being submitted). The clock runs from
the signal to: the first of its unfinished jobs owned by the other process; every one of them
that was at the backend (starting, submitting, submitted, delivering) owned by the other (the
lease expiring plus the survivor's next sweep); every one of them ended. Then the victim is
started again under the same INSTANCE_ID, as a supervisor would, for the next round. The
lease is `--lease`/`--renew` (LEASE_SECONDS, LEASE_RENEW_SECONDS; the defaults are the
product's).

Throughput (each of `--processes`, a fresh database and fake Discord): `--jobs` requests sent
at once, spread over the processes' servers (one server per process on its shard, 12
members in all), `--duration` s tasks, MAX_JOBS_IN_FLIGHT=`--cap`. Admitted per second: jobs /
(first request sent → the last job's created_at); delivered per second: jobs / (first request
→ the last job's finished_at, written after its images were posted).

Round trips: the throughput database is created with `log_min_duration_statement = 0`
(ALTER DATABASE, so tests.pg needs no option and only the bots' sessions log; the benchmark's
own polling session turns it off), and the server log between the first request and the last
job ended is parsed. Statements: simple-protocol statements (BEGIN, COMMIT, the pool's reset
on every release) plus extended-protocol executes. Round trips: statements plus prepares
(`parse`: asyncpg prepares a statement once per connection, then caches it). Server time: the
logged durations (parse, bind, execute, statement), lock waits included. Everything in the
window is divided by the jobs, the processes' background work included (lease renewals,
sweeps, claim polls).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import re
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from bench.common import cpu_seconds, finish, percentile, table
from tests.fakes.run_bot import ROOT
from tests.jobs.test_processes import Cluster, cluster, has_images, most_at_once, told_its_fate
from tests.pg import Cluster as PgCluster

logging.disable(logging.WARNING)

ENDED = ("done", "failed")
AT_BACKEND = ("starting", "submitting", "submitted", "delivering")
MEMBERS = 12  # members in all, over the throughput's servers


async def fresh_database(server: str, *, log_statements: bool = False) -> str:
    """A new empty database on `server` (its maintenance database's URL); with
    `log_statements` every statement of its sessions is logged with its duration."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        if log_statements:
            await admin.execute(f"ALTER DATABASE {name} SET log_min_duration_statement = 0")
    finally:
        await admin.close()
    return urlsplit(server)._replace(path=f"/{name}").geturl()


async def watcher(url: str) -> asyncpg.Connection:
    """The benchmark's own session: not logged, so it is not counted."""
    return await asyncpg.connect(
        url,
        server_settings={"application_name": "bench", "log_min_duration_statement": "-1"},
    )


@dataclass
class Processes:
    """Starts the scene's processes from `tree`, their stderr kept in `logs`."""

    scene: Cluster
    tree: Path
    logs: Path
    settings: dict[str, str]
    started: Counter[str] = field(default_factory=Counter)

    async def start(self, name: str) -> None:
        self.started[name] += 1
        log = self.logs / f"{name}-{self.started[name]}.log"
        env = {
            **os.environ,
            "FAKE_DISCORD_URL": self.scene.fake.base_url,
            **self.scene.env(name, **self.settings),
        }
        with log.open("ab") as stderr:
            self.scene.processes[name] = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.fakes.run_bot",
                cwd=self.tree,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        side = self.scene.sides[name]
        await self.scene.fake.wait_for_shards([side.shard], len(self.scene.sides), timeout=60)

    async def stop_all(self) -> None:
        for name, process in self.scene.processes.items():
            if process.returncode is None:
                await self.scene.terminate(name)


# -- takeover --------------------------------------------------------------------------------


# When a kill comes, in turn: a random moment up to 1.5 tasks after the victim has jobs at
# the backend and in line; as soon as one of its jobs is seen delivering; as soon as one is
# seen being submitted (SIGKILL mid-submit: that job's fate is unknown, it fails "uncertain").
MOMENTS = ("random", "delivering", "submitting")


@dataclass
class Kill:
    victim: str
    moment: str
    states: Counter[str]  # its unfinished jobs' states at the kill
    first_taken: float | None  # s from the kill to the first of them owned by the survivor
    backend_taken: float | None  # to all of them that were at the backend owned by it
    ended: float  # to all of them ended
    failures: Counter[str]


async def victim_jobs(conn: asyncpg.Connection, victim: str) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch(
        "SELECT id, state, owner FROM jobs WHERE owner = $1 AND state <> ALL($2::text[])",
        victim,
        list(ENDED),
    )
    return {row["id"]: row for row in rows}


async def one_kill(
    procs: Processes,
    conn: asyncpg.Connection,
    victim: str,
    jobs: int,
    chance: random.Random,
    timeout: float,
    moment: str,
) -> tuple[Kill, list]:
    scene = procs.scene
    duration = scene.emulator.duration
    records = await scene.imagine(victim, jobs)
    tokens = [record.token for record in records]
    deadline = time.monotonic() + 60
    while True:  # every request admitted (a kill before admission is not a takeover)
        admitted = await conn.fetchval(
            "SELECT COUNT(*) FROM jobs WHERE interaction_token = ANY($1::text[])", tokens
        )
        if admitted == jobs:
            break
        assert time.monotonic() < deadline, f"{victim} admitted {admitted} of {jobs}"
        await asyncio.sleep(0.02)
    while True:  # jobs at the backend and in line, the victim's
        states = Counter(r["state"] for r in (await victim_jobs(conn, victim)).values())
        if states["submitted"] and states["queued"]:
            break
        assert time.monotonic() < deadline, f"{victim} never had jobs at the backend and queued"
        await asyncio.sleep(0.02)
    if moment == "random":
        await asyncio.sleep(chance.uniform(0, 1.5 * duration))
        before = await victim_jobs(conn, victim)
    else:  # as soon as one of its jobs is seen in that state
        wanted = ("delivering",) if moment == "delivering" else ("starting", "submitting")
        deadline = time.monotonic() + 3 * duration + 10
        while True:
            before = await victim_jobs(conn, victim)
            seen = any(row["state"] in wanted for row in before.values())
            if seen or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.003)
    process = scene.processes[victim]
    killed = time.perf_counter()
    process.send_signal(signal.SIGKILL)
    await process.wait()
    after = await victim_jobs(conn, victim)
    # What it left: its unfinished jobs once dead, and those the survivor claimed from the line
    # between the two looks (not the ones it ended itself before the signal).
    rows = {
        row["id"]: row
        for row in await conn.fetch(
            "SELECT id, state, owner FROM jobs WHERE id = ANY($1::text[])", list(before)
        )
    }
    left = dict(after)
    for job_id, row in rows.items():
        if job_id not in left and row["owner"] != victim:
            left[job_id] = before[job_id]
    at_backend = {job_id for job_id, row in left.items() if row["state"] in AT_BACKEND}
    first = backend = None
    while True:
        now = time.perf_counter() - killed
        rows = {
            row["id"]: row
            for row in await conn.fetch(
                "SELECT id, state, owner, failure FROM jobs WHERE id = ANY($1::text[])", list(left)
            )
        }
        moved = {job_id for job_id, row in rows.items() if row["owner"] != victim}
        if first is None and moved:
            first = now
        if backend is None and at_backend <= moved:
            backend = now
        if all(row["state"] in ENDED for row in rows.values()):
            break
        if now > timeout:
            left_over = Counter((r["owner"], r["state"]) for r in rows.values())
            raise AssertionError(f"takeover never finished: {dict(left_over)}")
        await asyncio.sleep(0.05)
    kill = Kill(
        victim,
        moment,
        Counter(row["state"] for row in left.values()),
        first,
        backend if at_backend else None,
        now,
        Counter(row["failure"] or "-" for row in rows.values() if row["state"] == "failed"),
    )
    await scene.fake.wait_until_disconnected(shard_ids=[scene.sides[victim].shard])
    await procs.start(victim)  # as a supervisor would, once its jobs are the survivor's
    return kill, records


def delivery_anomalies(records: list, scene: Cluster) -> list[str]:
    """Members shown images twice, sent follow-ups, told "restarting", or never told."""
    found = []
    for record in records:
        with_images = {tuple(n for n, _ in s.attachments) for s in record.history} - {()}
        if len(with_images) > 1:
            found.append(f"{record.token[-8:]}: {len(with_images)} different image sets")
        if record.followups:
            found.append(f"{record.token[-8:]}: {len(record.followups)} follow-ups")
        if any("restart" in snap.text.lower() for snap in record.history):
            found.append(f"{record.token[-8:]}: told restarting")
        if not told_its_fate(record):
            found.append(f"{record.token[-8:]}: never told its fate")
    for side in scene.sides.values():
        reposts = [m for m in scene.fake.channel_messages(side.channel) if m.webhook_id is None]
        if any(m.attachments for m in reposts):
            found.append(f"#{side.name}: {len(reposts)} channel posts with images")
    return found


async def takeovers(
    server: str, args: argparse.Namespace, logs: Path
) -> tuple[list[Kill], dict[str, Any]]:
    url = await fresh_database(server)
    chance = random.Random(args.seed)
    settings = {
        "LEASE_SECONDS": str(args.lease),
        "LEASE_RENEW_SECONDS": str(args.renew),
        "MAX_JOBS_IN_FLIGHT": str(args.takeover_cap),
        "MAX_QUEUE_LENGTH": "10000",
    }
    kills: list[Kill] = []
    records = []
    async with cluster(url) as scene:
        scene.emulator.duration = args.takeover_duration
        scene.emulator.draw_each_image = False
        procs = Processes(scene, args.tree, logs, settings)
        conn = await watcher(url)
        try:
            await procs.start("a")
            await procs.start("b")
            for n in range(args.kills):
                victim, moment = "ab"[n % 2], MOMENTS[n % len(MOMENTS)]
                kill, sent = await one_kill(
                    procs, conn, victim, args.takeover_jobs, chance, args.lease * 3 + 60, moment
                )
                kills.append(kill)
                records += sent
                print(
                    f"kill {n + 1:2}/{args.kills} {victim} ({moment}): left {dict(kill.states)}, "
                    f"first taken {kill.first_taken or float('nan'):.2f}s, at-backend taken "
                    f"{kill.backend_taken or float('nan'):.2f}s, all ended {kill.ended:.2f}s"
                    + (f", failed {dict(kill.failures)}" if kill.failures else ""),
                    flush=True,
                )
            with contextlib.suppress(TimeoutError):
                await scene.fake.wait_for(lambda: all(map(told_its_fate, records)), 30)
            rows = await conn.fetch(
                "SELECT id, state, failure, task_id, owner, interaction_token FROM jobs"
            )
            by_token = {row["interaction_token"]: row for row in rows}
            for record in records:
                if not told_its_fate(record):
                    row = by_token.get(record.token)
                    latest = record.latest.text[:200] if record.latest else None
                    print(
                        f"NOT TOLD: job {row and row['id']} {row and dict(row)}, "
                        f"shown {latest!r}, history {len(record.history)}",
                        flush=True,
                    )
            account = await conn.fetchrow("SELECT * FROM account")
            await procs.stop_all()
        finally:
            await conn.close()
        done = [r for r in rows if r["state"] == "done"]
        checks = {
            "jobs": len(rows),
            "done": len(done),
            "failed": dict(Counter(r["failure"] for r in rows if r["state"] == "failed")),
            "unfinished": sum(r["state"] not in ENDED for r in rows),
            "emulator tasks created": scene.emulator.stats.tasks_created,
            "distinct task ids of done jobs": len({r["task_id"] for r in done}),
            "shown images": sum(map(has_images, records)),
            "account spent / reserved": f"{account['spent']} / {account['reserved']}",
            "anomalies": delivery_anomalies(records, scene),
        }
    return kills, checks


# -- throughput and round trips ----------------------------------------------------------


_ENTRY = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \S+ \[\d+\] [A-Z]+:  ")
_TIMED = re.compile(
    r"duration: (?P<ms>[\d.]+) ms  (?P<kind>statement|parse|bind|execute)(?: [^:]*)?: (?P<sql>.*)",
    re.S,
)


def log_entries(text: str) -> list[str]:
    """The server log's entries (a statement spans lines, continued with a tab)."""
    entries: list[str] = []
    for line in text.splitlines():
        match = _ENTRY.match(line)
        if match:
            entries.append(line[match.end() :])
        elif entries:
            entries[-1] += "\n" + line
    return entries


@dataclass
class Trips:
    statements: int = 0
    prepares: int = 0
    transactions: int = 0
    resets: int = 0
    server_ms: float = 0.0
    kinds: Counter[str] = field(default_factory=Counter)
    kind_ms: Counter[str] = field(default_factory=Counter)  # parse, bind and execute included


def count_trips(text: str) -> Trips:
    trips = Trips()
    for entry in log_entries(text):
        match = _TIMED.match(entry)
        if not match:
            continue
        trips.server_ms += float(match["ms"])
        kind, sql = match["kind"], " ".join(match["sql"].split())
        key = " ".join(sql.split()[:6])[:72]
        trips.kind_ms[key] += float(match["ms"])
        if kind == "parse":
            trips.prepares += 1
        elif kind in ("statement", "execute"):
            trips.statements += 1
            trips.transactions += sql.upper().startswith(("BEGIN", "START TRANSACTION"))
            trips.resets += sql.startswith("SELECT pg_advisory_unlock_all()")
            trips.kinds[key] += 1
    return trips


def size(log: Path | None) -> int:
    return log.stat().st_size if log else 0


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int, *, children: bool = False) -> float:
    """CPU seconds of a live process (and of its children it has reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / _TICK


def postgres_cpu(data: Path) -> float:
    """CPU seconds of the cluster: the postmaster (with the backends it reaped) and its
    live children."""
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    total = process_cpu(postmaster, children=True)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                total += process_cpu(int(stat.parent.name))
    return total


def cpu_now(scene: Cluster, data: Path | None) -> dict[str, float]:
    """CPU seconds so far: the bots, PostgreSQL, and this process (fake Discord, emulator)."""
    return {
        "bots": sum(process_cpu(p.pid) for p in scene.processes.values()),
        "postgres": postgres_cpu(data) if data else float("nan"),
        "bench": cpu_seconds(),
    }


@dataclass
class Rate:
    processes: int
    admitted_per_s: float
    delivered_per_s: float
    wall_s: float
    most_at_once: int
    most_capped: int
    owners: dict[str, int]
    trips: Trips | None
    load: tuple[float, float]
    cpu: dict[str, float]  # CPU seconds over the window, by who spent them


async def throughput(
    server: str, log: Path | None, processes: int, args: argparse.Namespace, logs: Path
) -> Rate:
    url = await fresh_database(server, log_statements=log is not None)
    names = "abc"[:processes]
    count = args.jobs
    async with cluster(url, names) as scene:
        scene.emulator.duration = args.duration
        scene.emulator.draw_each_image = False
        sides = list(scene.sides.values())
        for n, side in enumerate(sides):
            extra = MEMBERS // processes - len(side.members)
            side.members += [side.guild.add_member(f"{side.name}-m{n}-{k}") for k in range(extra)]
        conn = await watcher(url)
        settings = {"MAX_JOBS_IN_FLIGHT": str(args.cap), "MAX_QUEUE_LENGTH": "100000"}
        procs = Processes(scene, args.tree, logs, settings)
        try:
            await conn.execute(
                "UPDATE limit_rules SET value = 100000 WHERE field = 'concurrent_jobs'"
            )
            for name in names:
                await procs.start(name)
            await asyncio.sleep(2 * 2.0)  # past each process's first sweeps and claims
            load_before = os.getloadavg()[0]
            data = log.parent / "data" if log else None
            cpu_before = cpu_now(scene, data) | {"wall": time.monotonic()}
            log_from = size(log)
            started = time.time()
            per_side = [range(n, count, processes) for n in range(processes)]

            async def send(side: Any, numbers: range) -> None:
                for k, number in enumerate(numbers):
                    member = side.members[k % len(side.members)]
                    await scene.fake.slash(
                        side.guild, side.channel, member, "imagine", {"prompt": f"job {number}"}
                    )

            senders = [send(s, numbers) for s, numbers in zip(sides, per_side, strict=True)]
            await asyncio.gather(*senders)
            deadline = time.monotonic() + 600
            capped = 0  # the most jobs the cap counted at one look (every 0.1 s)
            while True:
                row = await conn.fetchrow(
                    """SELECT COUNT(*) AS n, COUNT(*) FILTER (WHERE state IN ('done', 'failed'))
                       AS ended, MAX(created_at) AS admitted, MAX(finished_at) AS finished,
                       COUNT(*) FILTER (WHERE state IN ('starting', 'submitting', 'submitted'))
                       AS capped
                       FROM jobs"""
                )
                capped = max(capped, row["capped"])
                if row["n"] == count and row["ended"] == count:
                    break
                assert time.monotonic() < deadline, dict(row)
                await asyncio.sleep(0.1)
            log_to = size(log)
            load_after = os.getloadavg()[0]
            cpu_after = cpu_now(scene, data) | {"wall": time.monotonic()}
            rows = await conn.fetch("SELECT state, owner, failure FROM jobs")
            await procs.stop_all()
        finally:
            await conn.close()
        emulator_peak = most_at_once(scene.emulator)
    bad = Counter(r["failure"] for r in rows if r["state"] != "done")
    assert not bad, f"jobs that did not succeed: {dict(bad)}"
    trips = None
    if log is not None:
        with log.open("rb") as file:
            file.seek(log_from)
            trips = count_trips(file.read(log_to - log_from).decode("utf-8", "replace"))
    return Rate(
        processes,
        count / (row["admitted"] - started),
        count / (row["finished"] - started),
        row["finished"] - started,
        emulator_peak,
        capped,
        dict(sorted(Counter(r["owner"] for r in rows).items())),
        trips,
        (load_before, load_after),
        {who: cpu_after[who] - cpu_before[who] for who in cpu_after},
    )


# -- the run -----------------------------------------------------------------------------


def seconds(values: list[float]) -> list[str]:
    return [f"{percentile(values, 50):.2f}", f"{percentile(values, 99):.2f}", f"{max(values):.2f}"]


async def main(args: argparse.Namespace) -> None:
    main_task = asyncio.current_task()
    assert main_task is not None
    # SIGTERM (a background run has SIGINT ignored) stops it cleanly: bots and cluster.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    pg: PgCluster | None = None
    server = args.database_url
    log = None
    if server is None:
        pg = PgCluster()
        pg.start()
        server, log = pg.url, pg.dir / "log"
    logs = Path(tempfile.mkdtemp(prefix="bench-takeover-"))
    print(f"process logs in {logs}", flush=True)
    figures: dict[str, Any] = {}
    try:
        if args.kills:
            kills, checks = await takeovers(server, args, logs)
            first = [k.first_taken for k in kills if k.first_taken is not None]
            backend = [k.backend_taken for k in kills if k.backend_taken is not None]
            ended = [k.ended for k in kills]
            print(
                f"\nTakeover after SIGKILL, {len(kills)} kills, LEASE_SECONDS={args.lease:g}, "
                f"LEASE_RENEW_SECONDS={args.renew:g}, {args.takeover_jobs} jobs a kill, "
                f"{args.takeover_duration:g} s tasks, MAX_JOBS_IN_FLIGHT={args.takeover_cap}\n"
            )
            print(
                table(
                    ["from the kill to", "kills", "p50 s", "p99 s", "max s"],
                    [
                        [
                            "the first of its jobs owned by the survivor",
                            len(first),
                            *seconds(first),
                        ],
                        [
                            "all its jobs at the backend owned by the survivor",
                            len(backend),
                            *seconds(backend),
                        ],
                        ["all its jobs ended", len(ended), *seconds(ended)],
                    ],
                )
            )
            print()
            print(
                table(
                    [
                        "kill moment",
                        "kills",
                        "jobs left, by state",
                        "at-backend taken p50 s",
                        "all ended p50 s",
                        "failed",
                    ],
                    [
                        [
                            moment,
                            len(these),
                            " ".join(
                                f"{k}:{v}"
                                for k, v in sum((k.states for k in these), Counter()).items()
                            ),
                            percentile(
                                [k.backend_taken for k in these if k.backend_taken is not None], 50
                            ),
                            percentile([k.ended for k in these], 50),
                            dict(sum((k.failures for k in these), Counter())) or "-",
                        ]
                        for moment in MOMENTS
                        if (these := [k for k in kills if k.moment == moment])
                    ],
                )
            )
            print("checks: " + ", ".join(f"{key} {value}" for key, value in checks.items()))
            figures |= {
                "lease_s": args.lease,
                "first_taken_p50_s": percentile(first, 50),
                "first_taken_p99_s": percentile(first, 99),
                "backend_taken_p50_s": percentile(backend, 50),
                "backend_taken_p99_s": percentile(backend, 99),
                "backend_taken_max_s": max(backend, default=float("nan")),
                "all_ended_p50_s": percentile(ended, 50),
                "all_ended_p99_s": percentile(ended, 99),
                "all_ended_max_s": max(ended),
            }
        rates = [await throughput(server, log, n, args, logs) for n in args.processes]
    finally:
        if pg is not None:
            pg.stop()
    if not rates:
        finish(args, figures)
        return
    print(
        f"\nThroughput: {args.jobs} jobs sent at once, {args.duration:g} s tasks, "
        f"MAX_JOBS_IN_FLIGHT={args.cap}\n"
    )
    rows = []
    for rate in rates:
        trips = rate.trips
        per_job = (
            [
                trips.statements / args.jobs,
                trips.transactions / args.jobs,
                (trips.statements + trips.prepares) / args.jobs,
                trips.resets / args.jobs,
                trips.server_ms / args.jobs,
            ]
            if trips
            else ["-"] * 5
        )
        rows.append(
            [
                rate.processes,
                rate.admitted_per_s,
                rate.delivered_per_s,
                rate.wall_s,
                *per_job,
                rate.most_capped,
                rate.most_at_once,
                " ".join(f"{k}:{v}" for k, v in rate.owners.items()),
                f"{rate.load[0]:.1f}→{rate.load[1]:.1f}",
            ]
        )
        figures[f"admitted_per_s_{rate.processes}"] = rate.admitted_per_s
        figures[f"delivered_per_s_{rate.processes}"] = rate.delivered_per_s
        if trips:
            figures[f"statements_per_job_{rate.processes}"] = trips.statements / args.jobs
            figures[f"transactions_per_job_{rate.processes}"] = trips.transactions / args.jobs
            figures[f"round_trips_per_job_{rate.processes}"] = (
                trips.statements + trips.prepares
            ) / args.jobs
    print(
        table(
            [
                "processes",
                "admitted/s",
                "delivered/s",
                "all delivered s",
                "statements/job",
                "transactions/job",
                "round trips/job",
                "pool resets/job",
                "server ms/job",
                "most counted by the cap (a look every 0.1 s)",
                "most tasks running at the emulator at once",
                "jobs run by",
                "load average",
            ],
            rows,
        )
    )
    print("\nCPU over the window (first request → every job ended):\n")
    print(
        table(
            [
                "processes",
                "bots ms/job",
                "PostgreSQL ms/job",
                "fake Discord + emulator ms/job",
                "cores busy",
            ],
            [
                [
                    rate.processes,
                    rate.cpu["bots"] * 1000 / args.jobs,
                    rate.cpu["postgres"] * 1000 / args.jobs,
                    rate.cpu["bench"] * 1000 / args.jobs,
                    sum(v for k, v in rate.cpu.items() if k != "wall") / rate.cpu["wall"],
                ]
                for rate in rates
            ],
        )
    )
    for rate in rates:
        if rate.trips:
            trips = rate.trips
            # The ten most frequent statements, and any of the five costliest to the server.
            kinds = [kind for kind, _ in trips.kinds.most_common(10)]
            kinds += [kind for kind, _ in trips.kind_ms.most_common(5) if kind not in kinds]
            print(f"\nStatements per job by their first words, {rate.processes} process(es):\n")
            print(
                table(
                    ["statement", "per job", "server ms per job"],
                    [
                        [kind, trips.kinds[kind] / args.jobs, trips.kind_ms[kind] / args.jobs]
                        for kind in kinds
                    ]
                    + [["(all)", trips.statements / args.jobs, trips.server_ms / args.jobs]],
                )
            )

    finish(args, figures)


def processes_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="0: no takeover part")
    parser.add_argument("--lease", type=float, default=20.0, help="LEASE_SECONDS")
    parser.add_argument("--renew", type=float, default=2.0, help="LEASE_RENEW_SECONDS")
    parser.add_argument("--takeover-jobs", type=int, default=10, help="the victim's jobs a kill")
    parser.add_argument("--takeover-duration", type=float, default=2.0, help="s per task")
    parser.add_argument("--takeover-cap", type=int, default=4, help="MAX_JOBS_IN_FLIGHT")
    parser.add_argument("--seed", type=int, default=1, help="for the kills' moments")
    parser.add_argument(
        "--processes", type=processes_list, default=[1, 2, 3], help="e.g. 1,2,3; empty: none"
    )
    parser.add_argument("--jobs", type=int, default=300, help="jobs per throughput run")
    parser.add_argument("--duration", type=float, default=0.3, help="s per throughput task")
    parser.add_argument("--cap", type=int, default=64, help="MAX_JOBS_IN_FLIGHT for throughput")
    parser.add_argument(
        "--tree",
        type=Path,
        default=ROOT,
        help="run the bots from this source tree (e.g. `git archive HEAD | tar -x -C DIR`)",
    )
    parser.add_argument("--database-url", help="a PostgreSQL maintenance database URL")
    parser.add_argument("--json")
    parser.add_argument("--compare")
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(main(parser.parse_args()))
