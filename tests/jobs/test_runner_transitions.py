"""The job runner's transitions, one test each, fast: the real `JobRunner`, `JobStore` and
`Admission` on a real SQLite database, with an in-memory backend the test scripts and an
in-memory reporter that records what the member would be shown.

Every job ends once: done and charged, or failed with the right kind, its credit committed
when the backend spent (or may have spent) it and released when not; nothing stays reserved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from jobs.admission import Admission, Admitted, Ticket
from jobs.backend import (
    BackendError,
    Capabilities,
    CredentialsRefused,
    Generation,
    NotAccepted,
    OptionRefused,
    OutOfCredit,
    Output,
    Reading,
    SubmitUncertain,
    TaskFailed,
    TaskLost,
    TaskState,
    TaskTimedOut,
    Unavailable,
)
from jobs.endings import Endings
from jobs.failures import Failure, FailureKind
from jobs.intake import Intake, PendingRequest
from jobs.model import TOKEN_LIFETIME, Charge, Job, JobState, Origin
from jobs.reporting import FollowupRecorder, Posted, SourceImageMissing, Update
from jobs.runner import JobRunner
from jobs.store import Claimed, JobStore
from quota import ledger
from quota.limits import LimitField, Rule, ScopeKind
from quota.store import set_rule
from storage import Connection, Database, StorageError, open_database
from tests.harness import FakeClock, plain_capabilities
from tests.pg import until_waiting_for_a_lock

GUILD, CHANNEL, USER = 1, 2, 42
CREDIT = 100
IMAGES = 2  # each job asks for two images: its cost
PNG = b"\x89PNG\r\n\x1a\n"  # the runner passes images through; the reporter only counts them
T = TypeVar("T")


class Waiter:
    """Wakes waiters whenever something is recorded; they re-check their predicate."""

    def __init__(self) -> None:
        self._changed = asyncio.Condition()

    async def notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)


# -- the in-memory backend -------------------------------------------------------------------


@dataclass
class Plan:
    """What the backend does with one submit: refuse it (`on_submit`), or take it and then
    fail while following (`on_follow`), or finish with `images` images. With `finish`, the
    task ends only once that event is set (the test holds it at the backend meanwhile)."""

    on_submit: BackendError | None = None
    on_follow: BackendError | None = None
    images: int = IMAGES
    finish: asyncio.Event | None = None


@dataclass
class ScriptedBackend:
    """A `jobs.backend.Backend` whose submits follow `plans`, in order; a submit with no
    plan left succeeds."""

    plans: list[Plan] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)  # handles, in order
    submits: int = 0  # every attempt, refused ones included
    followed: list[str] = field(default_factory=list)  # handles, each time one is followed
    following: Waiter = field(default_factory=Waiter)
    _tasks: dict[str, Plan] = field(default_factory=dict)

    @property
    def capabilities(self) -> Capabilities:
        return plain_capabilities()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def submit(self, request: Generation) -> str:
        self.submits += 1
        plan = self.plans.pop(0) if self.plans else Plan()
        if plan.on_submit is not None:
            raise plan.on_submit
        handle = f"task-{len(self.submitted) + 1}"
        self.submitted.append(handle)
        self._tasks[handle] = plan
        return handle

    async def upscale(self, image: bytes, factor: float) -> str:
        return await self.submit(Generation(prompt="upscale"))

    async def follow(self, handle: str, *, max_wait: float) -> AsyncIterator[Reading]:
        plan = self._tasks[handle]
        self.followed.append(handle)
        await self.following.notify()
        yield Reading(TaskState.RUNNING, progress=0.5)
        if plan.on_follow is not None:
            error, plan.on_follow = plan.on_follow, None  # a late look finds the task going on
            raise error
        if plan.finish is not None:
            await plan.finish.wait()
        yield Reading(TaskState.SUCCEEDED, progress=1.0)

    async def result(self, handle: str, *, expected: int) -> Output:
        images = self._tasks[handle].images
        return Output(images=(PNG,) * min(images, expected), seeds=tuple(range(images)))

    async def cancel(self, handle: str) -> None:
        pass


# -- the in-memory reporter ------------------------------------------------------------------


@dataclass
class RecordingReporter:
    """A `jobs.reporting.Reporter` that records what the member would be shown. With
    `crash_on_deliver`, posting the images raises an unexpected error."""

    crash_on_deliver: bool = False
    updates: list[tuple[str, Update]] = field(default_factory=list)
    deliveries: list[tuple[Job, int]] = field(default_factory=list)  # (job, images posted)
    failures: list[tuple[Job, Failure]] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)  # jobs another process took
    changed: Waiter = field(default_factory=Waiter)

    def forget(self, job_id: str) -> None:
        self.forgotten.append(job_id)

    def update(self, job: Job, update: Update) -> None:
        self.updates.append((job.id, update))

    async def drain(self) -> None:
        pass

    async def deliver(
        self, job: Job, images: list[bytes], *, record: FollowupRecorder | None = None
    ) -> Posted:
        if self.crash_on_deliver:
            raise RuntimeError("a bug in the reporter")
        self.deliveries.append((job, len(images)))
        await self.changed.notify()
        return Posted(message_id=1000 + len(self.deliveries))

    async def fail(self, job: Job, failure: Failure) -> None:
        self.failures.append((job, failure))
        await self.changed.notify()

    async def account_paused(self, reason: str) -> None:
        self.paused.append(reason)

    async def lost(self, request: PendingRequest) -> None:
        pass


class NoSources:
    """Only txt2img jobs here: there is never a source image to fetch."""

    async def fetch(self, job: Job) -> bytes:
        raise SourceImageMissing(job.id)


# -- the world -------------------------------------------------------------------------------


@dataclass
class World:
    db: Database
    clock: FakeClock
    store: JobStore
    admission: Admission
    backend: ScriptedBackend
    reporter: RecordingReporter
    runner: JobRunner

    def ticket(self, *, user: int = USER) -> Ticket:
        """A member's request for a job of IMAGES images."""
        origin = Origin(
            guild_id=GUILD,
            channel_id=CHANNEL,
            user_id=user,
            application_id=7,
            interaction_token=f"token-{user}",
            token_expires_at=self.clock() + TOKEN_LIFETIME,
        )
        return Ticket(origin, Generation(prompt="a lighthouse", images=IMAGES))

    async def admit(self) -> Job:
        """A member's job, admitted (its credit reserved) and handed to the runner."""
        outcome = await self.runner.admit(self.ticket())
        assert isinstance(outcome, Admitted), outcome
        return outcome.job

    async def job(self, job_id: str) -> Job:
        job = await self.store.get(job_id)
        assert job is not None
        return job

    async def balance(self) -> ledger.Balance:
        return await ledger.balance(self.db)

    async def ended(self, job_id: str) -> Job:
        """The job once the runner has nothing left to do."""
        await self.runner.wait_idle()
        return await self.job(job_id)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with running_world(f"sqlite:///{tmp_path}/bot.db") as started:
        yield started


