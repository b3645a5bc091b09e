"""A queue that serves members round robin, so one member's burst cannot starve the rest."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator

from jobs.model import Job


class FairQueue:
    def __init__(self) -> None:
        self._by_member: OrderedDict[int, deque[Job]] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(jobs) for jobs in self._by_member.values())

    def push(self, job: Job) -> None:
        self._by_member.setdefault(job.origin.user_id, deque()).append(job)

    def pop(self) -> Job | None:
        """The next member in turn gives up their oldest job, then goes to the back."""
        if not self._by_member:
            return None
        member, jobs = self._by_member.popitem(last=False)
        job = jobs.popleft()
        if jobs:
            self._by_member[member] = jobs
        return job

    def drain(self) -> list[Job]:
        jobs = list(self.in_order())
        self._by_member.clear()
        return jobs

    def in_order(self) -> Iterator[Job]:
        """Jobs in the order `pop` would return them."""
        queues = [list(jobs) for jobs in self._by_member.values()]
        depth = 0
        while True:
            row = [jobs[depth] for jobs in queues if depth < len(jobs)]
            if not row:
                return
            yield from row
            depth += 1
