"""How long the bot keeps what members typed: the rule, not the timer.

After `retention_days` days from a job's end, its prompt, negative prompt, start image and
interaction token are erased (`JobStore.erase_finished_texts`); the job row keeps its options,
seeds, message ids and counts, which the limits, the ledger and `/history` read. The privacy
cog runs `sweep` at start and every hour.
"""

from __future__ import annotations

from jobs.store import JobStore

DAY = 24 * 60 * 60.0
SWEEP_EVERY_HOURS = 1.0


def cutoff(now: float, retention_days: int) -> float:
    """Jobs that ended before this moment have outlived the retention period."""
    return now - retention_days * DAY


async def sweep(jobs: JobStore, retention_days: int) -> int:
    """Erase the texts of every job that ended more than `retention_days` ago; how many."""
    return await jobs.erase_finished_texts(before=cutoff(jobs.clock(), retention_days))
