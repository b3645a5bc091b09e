"""Jobs in the database: the one module with SQL on the `jobs` table.

State changes are compare-and-set, so two processes (or a resumed job and a late straggler)
can never both move the same job forward, and only the job's owner moves it: the process
that admitted it while it waits in line, the one that claimed it from the line after (or
took it over from a dead one: see jobs.leases). The module's
functions are the aggregates other parts read inside their own transactions (admission's
queue length, a member's or a server's use for the limits and allotments, the intake's check
for requests that became jobs).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
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
from quota import ledger
from storage import Connection, Database, Row

# The states of jobs not ended yet, as stored.
_UNFINISHED = tuple(
    state.value
    for state in (
        JobState.QUEUED,
        JobState.STARTING,
        JobState.SUBMITTING,
        JobState.SUBMITTED,
        JobState.DELIVERING,
    )
)
# Jobs whose images count against limits and allotments: not the released (refunded) ones.
_COUNTED = (Charge.RESERVED.value, Charge.COMMITTED.value)
_TOKENS_PER_QUERY = 500  # well under both databases' limit on parameters per statement


@dataclass(frozen=True)
class MemberActivity:
    """A member's jobs as the limits see them."""

    recent: tuple[tuple[float, int], ...]  # (created_at, images) of counted jobs, oldest first
    running: int  # unfinished jobs, in any server
    last_job_at: float | None  # the latest job in this server, counted or not (cooldown)


async def queued_count(conn: Connection) -> int:
    """Jobs waiting in line (every process's), for the "busy" refusal."""
    return await conn.fetchval("SELECT COUNT(*) FROM jobs WHERE state = $1", JobState.QUEUED.value)


async def member_activity(
    conn: Connection, guild_id: int, user_id: int, *, since: float
) -> MemberActivity:
    """One statement: the member's figures in a one-row table, joined to their counted jobs
    since `since` (none: one row of NULLs)."""
    rows = await conn.fetch(
        """SELECT member.last_job_at, member.running, recent.created_at, recent.cost
           FROM (SELECT (SELECT MAX(created_at) FROM jobs
                         WHERE user_id = $1 AND guild_id = $2) AS last_job_at,
                        (SELECT COUNT(*) FROM jobs
                         WHERE user_id = $1 AND state IN ($6, $7, $8, $9, $10)) AS running
                ) AS member
           LEFT JOIN jobs AS recent
             ON recent.user_id = $1 AND recent.guild_id = $2 AND recent.created_at > $3
            AND recent.charge IN ($4, $5)
           ORDER BY recent.created_at""",
        user_id,
        guild_id,
        since,
        *_COUNTED,
        *_UNFINISHED,
    )
    return MemberActivity(
        recent=tuple(
            (row["created_at"], row["cost"]) for row in rows if row["created_at"] is not None
        ),
        running=rows[0]["running"],
        last_job_at=rows[0]["last_job_at"],
    )


async def server_images_since(conn: Connection, guild_id: int, since: float) -> int:
    """What a server's counted jobs created at or after `since` cost, in images."""
    total = await conn.fetchval(
        """SELECT CAST(COALESCE(SUM(cost), 0) AS BIGINT) FROM jobs
           WHERE guild_id = $1 AND created_at >= $2 AND charge IN ($3, $4)""",
        guild_id,
        since,
        *_COUNTED,
    )
    return int(total)


async def tokens_with_jobs(conn: Connection, tokens: Sequence[str]) -> set[str]:
    """Which of these interaction tokens a stored job carries (the request was admitted)."""
    found: set[str] = set()
    for start in range(0, len(tokens), _TOKENS_PER_QUERY):
        chunk = tokens[start : start + _TOKENS_PER_QUERY]
        placeholders = ", ".join(f"${i}" for i in range(1, len(chunk) + 1))
        rows = await conn.fetch(
            f"SELECT interaction_token FROM jobs WHERE interaction_token IN ({placeholders})",
            *chunk,
        )
        found.update(row["interaction_token"] for row in rows)
    return found


_NEEDS_SOURCE = tuple(kind.value for kind in JobKind if kind.needs_source)


@dataclass(frozen=True)
class Claimed:
    """Jobs just claimed from the line, in their fair order, and why generation is paused
    (None when it is not), read in the same statement."""

    jobs: list[Job]
    paused_reason: str | None


