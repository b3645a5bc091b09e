"""Per-server allotments: the operator caps what one server's members may draw from the
account's credit in a calendar day or month (UTC).

The account's credit is shared by every server the bot is in; an allotment keeps one busy
server from spending what the others were meant to get. A server without one draws on the
account like before. Use is what the server's counted jobs (reserved or spent, not refunded)
cost since the period began, so a job that fails uncharged gives its images back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

MAX_ALLOTMENT = 10**9


class AllotmentPeriod(StrEnum):
    DAY = "day"
    MONTH = "month"


@dataclass(frozen=True)
class Allotment:
    images: int
    period: AllotmentPeriod


def period_bounds(period: AllotmentPeriod, now: float) -> tuple[float, float]:
    """The calendar period (UTC) that `now` falls in: (its start, the next one's start)."""
    moment = datetime.fromtimestamp(now, UTC)
    if period is AllotmentPeriod.DAY:
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        end = datetime.fromtimestamp(start.timestamp() + 86_400, UTC)
    else:
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        if start.month == 12:
            end = start.replace(year=start.year + 1, month=1)
        else:
            end = start.replace(month=start.month + 1)
    return start.timestamp(), end.timestamp()


@dataclass(frozen=True)
class AllotmentUse:
    """A server's allotment and what its members have drawn this period."""

    allotment: Allotment
    used: int
    resets_at: float  # when the next period begins

    @property
    def left(self) -> int:
        return max(self.allotment.images - self.used, 0)

    def covers(self, images: int) -> bool:
        return images <= self.left
