"""N concurrent /imagine through the fake Discord against the emulator, end to end: ours
beside the floor (`bench.floor_bot`), interleaved in one run.

    python -m bench.imagine_load [--sizes 200] [--arrivals burst spread] [--rounds 2]
                                 [--bots ours floor] [--count-statements] [--count-calls]
                                 [--duration 3]
                                 [--backend omniinfer|a1111] [--servers 4]
                                 [--database sqlite|postgresql] [--processes 1]
                                 [--database-url postgresql://...] [--ours-tree DIR]
                                 [--json out.json] [--compare previous.json]

Three processes, as in production three machines: the bot (ours is `python bot.py`, the floor
a bare discord.py bot doing the same Discord and HTTP work per job and nothing else), each
pointed at the fake Discord; the Omniinfer emulator (`python -m omni.emulator`, one shared
picture per size so its drawing does not compete with the bot); and this one, which runs the
fake Discord. Every bot run gets a fresh fake Discord and emulator.

Two arrival shapes for the N members. `burst`: all N in the same millisecond, the worst case
(every job also finishes in the same instant). `spread`: evenly over one task duration, so all
N are still in flight together at the peak, as when a busy server's members type at human
speed. For each shape and N it runs `--rounds` rounds, each ours then the floor (the order
alternates per round), and prints them side by side: time to acknowledge (interaction
dispatched → Discord receiving the deferral), overhead beyond the emulator's generation time
(dispatch → final edit, minus the task's duration), Discord edits, emulator polls and all
emulator requests (submit, polls, downloads) per job, 429s, CPU per job (utime + stime from
just before the first interaction to the last final edit) and peak memory (VmHWM).
Percentiles pool the rounds' jobs; the ratio's min-max is over rounds. The processes share
the machine's cores, so the figures are an upper bound for the bot alone.

`--backend a1111` does the same over a pool of `--servers` AUTOMATIC1111 emulators (`python
-m a1111.emulator`, one process each, fresh for every bot run), ours with `BACKEND=a1111` and
the floor in its A1111 mode, both one job per server at a time. `spread` then sends the N a
little slower than the pool serves them; the overhead is measured against an ideal pool
(`ideal_ends`); it also prints the A1111 requests per endpoint, the files uploaded to
Discord, the time to serve all N and the most jobs a server ran or queued at once. Its
figures are saved with an `a1111_` prefix, so both modes can share one JSON.

`--database postgresql --processes 2` runs ours as 2 processes sharing one fresh PostgreSQL
database per run, each on its own shard (`SHARD_COUNT=2`, `SHARD_IDS=0`/`1`, its own
`INSTANCE_ID`), and the floor as 2 processes on the same shards; the N members are spread
evenly over one guild per shard, so each process is sent half the jobs. Without
`--database-url` a throwaway cluster is started from the installed binaries (`tests.pg`) and
each run's database logs every statement (as `bench.takeover`): for ours it adds
PostgreSQL's round trips, statements and transactions per job from the server log, the
logged durations, and the cluster's CPU per job (utime + stime of the postmaster, its
backends and the ones it reaped, from /proc, logging included), over the same window; the
same window on the idle cluster is shown for the floor. CPU and peak memory are summed over
the processes. Its figures are saved with a `pg2_` prefix (`pg<processes>_`).

`--ours-tree DIR` runs ours from another checkout (the working tree by default), e.g. a
commit's clean snapshot while others edit this one. `--count-statements` adds one round of
ours run through `bench.counting_bot`, which counts the SQLite statements and commits over
the same window (that round's other figures are not used: the counting is not free).
`--count-calls` adds one round of each bot under cProfile (`bench.counting_bot`, with ours'
statements counted too) and prints the Python calls per job of each and their ratio: a
measure of work that does not drift with the machine's speed, as CPU time does, so a change
that saves 3 % shows in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import logging
import os
import signal
import sqlite3
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg

from bench.common import finish, percentile, table
from bench.takeover import count_trips, fresh_database, postgres_cpu, size, watcher
from tests.fakes.discord import Channel, FakeDiscord, Guild, InteractionRecord, Member
from tests.harness import build_world
from tests.pg import Cluster as PgCluster

logging.disable(logging.WARNING)
KEY = "bench-key"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parents[1]
SPREAD_PACE = 1.1  # a1111, spread: gaps between arrivals, in duration/servers
MODULES = {
    "ours": "tests.fakes.run_bot",
    "floor": "bench.floor_bot",
    "counted": "bench.counting_bot",  # ours, counting its SQLite statements (and calls)
    "counted_floor": "bench.counting_bot floor",  # the floor, counting its calls
}
COUNTED = ("counted", "counted_floor")
COUNTS = ("statements", "commits", "calls")  # what bench.counting_bot counts


def is_floor(bot: str) -> bool:
    return bot in ("floor", "counted_floor")


@dataclass(frozen=True)
class Deployment:
    """How ours runs: one process on SQLite (the default), or `processes` processes, one shard
    each, on a fresh database per run on the PostgreSQL `server` (its maintenance database's
    URL); `log` is that server's log when this benchmark started it (figures read from it)."""

    processes: int = 1
    server: str | None = None
    log: Path | None = None


