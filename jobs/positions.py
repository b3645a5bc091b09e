"""Places in line, shown to the members whose jobs this process admitted (or took over) and
that still wait.

The line is the database's, every process's jobs in it (jobs.store.queue_order). Places are
shown soon after a change (POSITIONS_SETTLE later, so a burst of changes is read once), then
at most every POSITIONS_EVERY seconds: each look reads the whole line once. A job claimed as
soon as it is admitted is never shown waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Container

from jobs.model import Job
from jobs.reporting import Reporter, Stage, Update
from jobs.store import JobStore
from storage import StorageError

log = logging.getLogger(__name__)

POSITIONS_SETTLE, POSITIONS_EVERY = 0.05, 1.0


class PlacesInLine:
    """Shows the jobs in `waiting` (the runner's: job id → job, changed by both) their place.
    A job that left the line meanwhile, claimed by another process, is dropped from
    `waiting` and forgotten by the reporter, unless it runs here (`running`)."""

    def __init__(
        self,
        store: JobStore,
        reporter: Reporter,
        waiting: dict[str, Job],
        running: Container[str],
    ) -> None:
        self._store = store
        self._reporter = reporter
        self._waiting = waiting
        self._running = running
        self._stale = asyncio.Event()

    def changed(self) -> None:
        """The line may have changed: show the places again soon."""
        self._stale.set()

    async def show(self) -> None:
        """Show the places whenever they may have changed; runs until cancelled."""
        while True:
            await self._stale.wait()
            await asyncio.sleep(POSITIONS_SETTLE)
            self._stale.clear()
            seen = dict(self._waiting)  # a job admitted during the read is shown next time
            if not seen:
                continue
            try:
                order = await self._store.queue_order()
            except StorageError as error:
                log.error("could not read the queue (%s)", error)
                self._stale.set()
            else:
                self._show(order, seen)
            await asyncio.sleep(POSITIONS_EVERY)

    def _show(self, order: list[str], seen: dict[str, Job]) -> None:
        for position, job_id in enumerate(order, start=1):
            seen.pop(job_id, None)
            job = self._waiting.get(job_id)  # not claimed here during the read
            if job is not None:
                self._reporter.update(job, Update(Stage.WAITING, queue_position=position))
        for gone in seen:  # claimed by another process meanwhile, or ended
            if self._waiting.pop(gone, None) is not None and gone not in self._running:
                self._reporter.forget(gone)
