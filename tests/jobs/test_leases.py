"""Owners and leases on both databases: a job belongs to the process that admitted it, only
its owner moves it, a dead owner's jobs are claimed once, and the cap on jobs at the backend
counts every process's jobs."""

from __future__ import annotations

import uuid

from jobs.backend import Generation
from jobs.intake import Intake, PendingRequest
from jobs.leases import Lease, default_identity
from jobs.model import Charge, Job, JobKind, JobState, Origin
from jobs.store import JobStore
from storage import Database, open_database
from tests.harness import FakeClock


def a_job(user_id: int = 3, token: str | None = None) -> Job:
    return Job(
        id=uuid.uuid4().hex,
        kind=JobKind.TXT2IMG,
        state=JobState.QUEUED,
        charge=Charge.RESERVED,
        cost=1,
        origin=Origin(1, 2, user_id, application_id=7, interaction_token=token or uuid.uuid4().hex),
        request=Generation(prompt="x"),
        created_at=1000.0,
    )


async def insert(db: Database, store: JobStore, job: Job) -> Job:
    async with db.transaction() as conn:
        await store.insert(conn, job)
    return job


def test_the_default_identity_is_stable_and_names_the_shards() -> None:
    assert default_identity([1, 0]) == "shards-0-1"
    assert default_identity(None, "host7") == "host7-bot"
    assert default_identity(None) == default_identity(None)


async def test_leases_decide_whose_jobs_are_orphaned(database_url: str) -> None:
    clock = FakeClock()
    db = await open_database(database_url)
    a, b, c = (JobStore(db, clock, name) for name in "abc")
    lease_a, lease_b = Lease(db, clock, "a"), Lease(db, clock, "b")
    await lease_a.renew()
    await lease_b.renew()
    job = await insert(db, a, a_job())

    assert await b.advance(job, JobState.SUBMITTING) is None  # only the owner moves it
    assert await b.orphaned() == []  # a is alive
    assert await lease_b.others_alive()

    clock.advance(lease_a.seconds + 1)  # a stops renewing: dead
    await lease_b.renew()
    assert [(owner, j.id) for owner, j in await b.orphaned()] == [("a", job.id)]
    assert [j.id for _, j in await c.orphaned()] == [job.id]  # c has no lease: still sees it
    assert await b.claim(job, "a")
    assert not await c.claim(job, "a")  # claimed once
    assert await b.orphaned() == []
    assert await a.advance(job, JobState.SUBMITTING) is None  # the old owner cannot move it
    moved = await b.advance(job, JobState.SUBMITTING)
    assert moved is not None and moved.state is JobState.SUBMITTING
    assert [j.id for j in await b.unfinished(own=True)] == [job.id]
    assert await a.unfinished(own=True) == []
    await db.close()


async def test_a_job_is_claimed_only_in_the_state_it_was_seen_in(database_url: str) -> None:
    clock = FakeClock()
    db = await open_database(database_url)
    a, b = JobStore(db, clock, "a"), JobStore(db, clock, "b")
    job = await insert(db, a, a_job())
    seen = [j for _, j in await b.orphaned()]  # a holds no lease
    assert await a.advance(job, JobState.SUBMITTING) is not None  # a moves on meanwhile
    assert not await b.claim(seen[0], "a")
    await db.close()


async def test_released_queued_jobs_are_orphaned_at_once(database_url: str) -> None:
    clock = FakeClock()
    db = await open_database(database_url)
    a, b = JobStore(db, clock, "a"), JobStore(db, clock, "b")
    lease_a = Lease(db, clock, "a")
    await lease_a.renew()
    queued = await insert(db, a, a_job())
    submitted = await insert(db, a, a_job())
    assert await a.advance(submitted, JobState.SUBMITTING) is not None
    assert await b.orphaned() == []

    assert await a.release_queued() == 1
    assert [(o, j.id) for o, j in await b.orphaned()] == [("", queued.id)]  # a still lives
    await lease_a.give_up()
    assert {j.id for _, j in await b.orphaned()} == {queued.id, submitted.id}
    assert not await lease_a.others_alive()
    await db.close()


async def test_the_backend_cap_counts_every_processs_jobs(database_url: str) -> None:
    clock = FakeClock()
    db = await open_database(database_url)
    a, b = JobStore(db, clock, "a"), JobStore(db, clock, "b")
    for store in (a, b, b):
        await insert(db, store, a_job())

    [one] = (await a.claim_next(cap=2, limit=1)).jobs
    assert one.state is JobState.SUBMITTING
    assert len((await b.claim_next(cap=2, limit=5)).jobs) == 1  # one place left of two
    assert (await b.claim_next(cap=2, limit=5)).jobs == []  # a's job counts for b
    submitted = await a.advance(one, JobState.SUBMITTED, task_id="t1")
    assert submitted is not None
    assert (await b.claim_next(cap=2, limit=5)).jobs == []  # submitted is at the backend
    assert await a.advance(submitted, JobState.DELIVERING) is not None
    [third] = (await b.claim_next(cap=2, limit=5)).jobs  # delivering is not
    assert third.state is JobState.SUBMITTING
    await db.close()


async def test_a_claimed_job_belongs_to_the_claimer(database_url: str) -> None:
    clock = FakeClock()
    db = await open_database(database_url)
    a, b = JobStore(db, clock, "a"), JobStore(db, clock, "b")
    job = await insert(db, a, a_job())
    [claimed] = (await b.claim_next(cap=9, limit=9)).jobs
    assert claimed.id == job.id
    assert await a.advance(claimed, JobState.SUBMITTED) is None  # no longer a's
    assert await b.advance(claimed, JobState.SUBMITTED) is not None
    assert (await a.claim_next(cap=9, limit=9)).jobs == []  # claimed once
    await db.close()


def pending(interaction_id: int) -> PendingRequest:
    return PendingRequest(interaction_id, 7, f"token-{interaction_id}", token_expires_at=1e12)


async def test_only_requests_of_a_dead_process_or_an_earlier_life_are_lost(
    database_url: str,
) -> None:
    clock = FakeClock()
    db = await open_database(database_url)
    intake_a, intake_b = Intake(db, clock, "a"), Intake(db, clock, "b")
    lease_a, lease_b = Lease(db, clock, "a"), Lease(db, clock, "b")
    await lease_a.renew()
    await lease_b.renew()
    await intake_a.note(pending(1))
    await intake_b.note(pending(2))
    clock.advance(10)
    started_b = clock()  # b restarts: its own earlier request is lost, a's is a's
    assert await intake_b.abandoned(noted_before=clock(), started_at=started_b) == [pending(2)]
    await intake_b.note(pending(3))  # b's current life: not lost
    clock.advance(10)
    await lease_a.renew()  # a lives on
    assert await intake_b.abandoned(noted_before=clock(), started_at=started_b) == []

    clock.advance(lease_a.seconds)  # a dies; b lives on
    await lease_b.renew()
    assert await intake_b.abandoned(noted_before=clock(), started_at=started_b) == [pending(1)]
    assert await intake_b.abandoned(noted_before=clock(), started_at=started_b) == []
    await db.close()
