"""One line for every process, on both databases: members are served in turn whichever
process admitted their jobs, a member's burst waits behind the others' first jobs, and a
job the backend refused keeps its turn but waits out the backend's pause."""

from __future__ import annotations

import uuid
from itertools import count

from jobs.backend import Generation
from jobs.model import Charge, Job, JobKind, JobState, Origin
from jobs.store import JobStore
from quota import ledger
from storage import Database, open_database
from tests.harness import FakeClock

_arrival = count()


def job_of(user_id: int, kind: JobKind = JobKind.TXT2IMG) -> Job:
    return Job(
        id=uuid.uuid4().hex,
        kind=kind,
        state=JobState.QUEUED,
        charge=Charge.RESERVED,
        cost=1,
        origin=Origin(1, 2, user_id, application_id=7, interaction_token="t"),
        request=Generation(prompt=f"job {user_id}"),
        created_at=1000.0 + next(_arrival),  # admitted one after the other
    )


async def admit(db: Database, store: JobStore, *jobs: Job) -> list[Job]:
    for job in jobs:
        async with db.transaction() as conn:
            await store.insert(conn, job)
    return list(jobs)


async def claim_all(stores: list[JobStore]) -> list[int]:
    """Claim one job at a time, the processes taking turns; the members in claim order."""
    served = []
    for turn in count():
        claimed = await stores[turn % len(stores)].claim_next(cap=100, limit=1)
        if not claimed.jobs:
            return served
        served.append(claimed.jobs[0].origin.user_id)


async def test_members_are_served_in_turn_across_processes(database_url: str) -> None:
    db = await open_database(database_url)
    clock = FakeClock()
    a, b = JobStore(db, clock, "a"), JobStore(db, clock, "b")
    await admit(db, a, *(job_of(1) for _ in range(4)))  # member 1's burst, through a
    await admit(db, b, job_of(2), job_of(3))  # then two members through b
    await admit(db, a, job_of(2))

    assert await claim_all([a, b]) == [1, 2, 3, 1, 2, 1, 1]
    await db.close()


async def test_a_member_arriving_later_joins_the_round_being_served(database_url: str) -> None:
    db = await open_database(database_url)
    clock = FakeClock()
    store = JobStore(db, clock, "a")
    await admit(db, store, *(job_of(1) for _ in range(3)), job_of(2))
    first = (await store.claim_next(cap=100, limit=2)).jobs
    assert [j.origin.user_id for j in first] == [1, 2]
    await admit(db, store, job_of(3))  # member 1 is in their second round: 3 goes first
    assert await claim_all([store]) == [1, 3, 1]
    await db.close()


async def test_a_batch_is_claimed_in_the_fair_order(database_url: str) -> None:
    db = await open_database(database_url)
    store = JobStore(db, FakeClock(), "a")
    await admit(db, store, job_of(1), job_of(1), job_of(2))
    claimed = await store.claim_next(cap=100, limit=3)
    assert [j.origin.user_id for j in claimed.jobs] == [1, 2, 1]
    assert await store.queue_order() == []
    await db.close()


async def test_the_queue_order_is_the_claim_order(database_url: str) -> None:
    db = await open_database(database_url)
    store = JobStore(db, FakeClock(), "a")
    jobs = await admit(db, store, job_of(1), job_of(1), job_of(2), job_of(3), job_of(2))
    order = await store.queue_order()
    claimed = [(await store.claim_next(cap=100, limit=1)).jobs[0].id for _ in jobs]
    assert order == claimed
    await db.close()


async def test_a_refused_job_keeps_its_turn_after_the_backends_pause(database_url: str) -> None:
    db = await open_database(database_url)
    clock = FakeClock()
    store = JobStore(db, clock, "a")
    await admit(db, store, job_of(1), job_of(2))
    [refused] = (await store.claim_next(cap=100, limit=1)).jobs
    back = await store.requeue(refused, not_before=clock() + 5)
    assert back is not None and back.refusals == 1

    [other] = (await store.claim_next(cap=100, limit=1)).jobs  # 1's job waits out the pause
    assert other.origin.user_id == 2
    assert (await store.claim_next(cap=100, limit=1)).jobs == []
    await admit(db, store, job_of(3))
    clock.advance(6)
    [again, last] = (await store.claim_next(cap=100, limit=2)).jobs
    assert (again.id, again.refusals) == (refused.id, 1)  # its turn came before 3's
    assert last.origin.user_id == 3
    await db.close()


async def test_a_job_with_a_source_image_is_claimed_as_starting(database_url: str) -> None:
    db = await open_database(database_url)
    store = JobStore(db, FakeClock(), "a")
    await admit(db, store, job_of(1, JobKind.UPSCALE), job_of(2, JobKind.TXT2IMG))
    claimed = (await store.claim_next(cap=100, limit=2)).jobs
    assert [j.state for j in claimed] == [JobState.STARTING, JobState.SUBMITTING]
    await db.close()


async def test_the_claim_reads_the_accounts_pause(database_url: str) -> None:
    db = await open_database(database_url)
    clock = FakeClock()
    store = JobStore(db, clock, "a")
    async with db.transaction() as conn:
        await ledger.ensure_account(conn, 100, clock())
    await admit(db, store, job_of(1), job_of(2))
    assert (await store.claim_next(cap=100, limit=1)).paused_reason is None
    async with db.transaction() as conn:
        await ledger.pause(conn, "out of credit", clock())
    assert (await store.claim_next(cap=100, limit=1)).paused_reason == "out of credit"
    await db.close()
