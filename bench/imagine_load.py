"""N concurrent /imagine through the fake Discord against the emulator, end to end: ours
beside the floor (`bench.floor_bot`), interleaved in one run.

    python -m bench.imagine_load [--sizes 200] [--arrivals burst spread] [--rounds 2]
                                 [--bots ours floor] [--count-statements] [--duration 3]
                                 [--backend omniinfer|a1111] [--servers 4]
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

`--ours-tree DIR` runs ours from another checkout (the working tree by default), e.g. a
commit's clean snapshot while others edit this one. `--count-statements` adds one round of
ours run through `bench.counting_bot`, which counts the SQLite statements and commits over
the same window (that round's other figures are not used: the counting is not free).
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
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import finish, percentile, table
from tests.fakes.discord import FakeDiscord, InteractionRecord
from tests.harness import build_world

logging.disable(logging.WARNING)
KEY = "bench-key"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parents[1]
SPREAD_PACE = 1.1  # a1111, spread: gaps between arrivals, in duration/servers
MODULES = {
    "ours": "tests.fakes.run_bot",
    "floor": "bench.floor_bot",
    "counted": "bench.counting_bot",  # ours, counting its SQLite statements
}


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


async def start_bot(
    bot: str,
    fake: FakeDiscord,
    omni_url: str,
    tmp: Path,
    guild_id: int,
    n: int,
    ours_tree: Path,
    a1111_urls: list[str] | None = None,
) -> asyncio.subprocess.Process:
    """Ours (`bot.main` through `tests.fakes.run_bot`, or `bench.counting_bot`) or the floor,
    in its own process, pointed at the fake Discord (and at the Omniinfer emulator, or with
    `a1111_urls` at those A1111 servers); returns once it is connected."""
    settings = {
        "FAKE_DISCORD_URL": fake.base_url,
        "DISCORD_TOKEN": fake.bot_token,
        "OMNI_API_KEY": KEY,
        "OMNI_BASE_URL": omni_url,
        "DEV_GUILD_ID": str(guild_id),
    }
    if a1111_urls is not None:
        del settings["OMNI_BASE_URL"]
        settings |= {"BACKEND": "a1111", "A1111_URLS": ",".join(a1111_urls)}
    db = tmp / "bench.db"
    if bot != "floor":
        settings |= {
            "DATABASE_URL": f"sqlite:///{db}",
            "ACCOUNT_CREDIT": "1000000",
            "MAX_JOBS_IN_FLIGHT": str(max(8, n)),
            "MAX_QUEUE_LENGTH": "100000",
            "LOG_LEVEL": "ERROR",
            "STATEMENT_COUNTS": str(tmp / "counts.json"),
        }
    tree = ROOT if bot == "floor" else ours_tree
    if bot == "counted":  # by path: ours' tree need not hold it
        command = [str(ROOT / "bench" / "counting_bot.py")]
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
    await fake.wait_until_ready(timeout=60)
    if bot != "floor":
        # No cooldown: this measures load, not limits. Written with plain sqlite3, not
        # storage.open_database, which would apply this tree's migrations under a bot run
        # from another tree (`--ours-tree` at an older commit).
        with contextlib.closing(sqlite3.connect(db, timeout=10)) as database, database:
            database.execute(
                "INSERT INTO limit_rules VALUES (?, 'guild', ?, 'cooldown_seconds', 0)",
                (guild_id, guild_id),
            )
    return process


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


def peak_memory_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


async def run_once(
    bot: str, n: int, arrival: str, duration: float, ours_tree: Path = ROOT
) -> dict[str, Any]:
    """One bot, N jobs, on a fresh fake Discord and emulator: the raw samples."""
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

    counted: dict[str, int] = {}
    async with emulator_process(duration) as omni_url:
        with tempfile.TemporaryDirectory() as tmp:
            process = await start_bot(bot, fake, omni_url, Path(tmp), world.guild.id, n, ours_tree)
            counts_file = Path(tmp) / "counts.json"
            try:
                polls_before, requests_before = await emulator_requests(omni_url)
                if bot == "counted":
                    before = await statement_counts(process, counts_file, 1)
                cpu_before = cpu_seconds(process.pid)
                records = await asyncio.gather(*(member_runs_imagine(i) for i in range(n)))
                try:
                    await fake.wait_for(lambda: all(map(done, records)), timeout=120 + n)
                except TimeoutError:
                    stuck = [r for r in records if not done(r)]
                    shown = stuck[0].said() if stuck[0].history else "(not acknowledged)"
                    raise TimeoutError(
                        f"{bot}, {arrival} {n}: {len(stuck)} jobs unfinished, e.g. {shown!r}"
                        f" (calls {[(c.kind, c.status) for c in stuck[0].calls]})"
                    ) from None
                cpu = cpu_seconds(process.pid) - cpu_before
                memory = peak_memory_mib(process.pid)
                if bot == "counted":
                    after = await statement_counts(process, counts_file, 2)
                    counted = {k: after[k] - before[k] for k in ("statements", "commits")}
                polls, requests = await emulator_requests(omni_url)
                polls, requests = polls - polls_before, requests - requests_before
            finally:
                process.send_signal(signal.SIGTERM)
                await process.wait()
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
    world = build_world(fake)
    members = [world.guild.add_member(f"m{i}") for i in range(n)]
    gap = SPREAD_PACE * duration / servers if arrival == "spread" else 0.0

    async def member_runs_imagine(index: int) -> InteractionRecord:
        await asyncio.sleep(index * gap)
        return await fake.slash(
            world.guild, world.general, members[index], "imagine", {"prompt": "a lighthouse"}
        )

    counted: dict[str, int] = {}
    async with a1111_processes(servers, duration) as urls:
        with tempfile.TemporaryDirectory() as tmp:
            process = await start_bot(
                bot, fake, "", Path(tmp), world.guild.id, n, ours_tree, a1111_urls=urls
            )
            counts_file = Path(tmp) / "counts.json"
            try:
                before = await a1111_stats(urls)
                if bot == "counted":
                    counts_before = await statement_counts(process, counts_file, 1)
                cpu_before = cpu_seconds(process.pid)
                records = await asyncio.gather(*(member_runs_imagine(i) for i in range(n)))
                try:
                    await fake.wait_for(lambda: all(map(delivered, records)), timeout=120 + 3 * n)
                except TimeoutError:
                    stuck = [r for r in records if not delivered(r)]
                    shown = stuck[0].said() if stuck[0].history else "(not acknowledged)"
                    raise TimeoutError(
                        f"{bot}, a1111 {arrival} {n}: {len(stuck)} jobs unfinished, e.g. {shown!r}"
                        f" (calls {[(c.kind, c.status) for c in stuck[0].calls]})"
                    ) from None
                cpu = cpu_seconds(process.pid) - cpu_before
                memory = peak_memory_mib(process.pid)
                if bot == "counted":
                    after_counts = await statement_counts(process, counts_file, 2)
                    counted = {
                        k: after_counts[k] - counts_before[k] for k in ("statements", "commits")
                    }
                after = await a1111_stats(urls)
            finally:
                process.send_signal(signal.SIGTERM)
                await process.wait()
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
    }


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


async def measure(args: argparse.Namespace, arrival: str, n: int) -> dict[str, Any]:
    """Rounds of each bot for one (arrival, N); the figures, keyed as `finish` saves them."""
    runs: dict[str, list[dict[str, Any]]] = {bot: [] for bot in args.bots}
    a1111 = args.backend == "a1111"

    async def one(bot: str) -> dict[str, Any]:
        if a1111:
            return await run_once_a1111(
                bot, n, arrival, args.duration, args.servers, args.ours_tree
            )
        return await run_once(bot, n, arrival, args.duration, args.ours_tree)

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
        result |= {f"ratio_{key}": ours[key] / floor[key] for key in ours if floor[key]}
        per_round = [
            cpu_ms_per_job(o) / cpu_ms_per_job(f)
            for o, f in zip(runs["ours"], runs["floor"], strict=True)
            if f["cpu"]
        ]
        if per_round:
            result["ratio_bot_cpu_ms_per_job_min"] = min(per_round)
            result["ratio_bot_cpu_ms_per_job_max"] = max(per_round)
    if args.count_statements:
        counted = await one("counted")
        result["statements_per_job"] = counted["statements"] / n
        result["commits_per_job"] = counted["commits"] / n
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
    for key in ("statements_per_job", "commits_per_job"):
        if key in result:
            rows.append([key, result[key], "0", "", ""])
    return table(["figure", "ours", "floor", "ours/floor", "ratio min–max (rounds)"], rows)


async def main(args: argparse.Namespace) -> None:
    figures: dict[str, Any] = {}
    for arrival in args.arrivals:
        for n in args.sizes:
            result = await measure(args, arrival, n)
            if args.backend == "a1111":
                ideal = ideal_ends([0.0] * n, args.servers, args.duration)[-1]
                print(
                    f"\na1111, {arrival}, {n} jobs over {args.servers} servers of "
                    f"{args.duration:g} s (an ideal pool serves all in {ideal:g} s), "
                    f"{args.rounds} rounds"
                )
                print(side_by_side(result, a1111_rows(result)))
                figures |= {f"a1111_{key}@{arrival}/{n}": value for key, value in result.items()}
                continue
            print(f"\n{arrival}, {n} jobs, {args.rounds} rounds")
            print(side_by_side(result))
            figures |= {f"{key}@{arrival}/{n}": value for key, value in result.items()}
    finish(args, figures)


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
    parser.add_argument("--json")
    parser.add_argument("--compare")
    asyncio.run(main(parser.parse_args()))
