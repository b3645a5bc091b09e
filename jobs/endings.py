"""How a job ends: its state and its credit settled in one transaction, once, and then the
member told.

An ending is compared and set on the state this process saw, so a job another process has
moved meanwhile (or that has ended already) is left alone and nobody is told twice. Writing
an ending, and reading a job back to end it, wait out a database fault (a full disk, a
restart of the database) until they land: no job is stranded half ended.
"""

from __future__ import annotations

import asyncio
import logging

from clock import Clock
from jobs.failures import Failure
from jobs.model import Charge, Job, JobState
from jobs.reporting import Reporter
from jobs.store import JobStore
from quota import ledger
from quota.store import add_grant
from storage import Database, StorageError

log = logging.getLogger(__name__)

# Seconds before the first retry of a write that must land, and the longest wait (doubling).
SETTLE_RETRY = (0.5, 30.0)


class Endings:
    def __init__(self, db: Database, store: JobStore, reporter: Reporter, clock: Clock) -> None:
        self._db = db
        self._store = store
        self._reporter = reporter
        self._clock = clock

    async def stored(self, job_id: str) -> Job | None:
        """The job as stored, waiting out a storage fault (retried until it answers)."""
        delay, longest = SETTLE_RETRY
        while True:
            try:
                return await self._store.get(job_id)
            except StorageError as error:
                log.error("could not read job %s (%s); retrying", job_id, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)

    async def fail(self, job: Job, failure: Failure) -> None:
        """End `job` badly from whatever state it has reached meanwhile."""
        fresh = await self.stored(job.id)
        if fresh is not None and not fresh.state.is_final:
            await self.fail_as_seen(fresh, failure)

    async def fail_as_seen(self, job: Job, failure: Failure) -> None:
        """End `job` badly only if it is still in the state this process saw (another
        process may have taken it on), and tell the member."""
        settled = await self.settle(
            job,
            JobState.FAILED,
            spent=failure.spent,
            failure=failure.kind.value,
            failure_detail=failure.detail[:500],
        )
        if settled is not None:
            log.warning(
                "job %s failed: %s (task %s, spent %s): %s",
                job.id,
                failure.kind.value,
                job.task_id or "-",
                failure.spent,
                failure.detail[:300] or "-",
            )
            await self._reporter.fail(settled, failure)

    async def settle(
        self, job: Job, state: JobState, *, spent: bool, **fields: object
    ) -> Job | None:
        """End the job and its reservation together; None if it had already moved on.
        Retried through a database fault until it lands; only then may the member be told."""
        delay, longest = SETTLE_RETRY
        while True:
            try:
                return await self.settle_once(job, state, spent=spent, **fields)
            except StorageError as error:
                log.error("could not record the end of job %s (%s); retrying", job.id, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)

    async def settle_once(
        self, job: Job, state: JobState, *, spent: bool, **fields: object
    ) -> Job | None:
        """`settle`, tried once: `StorageError` on a database fault."""
        now = self._clock()
        try:
            async with self._db.transaction() as conn:
                # The account's row first, as admission takes it: on PostgreSQL a claim in
                # admission then never waits on this job's row while this waits on the account.
                await ledger.settle(conn, job.cost, spent=spent, now=now)
                moved = await self._store.advance(
                    job,
                    state,
                    conn=conn,
                    charge=Charge.COMMITTED if spent else Charge.RELEASED,
                    finished_at=now,
                    **fields,
                )
                if moved is None:
                    raise _AlreadyMoved  # the settle is rolled back with the transaction
                if job.grant_used and not spent:
                    origin = job.origin
                    await add_grant(conn, origin.guild_id or 0, origin.user_id, job.grant_used)
        except _AlreadyMoved:
            return None
        return moved

    async def pause(self, reason: str) -> None:
        """The backend says the account is out of credit: nobody generates until the
        operator states the new credit. The reporter is told when the pause is new."""
        async with self._db.transaction() as conn:
            paused = await ledger.pause(conn, reason, self._clock())
        if paused:
            await self._reporter.account_paused(reason)


class _AlreadyMoved(Exception):
    """The job had moved on (ended, or taken by another process) when it was to be settled."""
