"""Requests between their acknowledgment in Discord and their admission.

`/imagine` acknowledges first (Discord allows 3 seconds) and admits after. A bot killed in
between would leave the member's reply on "thinking…" with no job to resume, so each request
is noted while its acknowledgment is on its way (not before: that would delay every
acknowledgment; a kill in the microseconds between the two is not covered) and forgotten once
admission has answered; the next start tells the members whose requests were left behind.
"""

from __future__ import annotations

from dataclasses import dataclass

from clock import Clock
from storage import Database

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


class Intake:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def note(self, request: PendingRequest) -> None:
        await self._db.execute(
            """INSERT INTO pending_interactions
                   (interaction_id, application_id, token, token_expires_at, noted_at)
               VALUES ($1, $2, $3, $4, $5)""",
            request.interaction_id,
            request.application_id,
            request.token,
            request.token_expires_at,
            self._clock(),
        )

    async def forget(self, interaction_id: int) -> None:
        await self._db.execute(
            "DELETE FROM pending_interactions WHERE interaction_id = $1", interaction_id
        )

    async def abandoned(self, noted_before: float) -> list[PendingRequest]:
        """Take the requests noted before `noted_before` that never became a job (a job
        stores its interaction's token), removing them so each is reported once."""
        async with self._db.transaction() as conn:
            rows = await conn.fetch(
                """SELECT * FROM pending_interactions p WHERE noted_at < $1
                   AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.interaction_token = p.token)""",
                noted_before,
            )
            await conn.execute("DELETE FROM pending_interactions WHERE noted_at < $1", noted_before)
        return [
            PendingRequest(
                interaction_id=row["interaction_id"],
                application_id=row["application_id"],
                token=row["token"],
                token_expires_at=row["token_expires_at"],
            )
            for row in rows
        ]