@dataclass(frozen=True)
class Server:
    """A Discord server where members run /imagine, on shard `shard` of the bots'."""

    guild: Guild
    channel: Channel
    shard: int


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


@contextlib.asynccontextmanager
async def a1111_processes(count: int, duration: float) -> AsyncIterator[list[str]]:
    """`count` times `python -m a1111.emulator`, each on a free port; yields their base URLs."""
    processes: list[asyncio.subprocess.Process] = []
    try:
        for _ in range(count):
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    *("-m", "a1111.emulator", "--port", "0", "--duration", str(duration)),
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        urls = []
        for process in processes:
            assert process.stdout is not None
            line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
            urls.append(line.rsplit(" ", 1)[-1].strip())  # "... listening on http://..."
        yield urls
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            await process.wait()


async def a1111_stats(urls: list[str]) -> dict[str, Any]:
    """The A1111 emulators' counts, summed over servers: requests by endpoint, progress
    polls (per task and global), and the most jobs any one ran or queued at once."""
    requests: Counter[str] = Counter()
    polls = running = waiting = 0
    async with aiohttp.ClientSession() as session:
        for url in urls:
            async with session.get(f"{url}/_emulator/stats") as response:
                stats = await response.json()
            requests.update(stats["requests"])
            polls += sum(stats["polls_by_task"].values()) + stats["global_polls"]
            running = max(running, stats["max_concurrent"])
            waiting = max(waiting, stats["max_waiting"])
    return {"requests": requests, "polls": polls, "running": running, "waiting": waiting}


