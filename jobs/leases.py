"""Which bot processes are alive: each keeps a lease row that it renews every few seconds.

A job (and a noted request) belongs to the process that took it. A process whose lease has
expired is taken for dead, and a live process takes its work over; a process that restarts
under the same identity finds its own work at once. Identities must be unique among the
processes sharing a database (`INSTANCE_ID`, or the shard ids, or the host name).

This is the one module with SQL on `leases`.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from clock import Clock
from storage import Database

# A lease lasts this long unless renewed; renewals come every RENEW_EVERY seconds, so a
# process must miss several in a row (a dead process, a frozen one) before it loses its work.
# Settings LEASE_SECONDS and LEASE_RENEW_SECONDS change them: a shorter lease means a quicker
# takeover after a crash, and a greater risk of taking the work of a process that only froze.
LEASE_SECONDS = 20.0
RENEW_EVERY = 2.0


def default_identity(shard_ids: Sequence[int] | None, hostname: str | None = None) -> str:
    """A name that stays the same across restarts of the same process: its shards, else its
    host (one bot per host)."""
    if shard_ids:
        return "shards-" + "-".join(str(i) for i in sorted(shard_ids))
    return f"{hostname or socket.gethostname()}-bot"


class Lease:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        owner: str,
        *,
        seconds: float = LEASE_SECONDS,
        renew_every: float = RENEW_EVERY,
    ) -> None:
        self._db = db
        self._clock = clock
        self.owner = owner
        self.seconds = seconds
        self.renew_every = renew_every

    async def renew(self) -> None:
        """Say this process is alive for another `seconds` (taking the lease if absent)."""
        now = self._clock()
        async with self._db.transaction() as conn:
            renewed = await conn.execute(
                "UPDATE leases SET expires_at = $2 WHERE owner = $1",
                self.owner,
                now + self.seconds,
            )
            if not renewed:
                await conn.execute(
                    "INSERT INTO leases (owner, started_at, expires_at) VALUES ($1, $2, $3)",
                    self.owner,
                    now,
                    now + self.seconds,
                )

    async def give_up(self) -> None:
        """End the lease now: the other processes take this one's work at their next sweep."""
        await self._db.execute("DELETE FROM leases WHERE owner = $1", self.owner)

    async def others_alive(self) -> bool:
        """Whether another process holds a lease that has not expired."""
        count = await self._db.fetchval(
            "SELECT COUNT(*) FROM leases WHERE owner <> $1 AND expires_at > $2",
            self.owner,
            self._clock(),
        )
        return bool(count)
