"""Bounded, jittered exponential back-off shared by API calls and downloads."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all; the wait before try n+1 is uniform in [0, min(cap, base·2ⁿ)].

    Full jitter keeps many clients that failed together from retrying together.
    """

    attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 4.0

    def delay(self, failures: int) -> float:
        return random.uniform(0.0, min(self.max_delay, self.base_delay * 2**failures))