async def emulator_requests(omni_url: str) -> tuple[int, int]:
    """How many requests the emulator answered: /v2/progress ones, and all."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{omni_url}/_emulator/stats") as response,
    ):
        stats = await response.json()
    return sum(stats["polls_by_task"].values()), sum(stats["requests"].values())


def discord_servers(fake: FakeDiscord, count: int) -> list[Server]:
    """One server per bot process, each on that process's shard (one process: the harness's
    world, as before shards)."""
    if count == 1:
        world = build_world(fake)
        return [Server(world.guild, world.general, 0)]
    servers = []
    for shard in range(count):
        guild = fake.add_guild(f"server {shard}", shard=(shard, count))
        servers.append(Server(guild, fake.add_channel(guild, "general"), shard))
    return servers


def spread_members(servers: list[Server], n: int) -> list[tuple[Server, Member]]:
    """N members dealt over the servers in turn, so each process is sent its share of jobs
    (and, spread, its share of every second)."""
    dealt = [servers[i % len(servers)] for i in range(n)]
    return [(server, server.guild.add_member(f"m{i}")) for i, server in enumerate(dealt)]


async def imagine_all(
    fake: FakeDiscord, members: list[tuple[Server, Member]], gap: float
) -> list[InteractionRecord]:
    """Each member runs /imagine once, `gap` seconds after the one before."""

    async def one(index: int, server: Server, member: Member) -> InteractionRecord:
        await asyncio.sleep(index * gap)
        prompt = {"prompt": "a lighthouse"}
        return await fake.slash(server.guild, server.channel, member, "imagine", prompt)

    return await asyncio.gather(*(one(i, *pair) for i, pair in enumerate(members)))


async def wait_all(
    fake: FakeDiscord, records: list[InteractionRecord], finished: Any, what: str, timeout: float
) -> None:
    """Until every record is `finished`; else a TimeoutError showing one that is not."""
    try:
        await fake.wait_for(lambda: all(map(finished, records)), timeout=timeout)
    except TimeoutError:
        stuck = [r for r in records if not finished(r)]
        shown = stuck[0].said() if stuck[0].history else "(not acknowledged)"
        raise TimeoutError(
            f"{what}: {len(stuck)} jobs unfinished, e.g. {shown!r}"
            f" (calls {[(c.kind, c.status) for c in stuck[0].calls]})"
        ) from None


@contextlib.asynccontextmanager
async def database(bot: str, deployment: Deployment, tmp: Path) -> AsyncIterator[dict[str, str]]:
    """Ours' database settings for one run: a SQLite file in the run's folder, or a fresh
    database on the PostgreSQL server, dropped afterwards; none for the floor."""
    counts = {"STATEMENT_COUNTS": str(tmp / "counts.json")}  # read by bench.counting_bot
    if is_floor(bot):
        yield counts if bot in COUNTED else {}
        return
    if deployment.server is None:
        yield {"DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}", **counts}
        return
    url = await fresh_database(deployment.server, log_statements=deployment.log is not None)
    try:
        yield {"DATABASE_URL": url, **counts}
    finally:
        admin = await asyncpg.connect(deployment.server)
        try:
            await admin.execute(f"DROP DATABASE {urlsplit(url).path[1:]} WITH (FORCE)")
        finally:
            await admin.close()


async def no_cooldown(database_url: str, guild_ids: list[int]) -> None:
    """No cooldown in these servers: this measures load, not limits. Plain SQL, not
    storage.open_database, which would apply this tree's migrations under a bot run from
    another tree (`--ours-tree` at an older commit)."""
    rows = [(guild_id, guild_id) for guild_id in guild_ids]
    insert = "INSERT INTO limit_rules VALUES ({}, 'guild', {}, 'cooldown_seconds', 0)"
    if database_url.startswith("sqlite:///"):
        path = database_url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as db, db:
            db.executemany(insert.format("?", "?"), rows)
        return
    conn = await watcher(database_url)  # its statements are not logged, so not counted
    try:
        await conn.executemany(insert.format("$1", "$2"), rows)
    finally:
        await conn.close()


async def start_bot(
    bot: str,
    fake: FakeDiscord,
    server: Server,
    shards: int,
    n: int,
    ours_tree: Path,
    settings: dict[str, str],
) -> asyncio.subprocess.Process:
    """Ours (`bot.main` through `tests.fakes.run_bot`, or `bench.counting_bot`) or the floor,
    in its own process, pointed at the fake Discord with these settings (backend, database);
    with several shards, only `server`'s. Returns once that shard is connected."""
    settings = {
        "FAKE_DISCORD_URL": fake.base_url,
        "DISCORD_TOKEN": fake.bot_token,
        "OMNI_API_KEY": KEY,
        "DEV_GUILD_ID": str(server.guild.id),
        **settings,
    }
    if shards > 1:
        settings |= {
            "SHARD_COUNT": str(shards),
            "SHARD_IDS": str(server.shard),
            "INSTANCE_ID": f"bench-{server.shard}",
        }
        if not is_floor(bot):  # global commands: ours drops those of a dev server not its own
            del settings["DEV_GUILD_ID"]
    if not is_floor(bot):
        settings |= {
            "ACCOUNT_CREDIT": "1000000",
            "MAX_JOBS_IN_FLIGHT": str(max(8, n)),
            "MAX_QUEUE_LENGTH": "100000",
            "LOG_LEVEL": "ERROR",
        }
    tree = ROOT if is_floor(bot) else ours_tree
    if bot in COUNTED:  # by path: ours' tree need not hold it
        command = [str(ROOT / "bench" / "counting_bot.py"), *MODULES[bot].split()[1:]]
    else:
        command = ["-m", MODULES[bot]]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *command,
        cwd=tree,
        env={**os.environ, **settings},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await fake.wait_for_shards([server.shard], shards, timeout=60)
    return process