@contextlib.asynccontextmanager
async def running_world(database_url: str) -> AsyncIterator[World]:
    clock = FakeClock()
    db = await open_database(database_url)
    async with db.transaction() as conn:
        await ledger.ensure_account(conn, CREDIT, clock())
        for limit, value in [
            (LimitField.CONCURRENT_JOBS, 20),
            (LimitField.COOLDOWN_SECONDS, 0),
            (LimitField.IMAGES_PER_HOUR, 1000),
            (LimitField.IMAGES_PER_DAY, 1000),
        ]:
            await set_rule(conn, GUILD, Rule(ScopeKind.GUILD, GUILD, limit, value))
    store = JobStore(db, clock, "process-under-test")
    backend, reporter = ScriptedBackend(), RecordingReporter()
    admission = Admission(db, store, clock, max_queue_length=100, max_jobs_in_flight=4)
    runner = JobRunner(
        db,
        store,
        admission,
        backend,
        reporter,
        clock,
        sources=NoSources(),
        intake=Intake(db, clock, store.owner),
        max_in_flight=4,
    )
    await runner.start()
    yield World(db, clock, store, admission, backend, reporter, runner)
    await runner.stop()
    await db.close()


def failure_kinds(reporter: RecordingReporter) -> list[FailureKind]:
    return [failure.kind for _, failure in reporter.failures]


