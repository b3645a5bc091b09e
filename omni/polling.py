"""When to ask `/v2/progress` next.

The official SDK polls every 0.5 s whatever the task is doing. Here the interval follows the
task: while it is queued the client backs off; while it runs the client trusts `eta_relative`,
sleeping a fraction of the time left and, once the end is near, waking just after the
predicted finish. That costs a few requests per job instead of two a second, and the final
state is still seen within a fraction of a second of it happening.
"""

from __future__ import annotations

from dataclasses import dataclass

from omni.models import Progress, TaskStatus


@dataclass(frozen=True)
class PollPolicy:
    first_delay: float = 1.0  # a task is never done sooner; a fast poll would only see "queued"
    min_interval: float = 0.25
    max_queued_interval: float = 5.0
    max_running_interval: float = 4.0
    eta_fraction: float = 0.5  # sleep this share of the time left: converges on the finish
    near_end: float = 2.0  # below this many seconds left, aim straight at the finish...
    finish_margin: float = 0.05  # ...plus a little, so the task is final when we look
    stale_growth: float = 1.5  # how fast to back off when no estimate is given
    stale_max_interval: float = 2.0

    def next_delay(self, progress: Progress, previous: float) -> float:
        eta = progress.eta_relative
        if progress.status is TaskStatus.QUEUED:
            if eta > 0:
                return self._clamp(eta * self.eta_fraction, self.max_queued_interval)
            return self._clamp(previous * self.stale_growth, self.max_queued_interval)
        if eta <= 0:
            # Running past its estimate: look again soon, but back off gently.
            return self._clamp(previous * self.stale_growth, self.stale_max_interval)
        if eta <= self.near_end:
            return self._clamp(eta + self.finish_margin, self.max_running_interval)
        return self._clamp(eta * self.eta_fraction, self.max_running_interval)

    def _clamp(self, value: float, ceiling: float) -> float:
        return max(self.min_interval, min(ceiling, value))


FIXED_HALF_SECOND = PollPolicy(
    first_delay=0.5,
    min_interval=0.5,
    max_queued_interval=0.5,
    max_running_interval=0.5,
    stale_max_interval=0.5,
    near_end=0.0,
)
"""The official SDK's schedule, kept for the benchmark's side-by-side comparison."""
