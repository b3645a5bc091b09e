"""Admitting a job: every rule checked and the credit reserved in one transaction.

Nothing is reserved for a refused job, and two requests racing for the last images cannot
both get them: the account row is locked for the length of the transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from clock import Clock
from jobs.model import Charge, Job, JobKind, JobState, Origin
from jobs.store import JobStore
from omni import Txt2ImgRequest
from quota import ledger
from quota import store as quota_store
from quota.blocklist import blocked_word
from quota.limits import Refusal, check, resolve
from storage import Database

# A rough figure for "busy, try again in ...": how long one job holds a slot at Omniinfer.
TYPICAL_JOB_SECONDS = 20.0


@dataclass(frozen=True)
class Ticket:
    """What the Discord layer asks for on a member's behalf."""

    origin: Origin
    request: Txt2ImgRequest
    role_ids: frozenset[int] = frozenset()
    kind: JobKind = JobKind.TXT2IMG
    sandbox: bool = False
    parent_job_id: str | None = None
    message_id: int | None = None  # the reply that will show the job
    upscale_index: int | None = None


@dataclass(frozen=True)
class Admitted:
    job: Job


@dataclass(frozen=True)
class Refused:
    refusal: Refusal


class Admission:
    def __init__(
        self,
        db: Database,
        jobs: JobStore,
        clock: Clock,
        *,
        max_queue_length: int,
        max_jobs_in_flight: int,
    ) -> None:
        self._db = db
        self._jobs = jobs
        self._clock = clock
        self._max_queue_length = max_queue_length
        self._max_jobs_in_flight = max_jobs_in_flight

    async def admit(self, ticket: Ticket) -> Admitted | Refused:
        now = self._clock()
        origin = ticket.origin
        guild_id = origin.guild_id or 0
        cost = ticket.request.image_count
        async with self._db.transaction() as conn:
            balance = await ledger.lock_balance(conn, self._db.dialect)
            if balance.paused_reason:
                return Refused(
                    Refusal(
                        "paused",
                        "image generation is paused: the bot's Omniinfer account is out of "
                        "credit. The moderators have been told.",
                    )
                )
            if await quota_store.is_banned(conn, guild_id, origin.user_id):
                return Refused(
                    Refusal("banned", "a moderator has turned off image generation for you")
                )
            text = f"{ticket.request.prompt}\n{ticket.request.negative_prompt}"
            word = blocked_word(text, await quota_store.blocklist(conn, guild_id))
            if word:
                return Refused(
                    Refusal("blocklist", f"this server does not allow “{word}” in prompts")
                )
            queued = await conn.fetchval(
                "SELECT COUNT(*) FROM jobs WHERE state = $1", JobState.QUEUED.value
            )
            if queued >= self._max_queue_length:
                wait = queued / self._max_jobs_in_flight * TYPICAL_JOB_SECONDS
                return Refused(Refusal("busy", "the bot is busy right now, try again", now + wait))
            limits = resolve(
                await quota_store.rules_for_guild(conn, guild_id),
                guild_id=guild_id,
                user_id=origin.user_id,
                role_ids=set(ticket.role_ids),
            )
            usage = await quota_store.usage(conn, guild_id, origin.user_id, now)
            verdict = check(limits, usage, cost, now)
            if verdict.refusal:
                return Refused(verdict.refusal)
            if cost > balance.available:
                return Refused(
                    Refusal(
                        "credit",
                        f"the server's image budget has {max(balance.available, 0)} image(s) "
                        f"left and this job needs {cost}; ask a moderator",
                    )
                )
            if verdict.grant_used:
                await quota_store.use_grant(conn, guild_id, origin.user_id, verdict.grant_used)
            await ledger.reserve(conn, cost, now)
            job = Job(
                id=uuid.uuid4().hex,
                kind=ticket.kind,
                state=JobState.QUEUED,
                charge=Charge.RESERVED,
                cost=cost,
                origin=origin,
                request=ticket.request,
                sandbox=ticket.sandbox,
                parent_job_id=ticket.parent_job_id,
                message_id=ticket.message_id,
                upscale_index=ticket.upscale_index,
                grant_used=verdict.grant_used,
                created_at=now,
            )
            await self._jobs.insert(conn, job)
        return Admitted(job)
