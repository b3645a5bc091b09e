"""A pool of A1111 servers through the whole bot: throughput, fairness, idle servers.

    python -m bench.a1111_pool [--servers 3] [--jobs 30] [--members 10] [--duration 1.0]
                               [--json out.json] [--compare previous.json]

The real bot (discord.py against the fake Discord, the real `JobRunner` and `A1111Backend`)
with `BACKEND=a1111` over emulated AUTOMATIC1111 servers, each running one generation at a
time for `--duration` seconds. Every member sends `jobs / members` one-image jobs at once, one
member after another (the worst order for fairness). Run twice: over one server, then over
`--servers` servers. Prints:

- throughput (jobs per second) and the pool's speed-up over one server (target ≥ 2.7× for 3);
- fairness: the order jobs started, and the "unfair starts": a start given to a member while
  another member already waiting (admitted: a row in the jobs table) had started fewer jobs;
  serving the fewest-started waiting member first makes none; the bot's rotation puts a
  member who joins the line behind those already in it, which makes a few at the start;
- idle-while-waiting: summed over servers, the seconds a server had nothing to do while a job
  was admitted but not yet started (servers sampled every 5 ms): the cost of learning that a
  job ended (progress polls) and of handing the next one over.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from a1111.emulator import Emulator
from bench.common import finish, table
from quota.limits import LimitField, Rule, ScopeKind
from quota.store import set_rule
from settings import Settings
from tests.fakes.discord import FakeDiscord
from tests.harness import Harness, build_world

logging.disable(logging.WARNING)

AUTH = "bench:pool-password"
TICK = 0.005


@dataclass
class PoolHarness(Harness):
    """The bot with `BACKEND=a1111` over `servers`."""

    servers: list[Emulator] = field(default_factory=list)

    def settings(self) -> Settings:
        base = Settings(
            discord_token=self.fake.bot_token,
            omni_api_key="",
            backend="a1111",
            a1111_urls=tuple(s.base_url for s in self.servers),
            a1111_auth=AUTH,
            database_url=self.database_url,
            dev_guild_id=self.world.guild.id,
            account_credit=1_000_000,
        )
        return replace(base, **self.settings_overrides)


@dataclass
class Trace:
    """What the sampler saw: when each A1111 task started, and how many servers sat idle."""

    starts: list[tuple[float, str]] = field(default_factory=list)  # (wall time, task id)
    idle: list[tuple[float, int]] = field(default_factory=list)  # (wall time, idle servers)


async def sample(servers: list[Emulator], trace: Trace) -> None:
    seen: set[str] = set()
    while True:
        await asyncio.sleep(TICK)
        now = time.time()
        for server in servers:
            task = server.current_task
            if task is not None and task not in seen:
                seen.add(task)
                trace.starts.append((now, task))
        trace.idle.append((now, sum(1 for s in servers if s.current_task is None)))


def idle_while_waiting(trace: Trace, jobs: list[tuple[float, float, int]]) -> float:
    """Server-seconds, summed over servers, spent idle while a job was admitted (its row in
    the jobs table) but not yet started on any server. `jobs`: (admitted, started, member)."""
    total = 0.0
    for (before, _), (now, idle) in itertools.pairwise(trace.idle):
        waiting = sum(1 for admitted, started, _ in jobs if admitted <= now < started)
        total += (now - before) * min(idle, waiting)
    return total


def unfair_starts(jobs: list[tuple[float, float, int]]) -> int:
    """Starts given to a member while another member, already waiting, had started fewer
    jobs: what a round-robin queue never does. `jobs`: (admitted, started, member). Starts
    seen in the same sample are one group (their order within it is unknown)."""
    counts: Counter[int] = Counter()
    unfair = 0
    by_time = sorted(jobs, key=lambda job: job[1])
    for started, group in itertools.groupby(by_time, key=lambda job: job[1]):
        starting = [member for _, _, member in group]
        waiting = {m for a, s, m in jobs if a <= started < s} - set(starting)
        for member in starting:
            if any(counts[m] < counts[member] for m in waiting):
                unfair += 1
        counts.update(starting)
    return unfair


async def run(servers_count: int, jobs: int, members: int, duration: float) -> dict[str, Any]:
    servers = [Emulator(duration=duration, auth=AUTH) for _ in range(servers_count)]
    for server in servers:
        await server.start()
    fake = FakeDiscord()
    await fake.start()
    per_member = jobs // members
    try:
        with tempfile.TemporaryDirectory() as tmp, fake.patch_discord():
            harness = PoolHarness(
                fake,
                servers[0],  # type: ignore[arg-type]
                build_world(fake),
                f"sqlite:///{tmp}/bench.db",
                servers=servers,
            )
            people = [harness.world.guild.add_member(f"m{i}") for i in range(members)]
            await harness.start_bot()
            guild = harness.world.guild.id
            async with harness.bot.services.db.transaction() as conn:
                for name, value in (
                    (LimitField.COOLDOWN_SECONDS, 0),
                    (LimitField.CONCURRENT_JOBS, per_member),
                    (LimitField.IMAGES_PER_HOUR, 1000),
                ):
                    await set_rule(conn, guild, Rule(ScopeKind.GUILD, guild, name, value))
            trace = Trace()
            sampler = asyncio.ensure_future(sample(servers, trace))
            started = time.perf_counter()
            records = []
            for person in people:
                for _ in range(per_member):
                    records.append(await harness.imagine(member=person))
            await asyncio.gather(*(harness.finished(r, timeout=300) for r in records))
            await fake.wait_for(lambda: all("Images ready" in r.latest.text for r in records))
            elapsed = time.perf_counter() - started
            sampler.cancel()
            rows = await harness.bot.services.db.fetch(
                "SELECT task_id, user_id, created_at FROM jobs"
            )
            start_of = {task: at for at, task in trace.starts}
            seen = [
                (row["created_at"], start_of[row["task_id"].rsplit(":", 1)[1]], row["user_id"])
                for row in rows
            ]
            names = {m.id: i for i, m in enumerate(people)}
            order = [names[member] for _, _, member in sorted(seen, key=lambda job: job[1])]
            print(f"start order, members by number ({servers_count} server(s)): {order}")
            await harness.stop_bot()
    finally:
        await fake.stop()
        for server in servers:
            await server.stop()
    admitted = [job[0] for job in seen]
    return {
        "elapsed_s": elapsed,
        "jobs_per_s": jobs / elapsed,
        "admitting_s": max(admitted) - min(admitted),
        "first_round_distinct_members": len(set(order[:members])),
        "unfair_starts": unfair_starts(seen),
        "idle_while_waiting_s": idle_while_waiting(trace, seen),
        "max_concurrent_per_server": max(s.stats.max_concurrent for s in servers),
        "max_queued_on_a_server": max(s.stats.max_waiting for s in servers),
        "jobs_per_server": [s.stats.jobs_finished for s in servers],
    }


async def main(args: argparse.Namespace) -> None:
    one = await run(1, args.jobs, args.members, args.duration)
    pool = await run(args.servers, args.jobs, args.members, args.duration)
    figures = {
        "jobs": args.jobs,
        "members": args.members,
        "servers": args.servers,
        "duration_s": args.duration,
        "one_server_jobs_per_s": one["jobs_per_s"],
        "pool_jobs_per_s": pool["jobs_per_s"],
        "speedup": pool["jobs_per_s"] / one["jobs_per_s"],
        "pool_elapsed_s": pool["elapsed_s"],
        "ideal_pool_elapsed_s": args.jobs / args.servers * args.duration,
        "admitting_s": pool["admitting_s"],
        "first_round_distinct_members": pool["first_round_distinct_members"],
        "unfair_starts": pool["unfair_starts"],
        "one_server_unfair_starts": one["unfair_starts"],
        "pool_idle_while_waiting_s": pool["idle_while_waiting_s"],
        "one_server_idle_while_waiting_s": one["idle_while_waiting_s"],
        "max_concurrent_per_server": max(
            one["max_concurrent_per_server"], pool["max_concurrent_per_server"]
        ),
        "max_queued_on_a_server": max(
            one["max_queued_on_a_server"], pool["max_queued_on_a_server"]
        ),
    }
    print(table(["figure", "value"], [[k, v] for k, v in figures.items()]))
    print(f"jobs per server (pool): {pool['jobs_per_server']}")
    finish(args, figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--json")
    parser.add_argument("--compare")
    asyncio.run(main(parser.parse_args()))
