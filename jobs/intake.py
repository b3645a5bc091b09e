"""Requests between their acknowledgment in Discord and their admission.

`/imagine` acknowledges first (Discord allows 3 seconds) and admits after. A bot killed in
between would leave the member's reply on "thinking…" with no job to resume, so each request
is noted while its acknowledgment is on its way (not before: that would delay every
acknowledgment; a kill in the microseconds between the two is not covered) and forgotten once
admission has answered; the next start tells the members whose requests were left behind.
With several processes, each request is noted with the process that took it (its lease
owner, see jobs.leases), and only the requests of a process that is gone are answered.

This is the one module with SQL on `pending_interactions`.
"""

from __future__ import annotations

from dataclasses import dataclass

from clock import Clock
from jobs import store as job_store
from storage import Connection, Database

# How long a live process may take from noting a request to forgetting it. Rows older than
# this, noted before this process started, belong to a process that died (or another
# process's request that took far too long: telling that member to retry is harmless).
ABANDONED_AFTER = 5.0


@dataclass(frozen=True)
class PendingRequest:
    interaction_id: int
    application_id: int
    token: str
    token_expires_at: float


async def forget_in(conn: Connection, interaction_id: int) -> None:
    """Forget a noted request inside the caller's transaction: admission's, which answers it
    (a job, or a refusal), so the answer and the forgetting are one commit."""
    await conn.execute("DELETE FROM pending_interactions WHERE interaction_id = $1", interaction_id)


class Intake:
    def __init__(self, db: Database, clock: Clock, owner: str = "") -> None:
        self._db = db
        self._clock = clock
        self.owner = owner

    async def note(self, request: PendingRequest) -> None:
        await self._db.execute(
            """INSERT INTO pending_interactions
                   (interaction_id, application_id, token, token_expires_at, noted_at, owner)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            request.interaction_id,
            request.application_id,
            request.token,
            request.token_expires_at,
            self._clock(),
            self.owner,
        )

    async def forget(self, interaction_id: int) -> None:
        """Forget a request that ended before admission answered it (an error)."""
        await forget_in(self._db, interaction_id)

    async def abandoned(
        self, noted_before: float, *, started_at: float | None = None
    ) -> list[PendingRequest]:
        """Take the requests left behind that never became a job (a job stores its
        interaction's token), removing them so each is reported once: this process's own
        noted before it started (`started_at`, default `noted_before`: an earlier life under
        the same identity), and those of a process with no live lease noted before
        `noted_before`. Another live process's requests are left to it."""
        own_before = noted_before if started_at is None else min(noted_before, started_at)
        async with self._db.transaction() as conn:
            rows = await conn.fetch(
                """SELECT * FROM pending_interactions
                   WHERE (owner = $1 AND noted_at < $2)
                      OR (owner <> $1 AND noted_at < $3 AND owner NOT IN
                          (SELECT owner FROM leases WHERE expires_at > $4))
                   ORDER BY noted_at, interaction_id
                   FOR UPDATE SKIP LOCKED""",
                self.owner,
                own_before,
                noted_before,
                self._clock(),
            )
            admitted = await job_store.tokens_with_jobs(conn, [row["token"] for row in rows])
            for row in rows:
                await conn.execute(
                    "DELETE FROM pending_interactions WHERE interaction_id = $1",
                    row["interaction_id"],
                )
        return [
            PendingRequest(
                interaction_id=row["interaction_id"],
                application_id=row["application_id"],
                token=row["token"],
                token_expires_at=row["token_expires_at"],
            )
            for row in rows
            if row["token"] not in admitted
        ]
