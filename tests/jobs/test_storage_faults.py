"""The database going away in the middle of a job strands nothing: the job waits for it,
carries on from the state it stored, and the member is told once the ending is written."""

from __future__ import annotations

import asyncio
import os

import pytest

from quota import ledger
from tests.pg import Cluster, ClusterUnavailable


@pytest.fixture
def cluster():
    try:
        server = Cluster()
        server.start()
    except ClusterUnavailable as error:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required (REQUIRE_POSTGRES=1): {error}", pytrace=False)
        pytest.skip(f"PostgreSQL not available: {error}")
    yield server
    server.stop()


async def test_a_database_restart_mid_job_delays_the_ending_but_loses_nothing(harness, cluster):
    await harness.stop_bot()
    harness.database_url = cluster.url
    await harness.start_bot()
    harness.emulator.duration = 2.0
    record = await harness.imagine()
    await harness.fake.wait_for(lambda: harness.emulator.stats.tasks_created == 1)

    await asyncio.to_thread(cluster.pause)  # the task finishes at the backend meanwhile
    final_at = harness.emulator.task_final_time(next(iter(harness.emulator._tasks)))
    # Let the task finish at the backend while the database is away (an emulator time, not
    # a synchronisation with the bot: the bot is meant to be stuck waiting here).
    await asyncio.sleep(max(0.0, final_at + 1.5 - asyncio.get_running_loop().time()))
    assert record.latest is not None and "Images ready" not in record.latest.text
    await asyncio.to_thread(cluster.resume)

    await harness.finished(record, timeout=60)
    assert "Images ready" in record.latest.text
    assert harness.emulator.stats.tasks_created == 1  # followed again, never resubmitted
    await harness.bot.services.runner.wait_idle()
    balance = await ledger.balance(harness.bot.services.db)
    assert (balance.spent, balance.reserved) == (1, 0)
    assert await harness.bot.services.jobs.unfinished() == []
