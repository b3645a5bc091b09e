"""Reservation throughput and quota-check latency, on SQLite and PostgreSQL.

    python -m bench.reservations [--users 200] [--per-user 10] [--json out.json]
                                 [--compare previous.json]

Each reservation is a full admission (ban, blocklist, limits, usage, credit, insert the job)
in one transaction, as `/imagine` does it. Throughput is measured with one process and with
two processes sharing the database; latency is each admission's time with 200 users at once.
PostgreSQL is a throwaway local server started from the installed binaries (as in the tests).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from typing import Any

from bench.common import finish, percentile, table
from jobs.admission import Admission, Admitted, Ticket
from jobs.backend import Generation
from jobs.model import Origin
from jobs.store import JobStore
from quota import ledger
from quota.limits import LimitField, Rule, ScopeKind
from quota.store import set_rule
from storage import open_database
from tests.pg import Cluster, _admin

GUILD = 1


async def prepare(url: str) -> None:
    db = await open_database(url)
    async with db.transaction() as conn:
        await ledger.ensure_account(conn, 10**9, time.time())
        for field in LimitField:
            value = 4 if field is LimitField.MAX_IMAGES_PER_JOB else 0
            value = value or (20 if field is LimitField.CONCURRENT_JOBS else 10**4)
            if field is LimitField.COOLDOWN_SECONDS:
                value = 0
            await set_rule(conn, GUILD, Rule(ScopeKind.GUILD, GUILD, field, value))
    await db.close()


async def admit_all(url: str, users: int, per_user: int, first_user: int) -> list[float]:
    """Every user admits `per_user` jobs one after another, all users at once."""
    db = await open_database(url)
    admission = Admission(
        db, JobStore(db, time.time), time.time, max_queue_length=10**9, max_jobs_in_flight=8
    )
    latencies: list[float] = []

    async def user(user_id: int) -> None:
        for _ in range(per_user):
            started = time.perf_counter()
            # Asked now, served in turn: waiting behind the other users is part of the check's
            # time (an admission on SQLite runs without yielding once it starts).
            await asyncio.sleep(0)
            ticket = Ticket(Origin(GUILD, 2, user_id), Generation(prompt="bench"))
            outcome = await admission.admit(ticket)
            latencies.append((time.perf_counter() - started) * 1000)
            assert isinstance(outcome, Admitted), outcome
            # Settle at once so the concurrency limit never refuses: we measure admission.
            async with db.transaction() as conn:
                await conn.execute("UPDATE jobs SET state = 'done' WHERE id = $1", outcome.job.id)

    await asyncio.gather(*(user(first_user + u) for u in range(users)))
    await db.close()
    return latencies


def _process(url: str, users: int, per_user: int, first_user: int) -> None:
    asyncio.run(admit_all(url, users, per_user, first_user))


def two_processes(url: str, users: int, per_user: int) -> float:
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_process, args=(url, users // 2, per_user, 1000 + i * users))
        for i in range(2)
    ]
    started = time.perf_counter()
    for process in processes:
        process.start()
    for process in processes:
        process.join()
        assert process.exitcode == 0
    return users * per_user / (time.perf_counter() - started)


def measure(name: str, url_for: Any, users: int, per_user: int) -> dict[str, float]:
    one_url = url_for()
    asyncio.run(prepare(one_url))
    started = time.perf_counter()
    latencies = asyncio.run(admit_all(one_url, users, per_user, 1))
    one = users * per_user / (time.perf_counter() - started)
    two_url = url_for()
    asyncio.run(prepare(two_url))
    two = two_processes(two_url, users, per_user)
    return {
        "database": name,
        "reservations_per_s_1_process": one,
        "reservations_per_s_2_processes": two,
        "check_p50_ms": percentile(latencies, 50),
        "check_p99_ms": percentile(latencies, 99),
    }


def main(args: argparse.Namespace) -> None:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(1000))
        results.append(
            measure(
                "sqlite",
                lambda: f"sqlite:///{tmp}/bench{next(counter)}.db",
                args.users,
                args.per_user,
            )
        )
    cluster = Cluster()
    cluster.start()
    try:
        names = iter(range(1000))

        def pg_url() -> str:
            name = f"bench{next(names)}"
            _admin(cluster.url, f"CREATE DATABASE {name}")
            return cluster.url.rsplit("/", 1)[0] + f"/{name}"

        results.append(measure("postgresql", pg_url, args.users, args.per_user))
    finally:
        cluster.stop()
    headers = list(results[0])
    print(table(headers, [[r[h] for h in headers] for r in results]))
    figures = {f"{k}@{r['database']}": v for r in results for k, v in r.items() if k != "database"}
    finish(args, figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--per-user", type=int, default=10)
    parser.add_argument("--json")
    parser.add_argument("--compare")
    main(parser.parse_args())