async def assert_settled(world: World, job: Job, *, spent: bool) -> None:
    """The job's credit committed (`spent`) or released, once, and nothing left reserved."""
    assert job.charge is (Charge.COMMITTED if spent else Charge.RELEASED)
    balance = await world.balance()
    assert (balance.spent, balance.reserved) == (IMAGES if spent else 0, 0)


# -- the transitions -------------------------------------------------------------------------


async def test_a_job_goes_queued_then_submitted_then_done_and_is_charged_once(world):
    finish = asyncio.Event()
    world.backend.plans.append(Plan(finish=finish))

    job = await world.admit()
    assert job.state is JobState.QUEUED and job.charge is Charge.RESERVED
    assert (await world.balance()).reserved == IMAGES

    await world.backend.following.until(lambda: bool(world.backend.followed))
    at_backend = await world.job(job.id)
    assert at_backend.state is JobState.SUBMITTED
    assert at_backend.task_id == world.backend.submitted[0]
    assert (await world.balance()).reserved == IMAGES  # not charged before the end

    finish.set()
    done = await world.ended(job.id)
    assert done.state is JobState.DONE and done.message_id == 1001
    assert [(d.id, n) for d, n in world.reporter.deliveries] == [(job.id, IMAGES)]
    assert world.reporter.failures == []
    await assert_settled(world, done, spent=True)


@pytest.mark.parametrize(
    ("error", "kind", "spent"),
    [
        (OptionRefused("steps too high", option="steps"), FailureKind.INVALID_OPTION, False),
        (CredentialsRefused("key refused"), FailureKind.BAD_KEY, False),
        (OutOfCredit("balance too low"), FailureKind.OUT_OF_CREDIT, False),
        (Unavailable("no server up"), FailureKind.UNAVAILABLE, False),
        (SubmitUncertain("connection reset after sending"), FailureKind.UNCERTAIN, True),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BackendError) else None,
)
async def test_an_error_on_submit_fails_the_job_with_its_kind_and_charge(world, error, kind, spent):
    world.backend.plans.append(Plan(on_submit=error))

    job = await world.admit()
    failed = await world.ended(job.id)

    assert failed.state is JobState.FAILED and failed.failure == kind.value
    assert failure_kinds(world.reporter) == [kind]
    assert world.reporter.deliveries == [] and world.backend.submits == 1
    await assert_settled(world, failed, spent=spent)


async def test_out_of_credit_on_submit_also_pauses_generation_for_everyone(world):
    world.backend.plans.append(Plan(on_submit=OutOfCredit("balance too low")))

    await world.ended((await world.admit()).id)

    assert world.reporter.paused == ["balance too low"]
    assert (await world.balance()).paused_reason == "balance too low"


@pytest.mark.parametrize(
    ("error", "kind", "spent"),
    [
        (TaskFailed("task failed", reason="NSFW"), FailureKind.TASK_FAILED, False),
        (TaskTimedOut("the server gave up", by_server=True), FailureKind.TIMED_OUT, False),
        (TaskLost("unknown task"), FailureKind.TASK_LOST, False),
        (TaskLost("reply lost after billing", spent=True), FailureKind.TASK_LOST, True),
        (Unavailable("the server went away"), FailureKind.UNAVAILABLE, False),
    ],
    ids=["TaskFailed", "TaskTimedOut-by-server", "TaskLost", "TaskLost-spent", "Unavailable"],
)
async def test_an_error_while_following_fails_the_job_with_its_kind_and_charge(
    world, error, kind, spent
):
    world.backend.plans.append(Plan(on_follow=error))

    job = await world.admit()
    failed = await world.ended(job.id)

    assert failed.state is JobState.FAILED and failed.failure == kind.value
    assert failed.task_id == world.backend.submitted[0]
    assert failure_kinds(world.reporter) == [kind]
    assert world.reporter.deliveries == []
    await assert_settled(world, failed, spent=spent)