@contextlib.asynccontextmanager
async def bots(
    bot: str,
    fake: FakeDiscord,
    servers: list[Server],
    n: int,
    ours_tree: Path,
    settings: dict[str, str],
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """One process of `bot` per server, on its shard, stopped on the way out; for ours, the
    no-cooldown rule once all run (the first has applied the migrations)."""
    processes: list[asyncio.subprocess.Process] = []
    try:
        for server in servers:
            processes.append(
                await start_bot(bot, fake, server, len(servers), n, ours_tree, settings)
            )
        if not is_floor(bot):
            await no_cooldown(settings["DATABASE_URL"], [s.guild.id for s in servers])
        yield processes
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            await process.wait()


async def statement_counts(process: asyncio.subprocess.Process, path: Path, dump: int) -> Any:
    """Ask `bench.counting_bot` for its counts (SIGUSR1) and wait for its `dump`th answer."""
    process.send_signal(signal.SIGUSR1)
    for _ in range(500):
        counts = read_counts(path)
        if counts and counts["dumps"] >= dump:
            return counts
        await asyncio.sleep(0.01)
    raise TimeoutError("the counting bot did not write its counts")


def read_counts(path: Path) -> Any:
    with contextlib.suppress(FileNotFoundError, ValueError):
        return json.loads(path.read_text())
    return None


def peak_memory_mib(processes: list[asyncio.subprocess.Process]) -> float:
    """VmHWM, summed over the processes (each one's own peak)."""
    total = 0.0
    for process in processes:
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    return total


def cpu_seconds(processes: list[asyncio.subprocess.Process]) -> float:
    """utime + stime so far, summed over the processes."""
    total = 0
    for process in processes:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


@dataclass
class ServerWatch:
    """PostgreSQL's side of a window, when this benchmark started the cluster (`log` is its
    log, beside its data folder): what its log shows (`bench.takeover.count_trips`) and the
    CPU of its processes (`bench.takeover.postgres_cpu`)."""

    log: Path
    offset: int = 0
    cpu: float = 0.0

    def start(self) -> None:
        self.offset, self.cpu = size(self.log), postgres_cpu(self.log.parent / "data")

    def stop(self) -> dict[str, float]:
        cpu = postgres_cpu(self.log.parent / "data") - self.cpu
        end = size(self.log)
        trips = count_trips(self.log.read_bytes()[self.offset : end].decode("utf-8", "replace"))
        return {
            "pg_round_trips": trips.statements + trips.prepares,
            "pg_statements": trips.statements,
            "pg_transactions": trips.transactions,
            "pg_logged_ms": trips.server_ms,
            "pg_cpu": cpu,
        }


async def run_once(
    bot: str,
    n: int,
    arrival: str,
    duration: float,
    ours_tree: Path = ROOT,
    deployment: Deployment = Deployment(),
) -> dict[str, Any]:
    """One bot, N jobs, on a fresh fake Discord, emulator and database: the raw samples."""
    fake = FakeDiscord()
    await fake.start()
    servers = discord_servers(fake, deployment.processes)
    members = spread_members(servers, n)
    gap = duration / n if arrival == "spread" else 0.0
    watch = ServerWatch(deployment.log) if deployment.log else None
    counted: dict[str, int] = {}
    pg: dict[str, float] = {}
    async with contextlib.AsyncExitStack() as stack:
        omni_url = await stack.enter_async_context(emulator_process(duration))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        settings = await stack.enter_async_context(database(bot, deployment, tmp))
        settings["OMNI_BASE_URL"] = omni_url
        processes = await stack.enter_async_context(
            bots(bot, fake, servers, n, ours_tree, settings)
        )
        polls_before, requests_before = await emulator_requests(omni_url)
        if bot in COUNTED:
            before = await statement_counts(processes[0], tmp / "counts.json", 1)
        cpu_before = cpu_seconds(processes)
        if watch:
            watch.start()
        records = await imagine_all(fake, members, gap)
        await wait_all(fake, records, done, f"{bot}, {arrival} {n}", timeout=120 + n)
        cpu = cpu_seconds(processes) - cpu_before
        if watch:
            pg = watch.stop()
        memory = peak_memory_mib(processes)
        if bot in COUNTED:
            after = await statement_counts(processes[0], tmp / "counts.json", 2)
            counted = {k: after[k] - before[k] for k in COUNTS}
        polls, requests = await emulator_requests(omni_url)
        polls, requests = polls - polls_before, requests - requests_before
    await fake.stop()
    return {
        "acks": [(r.history[0].at - r.created) * 1000 for r in records],
        "overheads": [(r.latest.at - r.created - duration) * 1000 for r in records],  # type: ignore[union-attr]
        "edits": sum(len(r.history) - 1 for r in records),
        "polls": polls,
        "omni_requests": requests,
        "rate_limited_429s": fake.rate_limited_count,
        "cpu": cpu,
        "memory": memory,
        "jobs": n,
        **counted,
        **pg,
    }


def done(record: InteractionRecord) -> bool:
    return record.latest is not None and bool(record.latest.attachments)


async def run_once_a1111(
    bot: str, n: int, arrival: str, duration: float, servers: int, ours_tree: Path = ROOT
) -> dict[str, Any]:
    """One bot, N jobs, on a fresh fake Discord and `servers` fresh A1111 emulators: the raw
    samples. `spread` sends the N a little slower than the pool serves them (one every
    1.1 × duration/servers seconds), so a job normally finds a server idle; overheads are
    measured against an ideal pool (`ideal_ends`)."""
    fake = FakeDiscord()
    await fake.start()
    guilds = discord_servers(fake, 1)
    members = spread_members(guilds, n)
    gap = SPREAD_PACE * duration / servers if arrival == "spread" else 0.0
    counted: dict[str, int] = {}
    async with contextlib.AsyncExitStack() as stack:
        urls = await stack.enter_async_context(a1111_processes(servers, duration))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        settings = await stack.enter_async_context(database(bot, Deployment(), tmp))
        settings |= {"BACKEND": "a1111", "A1111_URLS": ",".join(urls)}
        processes = await stack.enter_async_context(bots(bot, fake, guilds, n, ours_tree, settings))
        before = await a1111_stats(urls)
        if bot in COUNTED:
            counts_before = await statement_counts(processes[0], tmp / "counts.json", 1)
        cpu_before = cpu_seconds(processes)
        records = await imagine_all(fake, members, gap)
        what = f"{bot}, a1111 {arrival} {n}"
        await wait_all(fake, records, delivered, what, timeout=120 + 3 * n)
        cpu = cpu_seconds(processes) - cpu_before
        memory = peak_memory_mib(processes)
        if bot in COUNTED:
            after_counts = await statement_counts(processes[0], tmp / "counts.json", 2)
            counted = {k: after_counts[k] - counts_before[k] for k in COUNTS}
        after = await a1111_stats(urls)
    await fake.stop()
    ends = sorted(r.latest.at for r in records)  # type: ignore[union-attr]
    ideal = ideal_ends([r.created for r in records], servers, duration)
    return {
        "acks": [(r.history[0].at - r.created) * 1000 for r in records],
        "overheads": [(end - best) * 1000 for end, best in zip(ends, ideal, strict=True)],
        "elapsed": ends[-1] - min(r.created for r in records),
        "edits": sum(len(r.history) - 1 for r in records),
        "uploads": sum(len(c.files) for r in records for c in r.calls if c.ok),
        "polls": after["polls"] - before["polls"],
        "requests": after["requests"] - before["requests"],
        "most_running": after["running"],
        "most_queued": after["waiting"],
        "rate_limited_429s": fake.rate_limited_count,
        "cpu": cpu,
        "memory": memory,
        "jobs": n,
        **counted,
    }


def delivered(record: InteractionRecord) -> bool:
    """The final edit is there (a progress edit may carry a live preview: not enough)."""
    latest = record.latest
    return latest is not None and bool(latest.attachments) and "Images ready" in latest.text


def ideal_ends(arrivals: list[float], servers: int, duration: float) -> list[float]:
    """When each job would end, earliest first, on an ideal pool: `servers` servers, each
    running one job at a time for exactly `duration` seconds, taking the jobs in order of
    arrival with no delay at all. A job's overhead is its end beyond its rank's ideal end
    (with enough servers: beyond arrival + duration, as in the Omniinfer mode)."""
    free = [float("-inf")] * servers
    ends = []
    for at in sorted(arrivals):
        end = max(at, heapq.heappop(free)) + duration
        heapq.heappush(free, end)
        ends.append(end)
    return ends


def summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    """One bot's figures over its rounds: percentiles of the pooled jobs, totals per job."""
    acks = [a for run in runs for a in run["acks"]]
    overheads = [o for run in runs for o in run["overheads"]]
    jobs = sum(run["jobs"] for run in runs)
    return {
        "ack_p50_ms": percentile(acks, 50),
        "ack_p99_ms": percentile(acks, 99),
        "overhead_p50_ms": percentile(overheads, 50),
        "overhead_p99_ms": percentile(overheads, 99),
        "edits_per_job": sum(run["edits"] for run in runs) / jobs,
        "polls_per_job": sum(run["polls"] for run in runs) / jobs,
        "omni_requests_per_job": sum(run["omni_requests"] for run in runs) / jobs,
        "rate_limited_429s": sum(run["rate_limited_429s"] for run in runs) / len(runs),
        "bot_cpu_ms_per_job": sum(run["cpu"] for run in runs) / jobs * 1000,
        "bot_peak_rss_mib": max(run["memory"] for run in runs),
    } | (summary_pg(runs) if "pg_cpu" in runs[0] else {})


def summary_pg(runs: list[dict[str, Any]]) -> dict[str, float]:
    """PostgreSQL's side per job (`ServerWatch`), and the bots' CPU with the server's: what
    ours costs in all, beside a floor that needs no database."""
    jobs = sum(run["jobs"] for run in runs)
    figures = {
        f"{key}_per_job": sum(run[key] for run in runs) / jobs
        for key in ("pg_round_trips", "pg_statements", "pg_transactions", "pg_logged_ms")
    }
    figures["pg_cpu_ms_per_job"] = sum(run["pg_cpu"] for run in runs) / jobs * 1000
    both = sum(run["cpu"] + run["pg_cpu"] for run in runs)
    figures["bot_and_pg_cpu_ms_per_job"] = both / jobs * 1000
    return figures


def summary_a1111(runs: list[dict[str, Any]]) -> dict[str, float]:
    """The A1111 mode's figures: as `summary`, with requests counted at the A1111 servers
    (also per endpoint), files uploaded to Discord, the time to serve all N, and the most
    jobs one server ever ran or queued at once."""
    jobs = sum(run["jobs"] for run in runs)
    figures = summary([{**run, "omni_requests": 0} for run in runs])
    del figures["omni_requests_per_job"]
    requests: Counter[str] = sum((run["requests"] for run in runs), Counter())
    figures |= {
        "server_requests_per_job": requests.total() / jobs,
        **{f"calls_{name}_per_job": count / jobs for name, count in sorted(requests.items())},
        "uploads_per_job": sum(run["uploads"] for run in runs) / jobs,
        "elapsed_s": statistics.fmean(run["elapsed"] for run in runs),
        "most_running_on_a_server": max(run["most_running"] for run in runs),
        "most_queued_on_a_server": max(run["most_queued"] for run in runs),
    }
    return figures


def cpu_ms_per_job(run: dict[str, Any]) -> float:
    return run["cpu"] / run["jobs"] * 1000


async def measure(
    args: argparse.Namespace, arrival: str, n: int, deployment: Deployment = Deployment()
) -> dict[str, Any]:
    """Rounds of each bot for one (arrival, N); the figures, keyed as `finish` saves them."""
    runs: dict[str, list[dict[str, Any]]] = {bot: [] for bot in args.bots}
    a1111 = args.backend == "a1111"

    async def one(bot: str) -> dict[str, Any]:
        if a1111:
            return await run_once_a1111(
                bot, n, arrival, args.duration, args.servers, args.ours_tree
            )
        return await run_once(bot, n, arrival, args.duration, args.ours_tree, deployment)

    for round_ in range(args.rounds):
        order = args.bots if round_ % 2 == 0 else args.bots[::-1]
        for bot in order:
            runs[bot].append(await one(bot))
    summarize = summary_a1111 if a1111 else summary
    figures = {bot: summarize(bot_runs) for bot, bot_runs in runs.items()}
    for calls in {key for values in figures.values() for key in values if key[:6] == "calls_"}:
        for values in figures.values():
            values.setdefault(calls, 0.0)  # an endpoint one bot never called
    result: dict[str, Any] = {}
    for bot, values in figures.items():
        prefix = "" if bot == "ours" else f"{bot}_"
        result |= {prefix + key: value for key, value in values.items()}
    if len(figures) == 2:
        ours, floor = figures["ours"], figures["floor"]
        result |= {
            f"ratio_{key}": ours[key] / floor[key]
            for key in ours
            if floor[key] and not key.startswith("pg_")  # the floor's cluster is idle
        }
        per_round = [
            cpu_ms_per_job(o) / cpu_ms_per_job(f)
            for o, f in zip(runs["ours"], runs["floor"], strict=True)
            if f["cpu"]
        ]
        if per_round:
            result["ratio_bot_cpu_ms_per_job_min"] = min(per_round)
            result["ratio_bot_cpu_ms_per_job_max"] = max(per_round)
    if args.count_statements or args.count_calls:
        counted = await one("counted")
        result["statements_per_job"] = counted["statements"] / n
        result["commits_per_job"] = counted["commits"] / n
    if args.count_calls:
        floor_calls = (await one("counted_floor"))["calls"] / n
        result |= {
            "python_calls_per_job": counted["calls"] / n,
            "floor_python_calls_per_job": floor_calls,
            "ratio_python_calls_per_job": counted["calls"] / n / floor_calls,
        }
    return result


ROWS = (
    "bot_cpu_ms_per_job",
    "ack_p50_ms",
    "ack_p99_ms",
    "overhead_p50_ms",
    "overhead_p99_ms",
    "edits_per_job",
    "polls_per_job",
    "omni_requests_per_job",
    "rate_limited_429s",
    "bot_peak_rss_mib",
)
PG_ROWS = (
    "pg_round_trips_per_job",
    "pg_statements_per_job",
    "pg_transactions_per_job",
    "pg_logged_ms_per_job",
    "pg_cpu_ms_per_job",
    "bot_and_pg_cpu_ms_per_job",
)


def a1111_rows(result: dict[str, Any]) -> tuple[str, ...]:
    """The A1111 mode's rows: the Omniinfer mode's, requests counted at the servers (and
    per endpoint), uploads, time to serve all, and what the servers saw at once."""
    rows = list(ROWS)
    at = rows.index("omni_requests_per_job")
    prefixes = ("calls_", "floor_calls_")
    named = sorted({key.removeprefix("floor_") for key in result if key.startswith(prefixes)})
    rows[at : at + 1] = ["server_requests_per_job", *named, "uploads_per_job"]
    extra = ["elapsed_s", "most_running_on_a_server", "most_queued_on_a_server"]
    return (*rows, *extra)


def side_by_side(result: dict[str, Any], keys: tuple[str, ...] = ROWS) -> str:
    rows = []
    for key in keys:
        spread = ""
        if f"ratio_{key}_min" in result:
            spread = f"{result[f'ratio_{key}_min']:.2f}–{result[f'ratio_{key}_max']:.2f}"
        rows.append(
            [
                key,
                result.get(key, ""),
                result.get(f"floor_{key}", ""),
                result.get(f"ratio_{key}", ""),
                spread,
            ]
        )
    if "python_calls_per_job" in result:
        key = "python_calls_per_job"
        rows.append([key, result[key], result[f"floor_{key}"], result[f"ratio_{key}"], ""])
    for key in ("statements_per_job", "commits_per_job"):
        if key in result:
            rows.append([key, result[key], "0", "", ""])
    return table(["figure", "ours", "floor", "ours/floor", "ratio min–max (rounds)"], rows)


@contextlib.contextmanager
def deployment(args: argparse.Namespace) -> Iterator[Deployment]:
    """Ours' deployment for the whole run: with PostgreSQL and no `--database-url`, a
    throwaway cluster (`tests.pg`), stopped and removed at the end."""
    if args.database == "sqlite":
        yield Deployment()
    elif args.database_url:
        yield Deployment(args.processes, args.database_url)
    else:
        cluster = PgCluster()
        cluster.start()
        try:
            yield Deployment(args.processes, cluster.url, cluster.dir / "log")
        finally:
            cluster.stop()


async def main(args: argparse.Namespace) -> None:
    figures: dict[str, Any] = {}
    if args.count_calls:
        os.environ["COUNT_CALLS"] = "1"  # read by bench.counting_bot in the counted rounds
    with deployment(args) as ours:
        for arrival in args.arrivals:
            for n in args.sizes:
                result = await measure(args, arrival, n, ours)
                if args.backend == "a1111":
                    ideal = ideal_ends([0.0] * n, args.servers, args.duration)[-1]
                    print(
                        f"\na1111, {arrival}, {n} jobs over {args.servers} servers of "
                        f"{args.duration:g} s (an ideal pool serves all in {ideal:g} s), "
                        f"{args.rounds} rounds"
                    )
                    print(side_by_side(result, a1111_rows(result)))
                    figures |= {f"a1111_{k}@{arrival}/{n}": v for k, v in result.items()}
                    continue
                prefix, where = "", ""
                if ours.server is not None:
                    prefix = f"pg{ours.processes}_"
                    where = f", {ours.processes} process(es) of each on PostgreSQL"
                print(f"\n{arrival}, {n} jobs, {args.rounds} rounds{where}")
                rows = ROWS + PG_ROWS if "pg_cpu_ms_per_job" in result else ROWS
                print(side_by_side(result, rows))
                figures |= {f"{prefix}{k}@{arrival}/{n}": v for k, v in result.items()}
    finish(args, figures)


def checked(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The arguments, the PostgreSQL mode's combinations checked."""
    args = parser.parse_args()
    if args.processes > 1 and args.database != "postgresql":
        parser.error("--processes above 1 needs --database postgresql (one shared database)")
    counting = args.count_statements or args.count_calls
    if args.database == "postgresql" and (args.backend != "omniinfer" or counting):
        parser.error(
            "--database postgresql goes with the Omniinfer backend, without --count-statements "
            "or --count-calls (its round trips are counted from the server log)"
        )
    return args


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200])
    parser.add_argument(
        "--arrivals", nargs="+", choices=["burst", "spread"], default=["burst", "spread"]
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each bot per shape")
    parser.add_argument("--bots", nargs="+", choices=["ours", "floor"], default=["ours", "floor"])
    parser.add_argument(
        "--count-statements",
        action="store_true",
        help="one more round of ours counting its SQLite statements and commits",
    )
    parser.add_argument(
        "--count-calls",
        action="store_true",
        help="one more round of each bot counting its Python calls (and ours' statements)",
    )
    parser.add_argument(
        "--ours-tree",
        type=Path,
        default=ROOT,
        help="run ours from this source tree (e.g. `git archive HEAD | tar -x -C DIR`)",
    )
    parser.add_argument("--duration", type=float, default=3.0, help="emulated seconds per job")
    parser.add_argument(
        "--backend",
        choices=["omniinfer", "a1111"],
        default="omniinfer",
        help="the Omniinfer emulator, or a pool of A1111 emulators (figures' keys a1111_...)",
    )
    parser.add_argument(
        "--servers", type=int, default=4, help="A1111 emulators in the pool (--backend a1111)"
    )
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="ours' database (postgresql: figures' keys pg<processes>_...)",
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="processes of each bot, one shard each"
    )
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL maintenance database URL (default: a throwaway cluster; only then "
        "are round trips and the server's CPU counted)",
    )
    parser.add_argument("--json")
    parser.add_argument("--compare")
    asyncio.run(main(checked(parser)))
