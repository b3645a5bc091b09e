"""Admitting a job: every rule checked and the credit reserved in one transaction.

Nothing is reserved for a refused job, and two requests racing for the last images cannot
both get them: the account row is locked for the length of the transaction. A refusal is
data (which rule, with the numbers a sentence needs); the sentences are the presentation
layer's (`cogs/utils/wording.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from clock import Clock
from jobs import intake
from jobs import store as job_store
from jobs.backend import Generation
from jobs.model import Charge, Job, JobKind, JobState, Origin
from jobs.store import Claimed, JobStore
from quota import ledger
from quota import store as quota_store
from quota.allotments import AllotmentUse
from quota.blocklist import blocked_word
from quota.limits import LimitReached, check, resolve
from storage import Connection, Database

# A rough figure for "busy, try again in ...": how long one job holds a slot at the backend.
TYPICAL_JOB_SECONDS = 20.0


@dataclass(frozen=True)
class Ticket:
    """What the Discord layer asks for on a member's behalf."""

    origin: Origin
    request: Generation
    role_ids: frozenset[int] = frozenset()
    kind: JobKind = JobKind.TXT2IMG
    sandbox: bool = False
    parent_job_id: str | None = None
    message_id: int | None = None  # the reply that will show the job
    upscale_index: int | None = None
    interaction_id: int | None = None  # the request noted by jobs.intake, forgotten here


@dataclass(frozen=True)
class GenerationPaused:
    """The backend said the account is out of credit: nobody generates until the operator
    states the new credit."""


@dataclass(frozen=True)
class MemberBanned:
    """A moderator turned generation off for this member in this server."""


@dataclass(frozen=True)
class PromptBlocked:
    word: str  # as the server's blocklist has it


@dataclass(frozen=True)
class QueueFull:
    retry_at: float  # a rough guess at when a place frees up


@dataclass(frozen=True)
class BudgetShort:
    """The account's credit, shared by every server, cannot cover the job."""

    available: int
    needed: int


@dataclass(frozen=True)
class AllotmentShort:
    """The server's allotment for this period cannot cover the job."""

    use: AllotmentUse
    needed: int


Refusal = (
    GenerationPaused
    | MemberBanned
    | PromptBlocked
    | QueueFull
    | LimitReached
    | AllotmentShort
    | BudgetShort
)


@dataclass(frozen=True)
class Admitted:
    job: Job
    claimed: Claimed | None = None  # what `admit`'s `claim` took in the same transaction


# Claims the next jobs in line inside admission's (exclusive) transaction.
ClaimIn = Callable[[Connection], Awaitable[Claimed]]


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

    async def admit(self, ticket: Ticket, *, claim: ClaimIn | None = None) -> Admitted | Refused:
        """Check every rule, reserve the credit and insert the job in line; then, when given,
        `claim` the next jobs in the same transaction (made exclusive for it: its lock is
        taken first, before the account's row lock, so claims elsewhere cannot deadlock
        with it)."""
        now = self._clock()
        origin = ticket.origin
        guild_id = origin.guild_id or 0
        cost = ticket.request.images
        async with self._db.transaction(exclusive=claim is not None) as conn:
            if ticket.interaction_id is not None:
                await intake.forget_in(conn, ticket.interaction_id)  # answered either way
            balance = await ledger.lock_balance(conn)
            if balance.paused_reason:
                return Refused(GenerationPaused())
            standing = await quota_store.standing(conn, guild_id, origin.user_id)
            if standing.banned:
                return Refused(MemberBanned())
            text = f"{ticket.request.prompt}\n{ticket.request.negative_prompt}"
            word = blocked_word(text, standing.blocked_words)
            if word:
                return Refused(PromptBlocked(word))
            queued = await job_store.queued_count(conn)
            if queued >= self._max_queue_length:
                wait = queued / self._max_jobs_in_flight * TYPICAL_JOB_SECONDS
                return Refused(QueueFull(now + wait))
            limits = resolve(
                standing.rules,
                guild_id=guild_id,
                user_id=origin.user_id,
                role_ids=set(ticket.role_ids),
            )
            usage = await quota_store.usage(
                conn, guild_id, origin.user_id, now, grant=standing.grant
            )
            verdict = check(limits, usage, cost, now)
            if verdict.refusal:
                return Refused(verdict.refusal)
            if standing.allotment is not None:
                allotment = await quota_store.use_of(conn, guild_id, standing.allotment, now)
                if not allotment.covers(cost):
                    return Refused(AllotmentShort(allotment, cost))
            if not balance.covers(cost):
                return Refused(BudgetShort(max(balance.available, 0), cost))
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
            claimed = await claim(conn) if claim is not None else None
        return Admitted(job, claimed)