async def test_success_with_no_image_is_a_download_failure_counted_as_spent(world):
    world.backend.plans.append(Plan(images=0))

    failed = await world.ended((await world.admit()).id)

    assert failed.state is JobState.FAILED
    assert failure_kinds(world.reporter) == [FailureKind.DOWNLOAD_FAILED]
    await assert_settled(world, failed, spent=True)


async def test_not_accepted_puts_the_job_back_in_line_then_it_is_done(world):
    world.backend.plans.append(Plan(on_submit=NotAccepted("rate limited", retry_after=0.2)))

    job = await world.admit()
    await world.reporter.changed.until(lambda: bool(world.reporter.deliveries))
    done = await world.ended(job.id)

    assert world.backend.submits == 2  # refused once, taken the second time
    assert done.state is JobState.DONE and world.reporter.failures == []
    assert [d.id for d, _ in world.reporter.deliveries] == [job.id]
    await assert_settled(world, done, spent=True)


async def test_a_job_admitted_with_room_is_claimed_in_its_admission(world, monkeypatch):
    """No second write and no dispatcher round: the claim is a statement of admission's own
    transaction, and the dispatcher does not look again after a claim that emptied the line."""
    real_claim = world.store.claim_next
    claims: list[str] = []

    async def counted_claim(cap: int, *, limit: int, conn: Connection | None = None) -> Claimed:
        claimed = await real_claim(cap, limit=limit, conn=conn)
        claims.append(f"{'admission' if conn else 'dispatcher'}:{len(claimed.jobs)}")
        return claimed

    monkeypatch.setattr(world.store, "claim_next", counted_claim)
    world.backend.plans.append(Plan())
    job = await world.admit()
    assert claims == ["admission:1"]
    assert (await world.ended(job.id)).state is JobState.DONE
    # The job's end made room, but nothing waits here: no claim at once (the dispatcher's
    # look every second finds nothing).
    assert [claim for claim in claims if claim != "dispatcher:0"] == ["admission:1"]


async def hold_every_place(world: World) -> list[asyncio.Event]:
    """Four jobs held at the backend (the cap): the next one admitted waits in line."""
    finishes = [asyncio.Event() for _ in range(4)]
    world.backend.plans.extend(Plan(finish=finish) for finish in finishes)
    for _ in finishes:
        await world.admit()
    await world.backend.following.until(lambda: len(world.backend.followed) == 4)
    return finishes


async def test_a_job_waiting_for_room_is_claimed_once_one_leaves_the_backend(world):
    finishes = await hold_every_place(world)
    waiting = await world.admit()
    assert (await world.job(waiting.id)).state is JobState.QUEUED

    finishes[0].set()
    await world.reporter.changed.until(lambda: len(world.reporter.deliveries) == 2)
    for finish in finishes[1:]:
        finish.set()
    assert (await world.ended(waiting.id)).state is JobState.DONE


async def test_an_unexpected_error_in_a_claim_does_not_stop_the_runner(world, monkeypatch):
    finishes = await hold_every_place(world)
    waiting = await world.admit()
    real_claim = world.store.claim_next
    failures = [ValueError("a row this version cannot read")]

    async def claim_once_broken(cap: int, *, limit: int, conn: Connection | None = None) -> Claimed:
        if failures:
            raise failures.pop()
        return await real_claim(cap, limit=limit, conn=conn)

    monkeypatch.setattr(world.store, "claim_next", claim_once_broken)
    for finish in finishes:
        finish.set()
    await world.reporter.changed.until(lambda: len(world.reporter.deliveries) == 5, timeout=5)
    assert (await world.ended(waiting.id)).state is JobState.DONE
    assert failures == []  # the broken claim happened, and the next one ran the job