class JobStore:
    """One process's view of the jobs: it inserts them as `owner` and moves only its own.

    A store made without an owner ('') is for tests and tools: its jobs belong to no live
    process, so any runner takes them over.
    """

    def __init__(self, db: Database, clock: Clock, owner: str = "") -> None:
        self.db = db
        self.clock = clock
        self.owner = owner

    async def insert(self, conn: Connection, job: Job) -> None:
        """Insert inside the caller's transaction (the one that reserved its credit).

        A queued job joins the line in its member's next turn: the round being served (the
        lowest turn of the jobs that can be claimed now: not one the backend refused, which
        waits with its old turn) for their first job in line, one round after their last
        for each further one, so `claim_next` serves members in turn.
        """
        o = job.origin
        await conn.execute(
            """INSERT INTO jobs (id, kind, state, charge, cost, guild_id, channel_id, user_id,
                   request, age_restricted, sandbox, parent_job_id, application_id,
                   interaction_token, token_expires_at, upload_limit, message_id,
                   upscale_index, grant_used, created_at, updated_at, owner, turn)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                       $16, $17, $18, $19, $20, $20, $21,
                       (SELECT MAX(turn) FROM (
                            SELECT COALESCE(MIN(turn), 0) AS turn FROM jobs
                            WHERE state = $3 AND not_before <= $20
                            UNION ALL
                            SELECT COALESCE(MAX(turn) + 1, 0) FROM jobs
                            WHERE state = $3 AND user_id = $8) AS turns))""",
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
            self.owner,
        )

    async def get(self, job_id: str) -> Job | None:
        row = await self.db.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
        return _job(row) if row else None

    async def unfinished(self, *, own: bool = False) -> list[Job]:
        """Jobs not ended yet, oldest first: every process's, or (`own`) this one's."""
        sql = "SELECT * FROM jobs WHERE state IN ($1, $2, $3, $4, $5)"
        args: list[Any] = list(_UNFINISHED)
        if own:
            sql += " AND owner = $6"
            args.append(self.owner)
        rows = await self.db.fetch(sql + " ORDER BY created_at", *args)
        return [_job(row) for row in rows]

    async def orphaned(self) -> list[tuple[str, Job]]:
        """Unfinished jobs whose owner holds no live lease (it died, or gave its work up),
        with that owner, oldest first."""
        rows = await self.db.fetch(
            """SELECT * FROM jobs WHERE state IN ($1, $2, $3, $4, $5) AND owner <> $6
                 AND owner NOT IN (SELECT owner FROM leases WHERE expires_at > $7)
               ORDER BY created_at""",
            *_UNFINISHED,
            self.owner,
            self.clock(),
        )
        return [(row["owner"], _job(row)) for row in rows]

    async def claim(self, job: Job, from_owner: str) -> bool:
        """Take `job` over from `from_owner`, if it is still theirs and in the state seen."""
        return bool(
            await self.db.execute(
                """UPDATE jobs SET owner = $4, updated_at = $5
                   WHERE id = $1 AND owner = $2 AND state = $3""",
                job.id,
                from_owner,
                job.state.value,
                self.owner,
                self.clock(),
            )
        )

    async def release_queued(self) -> int:
        """Give this process's queued jobs up, for the other processes to take at once."""
        return await self.db.execute(
            "UPDATE jobs SET owner = '', updated_at = $3 WHERE owner = $1 AND state = $2",
            self.owner,
            JobState.QUEUED.value,
            self.clock(),
        )

    async def claim_next(self, cap: int, *, limit: int, conn: Connection | None = None) -> Claimed:
        """Claim the next jobs in line (every process's) in the fair order, as many as fit
        under `cap` jobs at the backend (every process's counted) and at most `limit`. Each
        becomes this process's and moves on: to STARTING when it must first read its source
        image, else to SUBMITTING. A job put back in line is not claimed before its
        `not_before`.

        One exclusive statement (see `Database.fetch_exclusive`), or with `conn` one
        statement inside the caller's exclusive transaction (`transaction(exclusive=True)`):
        two processes never take the same job, nor together more places than the cap.
        """
        now = self.clock()
        kinds = ", ".join(f"${i}" for i in range(9, 9 + len(_NEEDS_SOURCE)))
        fetch = self.db.fetch_exclusive if conn is None else conn.fetch
        rows = await fetch(
            f"""UPDATE jobs SET state = CASE WHEN kind IN ({kinds}) THEN $1 ELSE $2 END,
                   owner = $3, updated_at = $4
               WHERE state = $5 AND id IN (
                   SELECT id FROM jobs WHERE state = $5 AND not_before <= $4
                   ORDER BY turn, created_at, id
                   LIMIT (SELECT CASE WHEN COUNT(*) >= $6 THEN 0
                                      WHEN $6 - COUNT(*) > $7 THEN $7
                                      ELSE $6 - COUNT(*) END
                          FROM jobs WHERE state IN ($1, $2, $8)))
               RETURNING *, {ledger.paused_reason_sql()} AS paused_reason""",
            JobState.STARTING.value,
            JobState.SUBMITTING.value,
            self.owner,
            now,
            JobState.QUEUED.value,
            cap,
            limit,
            JobState.SUBMITTED.value,
            *_NEEDS_SOURCE,
        )
        rows.sort(key=lambda row: (row["turn"], row["created_at"], row["id"]))
        paused = rows[0]["paused_reason"] if rows else None
        return Claimed([_job(row) for row in rows], paused)

    async def queue_order(self) -> list[str]:
        """The ids of the jobs in line (every process's), in the order they will be claimed."""
        rows = await self.db.fetch(
            "SELECT id FROM jobs WHERE state = $1 ORDER BY turn, created_at, id",
            JobState.QUEUED.value,
        )
        return [row["id"] for row in rows]

    async def requeue(self, job: Job, *, not_before: float) -> Job | None:
        """Put a job the backend refused back in line, keeping its turn, not to be claimed
        before `not_before`; counts the refusal. None if it had moved."""
        updated = await self.db.execute(
            """UPDATE jobs SET state = $4, not_before = $5, refusals = refusals + 1,
                   updated_at = $6
               WHERE id = $1 AND state = $2 AND owner = $3""",
            job.id,
            job.state.value,
            self.owner,
            JobState.QUEUED.value,
            not_before,
            self.clock(),
        )
        return job.with_(state=JobState.QUEUED, refusals=job.refusals + 1) if updated else None

    async def advance(
        self, job: Job, to: JobState, *, conn: Connection | None = None, **fields: Any
    ) -> Job | None:
        """Move `job` from the state it is in to `to`, setting `fields`; None if it had moved.

        Pass `conn` to make the change part of a larger transaction (the ledger's).
        """
        columns = {
            "state": to.value,
            "updated_at": self.clock(),
            **{k: _column_value(v) for k, v in fields.items()},
        }
        assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(columns, start=4))
        updated = await (conn or self.db).execute(
            f"UPDATE jobs SET {assignments} WHERE id = $1 AND state = $2 AND owner = $3",
            job.id,
            job.state.value,
            self.owner,
            *columns.values(),
        )
        if not updated:
            return None
        return job.with_(state=to, **fields)

    async def record_followups(self, job: Job, message_ids: tuple[int, ...]) -> bool:
        """Store the follow-up messages a delivery has posted so far, as it posts them, so a
        delivery taken up again (a restart, a takeover) does not post them twice. Only while
        the job is delivering, by its owner; True when stored."""
        return bool(
            await self.db.execute(
                """UPDATE jobs SET followup_message_ids = $4, updated_at = $5
                   WHERE id = $1 AND state = $2 AND owner = $3""",
                job.id,
                JobState.DELIVERING.value,
                self.owner,
                json.dumps(list(message_ids)),
                self.clock(),
            )
        )

    async def mark_deleted(self, job: Job) -> bool:
        """Record that the member (or a moderator) deleted the job's images, and erase its
        texts (see `erase_texts`); True once."""
        async with self.db.transaction() as conn:
            deleted = await conn.execute(
                "UPDATE jobs SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL",
                job.id,
                self.clock(),
            )
            if deleted:
                await self._erase(conn, job.id)
        return bool(deleted)

    async def erase_finished_texts(
        self,
        *,
        guild_id: int | None = None,
        user_id: int | None = None,
        before: float | None = None,
    ) -> int:
        """Erase the texts of ended jobs not erased yet: a member's in a server (`guild_id`,
        `user_id`), or every job that ended before `before`. Unfinished jobs are left alone
        (the runner still needs them). Returns how many jobs were erased."""
        sql = "SELECT id FROM jobs WHERE state IN ($1, $2) AND texts_erased_at IS NULL"
        args: list[Any] = [JobState.DONE.value, JobState.FAILED.value]
        if guild_id is not None:
            args.append(guild_id)
            sql += f" AND guild_id = ${len(args)}"
        if user_id is not None:
            args.append(user_id)
            sql += f" AND user_id = ${len(args)}"
        if before is not None:
            args.append(before)
            sql += f" AND finished_at < ${len(args)}"
        erased = 0
        for row in await self.db.fetch(sql, *args):
            async with self.db.transaction() as conn:
                erased += await self._erase(conn, row["id"])
        return erased

    async def _erase(self, conn: Connection, job_id: str) -> int:
        """Blank a job's prompt, negative prompt, start image and interaction token, keeping
        its options and counts; 1 if erased now, 0 if already erased."""
        text = await conn.fetchval(
            "SELECT request FROM jobs WHERE id = $1 AND texts_erased_at IS NULL", job_id
        )
        if text is None:
            return 0
        blank = replace(request_from_json(text), prompt="", negative_prompt="", init_image=None)
        return await conn.execute(
            """UPDATE jobs SET request = $2, interaction_token = NULL, token_expires_at = NULL,
                   texts_erased_at = $3
               WHERE id = $1 AND texts_erased_at IS NULL""",
            job_id,
            request_to_json(blank),
            self.clock(),
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


def _job(row: Row) -> Job:
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
        followup_message_ids=tuple(json.loads(row["followup_message_ids"] or "[]")),
        refusals=row["refusals"],
    )
