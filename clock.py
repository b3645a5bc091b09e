"""Time as an injectable dependency, so limits and cooldowns are tested without sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
"""Returns the current time as epoch seconds."""

system_clock: Clock = time.time