async def test_jobs_a_cut_short_claim_took_go_back_in_line_and_run(world, monkeypatch):
    """A claim written to the database whose answer never came (a lost connection during
    its commit): the jobs it took are this process's, and no task runs them."""
    finishes = await hold_every_place(world)
    waiting = await world.admit()
    real_claim = world.store.claim_next
    lost: list[Job] = []

    async def claim_then_lose_the_answer(
        cap: int, *, limit: int, conn: Connection | None = None
    ) -> Claimed:
        claimed = await real_claim(cap, limit=limit, conn=conn)
        if claimed.jobs and not lost:
            lost.extend(claimed.jobs)
            raise StorageError("connection lost during COMMIT")
        return claimed

    monkeypatch.setattr(world.store, "claim_next", claim_then_lose_the_answer)
    for finish in finishes:
        finish.set()
    await world.reporter.changed.until(lambda: len(world.reporter.deliveries) == 5, timeout=5)
    done = await world.ended(waiting.id)
    assert [j.id for j in lost] == [waiting.id]
    assert done.state is JobState.DONE and world.backend.submits == 5
    balance = await world.balance()
    assert (balance.spent, balance.reserved) == (5 * IMAGES, 0)


async def test_a_claim_failing_in_admission_does_not_refuse_the_job(world, monkeypatch):
    """A row this version cannot read (written by a newer one) makes the claim fail: the job
    is admitted all the same, and the dispatcher claims it once it can."""
    real_claim = world.store.claim_next
    failures = [ValueError("a row this version cannot read")]

    async def claim_broken_in_admission(
        cap: int, *, limit: int, conn: Connection | None = None
    ) -> Claimed:
        if conn is not None and failures:
            raise failures.pop()
        return await real_claim(cap, limit=limit, conn=conn)

    monkeypatch.setattr(world.store, "claim_next", claim_broken_in_admission)
    world.backend.plans.append(Plan())
    job = await world.admit()
    assert failures == []
    assert (await world.ended(job.id)).state is JobState.DONE
    balance = await world.balance()
    assert (balance.spent, balance.reserved) == (IMAGES, 0)


async def test_a_job_admitted_once_the_runner_is_stopping_waits_unsent(world, monkeypatch):
    """A request that passed the cog's check before the stop began: its job waits in line for
    the next start (nothing claims it now, so nothing sends it half-way through the stop)."""
    draining, drained = asyncio.Event(), asyncio.Event()

    async def slow_drain() -> None:
        draining.set()
        await drained.wait()

    monkeypatch.setattr(world.reporter, "drain", slow_drain)
    stopping = asyncio.create_task(world.runner.stop())
    await draining.wait()
    job = await world.admit()
    drained.set()
    await stopping
    assert (await world.job(job.id)).state is JobState.QUEUED
    assert world.backend.submits == 0


async def test_a_taken_over_submit_is_never_sent_again(world, monkeypatch):
    """A dead process's job caught submitting may have reached the backend: taken over, it
    ends as uncertain, even when the look for claims cut short runs meanwhile."""
    queued = await world.admission.admit(world.ticket(user=USER + 1))  # no claim
    assert isinstance(queued, Admitted)
    job = queued.job
    await world.db.execute(
        "UPDATE jobs SET owner = 'dead', state = $2 WHERE id = $1", job.id, "submitting"
    )
    reading, read_on = asyncio.Event(), asyncio.Event()
    real_get = world.store.get

    async def slow_get(job_id: str) -> Job | None:
        if job_id == job.id and not read_on.is_set():
            reading.set()  # taken over, its failure not written yet
            await read_on.wait()
        return await real_get(job_id)

    monkeypatch.setattr(world.store, "get", slow_get)
    taking_over = asyncio.create_task(world.runner._take_over())
    await reading.wait()
    # The look for claims cut short (after an admission whose commit was lost) runs now.
    await world.runner._unclaim_orphans()
    still = await real_get(job.id)
    assert still is not None and still.state is JobState.SUBMITTING  # not put back in line
    read_on.set()
    await taking_over
    await world.runner.wait_idle()
    ended = await real_get(job.id)
    assert ended is not None and ended.failure == FailureKind.UNCERTAIN.value
    assert world.backend.submits == 0


