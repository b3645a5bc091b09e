"""Jobs in the database. State changes are compare-and-set, so two processes (or a resumed
job and a late straggler) can never both move the same job forward."""

from __future__ import annotations

import json
from typing import Any

from clock import Clock
from jobs.model import (
    Charge,
    Job,
    JobKind,
    JobResult,
    JobState,
    Origin,
    request_from_json,
    request_to_json,
)
from storage import Database

_UNFINISHED = (JobState.QUEUED, JobState.SUBMITTING, JobState.SUBMITTED, JobState.DELIVERING)


class JobStore:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def insert(self, conn: Any, job: Job) -> None:
        """Insert inside the caller's transaction (the one that reserved its credit)."""
        o = job.origin
        await conn.execute(
            """INSERT INTO jobs (id, kind, state, charge, cost, guild_id, channel_id, user_id,
                   request, age_restricted, sandbox, parent_job_id, application_id,
                   interaction_token, token_expires_at, upload_limit, message_id,
                   upscale_index, grant_used, created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                       $16, $17, $18, $19, $20, $20)""",
            job.id,
            job.kind.value,
            job.state.value,
            job.charge.value,
            job.cost,
            o.guild_id,
            o.channel_id,
            o.user_id,
            request_to_json(job.request),
            int(o.age_restricted),
            int(job.sandbox),
            job.parent_job_id,
            o.application_id,
            o.interaction_token,
            o.token_expires_at,
            o.upload_limit,
            job.message_id,
            job.upscale_index,
            job.grant_used,
            job.created_at,
        )

    async def get(self, job_id: str) -> Job | None:
        row = await self.db.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
        return _job(row) if row else None

    async def unfinished(self) -> list[Job]:
        rows = await self.db.fetch(
            "SELECT * FROM jobs WHERE state IN ($1, $2, $3, $4) ORDER BY created_at",
            *(s.value for s in _UNFINISHED),
        )
        return [_job(row) for row in rows]

    async def advance(
        self, job: Job, to: JobState, *, conn: Any = None, **fields: Any
    ) -> Job | None:
        """Move `job` from the state it is in to `to`, setting `fields`; None if it had moved.

        Pass `conn` to make the change part of a larger transaction (the ledger's).
        """
        columns = {
            "state": to.value,
            "updated_at": self.clock(),
            **{k: _column_value(v) for k, v in fields.items()},
        }
        assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(columns, start=3))
        updated = await (conn or self.db).execute(
            f"UPDATE jobs SET {assignments} WHERE id = $1 AND state = $2",
            job.id,
            job.state.value,
            *columns.values(),
        )
        if not updated:
            return None
        return job.with_(state=to, **fields)

    async def mark_deleted(self, job: Job) -> bool:
        """Record that the member (or a moderator) deleted the job's images; True once."""
        return bool(
            await self.db.execute(
                "UPDATE jobs SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL",
                job.id,
                self.clock(),
            )
        )

    async def history(
        self, guild_id: int, user_id: int, *, limit: int, offset: int = 0
    ) -> list[Job]:
        """A member's jobs in a guild, newest first."""
        rows = await self.db.fetch(
            """SELECT * FROM jobs WHERE guild_id = $1 AND user_id = $2
               ORDER BY created_at DESC LIMIT $3 OFFSET $4""",
            guild_id,
            user_id,
            limit,
            offset,
        )
        return [_job(row) for row in rows]

    async def count_for(self, guild_id: int, user_id: int) -> int:
        return await self.db.fetchval(
            "SELECT COUNT(*) FROM jobs WHERE guild_id = $1 AND user_id = $2", guild_id, user_id
        )


def _column_value(value: Any) -> Any:
    if isinstance(value, JobResult):
        return value.to_json()
    if isinstance(value, tuple):
        return json.dumps(value)
    if isinstance(value, JobState | Charge):
        return value.value
    return value


def _job(row: Any) -> Job:
    return Job(
        id=row["id"],
        kind=JobKind(row["kind"]),
        state=JobState(row["state"]),
        charge=Charge(row["charge"]),
        cost=row["cost"],
        origin=Origin(
            guild_id=row["guild_id"],
            channel_id=row["channel_id"],
            user_id=row["user_id"],
            application_id=row["application_id"],
            interaction_token=row["interaction_token"],
            token_expires_at=row["token_expires_at"],
            age_restricted=bool(row["age_restricted"]),
            upload_limit=row["upload_limit"],
        ),
        request=request_from_json(row["request"]),
        sandbox=bool(row["sandbox"]),
        parent_job_id=row["parent_job_id"],
        task_id=row["task_id"],
        message_id=row["message_id"],
        result=JobResult.from_json(row["result"]),
        failure=row["failure"],
        failure_detail=row["failure_detail"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        deleted_at=row["deleted_at"],
        upscale_index=row["upscale_index"],
        grant_used=row["grant_used"],
        more_message_ids=tuple(json.loads(row["more_message_ids"] or "[]")),
    )