async def test_settling_a_waiting_job_beside_an_admission_that_claims_does_not_deadlock(
    database_url, monkeypatch
):
    """On PostgreSQL admission holds the account's row while its claim locks jobs in line;
    ending a job still in line (expired) takes the same two rows: in the same order."""
    async with running_world(database_url) as world:
        real_claim = world.store.claim_next

        async def claim_in_admission_only(
            cap: int, *, limit: int, conn: Connection | None = None
        ) -> Claimed:
            if conn is None:  # the dispatcher's: kept out of this test
                return Claimed([], None)
            return await real_claim(cap, limit=limit, conn=conn)

        monkeypatch.setattr(world.store, "claim_next", claim_in_admission_only)
        waiting = await world.admission.admit(world.ticket(user=USER + 1))  # no claim
        assert isinstance(waiting, Admitted)
        first_done, go_on = asyncio.Event(), asyncio.Event()

        async def then_pause(result: T) -> T:
            """After the ending's first statement, whichever it is: the admission starts."""
            if not first_done.is_set():
                first_done.set()
                await go_on.wait()
            return result

        real_settle, real_advance = ledger.settle, world.store.advance

        async def paused_settle(conn: Connection, cost: int, *, spent: bool, now: float) -> None:
            await then_pause(await real_settle(conn, cost, spent=spent, now=now))

        async def paused_advance(job: Job, to: JobState, **fields: Any) -> Job | None:
            return await then_pause(await real_advance(job, to, **fields))

        monkeypatch.setattr(ledger, "settle", paused_settle)
        monkeypatch.setattr(world.store, "advance", paused_advance)
        expiring = asyncio.create_task(
            Endings(world.db, world.store, world.reporter, world.clock).settle_once(
                waiting.job, JobState.FAILED, spent=False
            )
        )
        await first_done.wait()
        admitting = asyncio.create_task(world.admit())
        await until_waiting_for_a_lock(world.db)
        go_on.set()
        async with asyncio.timeout(10):
            ended, admitted = await asyncio.gather(expiring, admitting)
        assert ended is not None and ended.state is JobState.FAILED
        assert (await world.job(admitted.id)).state is not JobState.QUEUED  # claimed at once


async def test_the_bot_stopping_waiting_fails_the_job_as_spent_then_delivers_it_late(world):
    finish = asyncio.Event()
    world.backend.plans.append(
        Plan(on_follow=TaskTimedOut("waited too long", by_server=False), finish=finish)
    )

    job = await world.admit()
    await world.reporter.changed.until(lambda: bool(world.reporter.failures))
    failed = await world.job(job.id)
    assert failed.state is JobState.FAILED
    assert failure_kinds(world.reporter) == [FailureKind.STOPPED_WAITING]
    await assert_settled(world, failed, spent=True)  # the backend may still bill it

    finish.set()  # the task finishes at the backend after all
    late = await world.ended(job.id)

    assert late.state is JobState.DONE
    assert [(d.id, n) for d, n in world.reporter.deliveries] == [(job.id, IMAGES)]
    assert world.backend.submits == 1  # looked at again, never resubmitted
    await assert_settled(world, late, spent=True)  # still charged once


async def test_a_crash_in_the_reporter_fails_the_job_instead_of_leaving_it_stuck(world):
    world.reporter.crash_on_deliver = True

    job = await world.admit()
    failed = await world.ended(job.id)

    # The backend made (and billed) the images; it is their posting that failed.
    assert failed.state is JobState.FAILED
    assert failed.failure == FailureKind.DELIVERY_FAILED.value
    assert failure_kinds(world.reporter) == [FailureKind.DELIVERY_FAILED]
    assert failed.charge is Charge.COMMITTED
    assert (await world.balance()).reserved == 0
    assert await world.store.unfinished() == []


async def test_a_failed_job_leaves_one_log_line_with_its_ids_class_and_reason(world, caplog):
    world.backend.plans.append(Plan(on_follow=TaskFailed("task failed", reason="NSFW")))
    caplog.set_level(logging.WARNING, logger="jobs.endings")

    job = await world.admit()
    await world.ended(job.id)

    lines = [r.getMessage() for r in caplog.records if job.id in r.getMessage()]
    assert len(lines) == 1
    [line] = lines
    assert "task_failed" in line and "task-1" in line and "NSFW" in line  # the reason
