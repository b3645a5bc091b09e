"""Admission checks every rule and reserves the credit in one transaction, on both databases:
racing requests never overspend the account or a server's allotment, and a refused job
reserves nothing and says why with the numbers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from jobs.admission import (
    Admission,
    Admitted,
    AllotmentShort,
    BudgetShort,
    GenerationPaused,
    MemberBanned,
    PromptBlocked,
    QueueFull,
    Refused,
    Ticket,
)
from jobs.backend import Generation
from jobs.model import Charge, JobState, Origin
from jobs.store import JobStore, member_activity
from quota import ledger
from quota import store as quota_store
from quota.allotments import Allotment, AllotmentPeriod
from quota.limits import LimitField, LimitReached, Rule, ScopeKind
from quota.store import set_rule
from storage import Database, open_database
from tests.harness import FakeClock

GUILD, OTHER_GUILD, USER = 1, 2, 42
# 10:00 UTC on 15 March 2024: the day's allotment resets at midnight, the month's on 1 April.
MID_MONTH = datetime(2024, 3, 15, 10, tzinfo=UTC).timestamp()
NEXT_DAY = datetime(2024, 3, 16, tzinfo=UTC).timestamp()


class StoppedClock:
    """A clock that moves only when told: allotment periods are calendar ones."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def open_admission(
    url: str, clock: FakeClock | StoppedClock, credit: int, *, max_queue_length: int = 1000
) -> Admission:
    """An admission on a fresh database where only the credit and allotments limit jobs."""
    db = await open_database(url)
    async with db.transaction() as conn:
        await ledger.ensure_account(conn, credit, clock())
        for guild in (GUILD, OTHER_GUILD):
            for field, value in [
                (LimitField.CONCURRENT_JOBS, 20),
                (LimitField.COOLDOWN_SECONDS, 0),
                (LimitField.IMAGES_PER_HOUR, 1000),
                (LimitField.IMAGES_PER_DAY, 1000),
            ]:
                await set_rule(conn, guild, Rule(ScopeKind.GUILD, guild, field, value))
    return Admission(
        db,
        JobStore(db, clock),
        clock,
        max_queue_length=max_queue_length,
        max_jobs_in_flight=8,
    )


def ticket(images: int = 1, *, guild: int = GUILD, user: int = USER, prompt: str = "x") -> Ticket:
    return Ticket(
        Origin(guild_id=guild, channel_id=2, user_id=user),
        Generation(prompt=prompt, images=images),
    )


async def allot(db: Database, guild: int, images: int, period: AllotmentPeriod) -> None:
    async with db.transaction() as conn:
        await quota_store.set_allotment(conn, guild, Allotment(images, period), by=9, now=0.0)


async def job_count(db: Database) -> int:
    jobs = JobStore(db, lambda: 0.0)
    return await jobs.count_for(GUILD, USER) + await jobs.count_for(OTHER_GUILD, USER)


async def test_a_hundred_at_once_with_five_images_left_admits_exactly_five(database_url):
    clock = FakeClock()
    admission = await open_admission(database_url, clock, credit=5)
    outcomes = await asyncio.gather(*(admission.admit(ticket()) for _ in range(100)))
    assert sum(isinstance(o, Admitted) for o in outcomes) == 5
    refusals = {o.refusal for o in outcomes if isinstance(o, Refused)}
    assert refusals == {BudgetShort(available=0, needed=1)}
    assert (await ledger.balance(admission._db)).reserved == 5
    await admission._db.close()


async def test_the_race_holds_across_two_processes_sharing_one_database(database_url):
    clock = FakeClock()
    first = await open_admission(database_url, clock, credit=5)
    second = await open_admission(database_url, clock, credit=5)
    outcomes = await asyncio.gather(
        *(a.admit(ticket()) for _ in range(50) for a in (first, second))
    )
    assert sum(isinstance(o, Admitted) for o in outcomes) == 5
    assert await job_count(first._db) == 5
    await first._db.close()
    await second._db.close()


async def test_a_servers_allotment_holds_across_two_processes_racing_for_it(database_url):
    clock = StoppedClock(MID_MONTH)
    first = await open_admission(database_url, clock, credit=1000)
    second = await open_admission(database_url, clock, credit=1000)
    await allot(first._db, GUILD, 5, AllotmentPeriod.DAY)
    outcomes = await asyncio.gather(
        *(a.admit(ticket(user=USER + i)) for i in range(30) for a in (first, second))
    )
    admitted = [o for o in outcomes if isinstance(o, Admitted)]
    refusals = [o.refusal for o in outcomes if isinstance(o, Refused)]
    assert len(admitted) == 5
    assert all(isinstance(r, AllotmentShort) for r in refusals)
    assert {(r.use.used, r.use.left, r.use.resets_at) for r in refusals} == {(5, 0, NEXT_DAY)}
    assert (await ledger.balance(first._db)).reserved == 5
    await first._db.close()
    await second._db.close()


async def test_a_job_bigger_than_what_is_left_of_the_allotment_is_refused_with_both_numbers(
    database_url,
):
    clock = StoppedClock(MID_MONTH)
    admission = await open_admission(database_url, clock, credit=1000)
    await allot(admission._db, GUILD, 5, AllotmentPeriod.MONTH)
    assert isinstance(await admission.admit(ticket(3)), Admitted)
    refused = await admission.admit(ticket(4))
    assert isinstance(refused, Refused)
    assert isinstance(refused.refusal, AllotmentShort)
    assert (refused.refusal.use.left, refused.refusal.needed) == (2, 4)
    assert refused.refusal.use.resets_at == datetime(2024, 4, 1, tzinfo=UTC).timestamp()
    assert isinstance(await admission.admit(ticket(2)), Admitted)  # what is left still fits
    await admission._db.close()


async def test_an_allotment_counts_only_its_server_and_its_period(database_url):
    clock = StoppedClock(MID_MONTH)
    admission = await open_admission(database_url, clock, credit=1000)
    await allot(admission._db, GUILD, 2, AllotmentPeriod.DAY)
    assert isinstance(await admission.admit(ticket(4, guild=OTHER_GUILD)), Admitted)
    assert isinstance(await admission.admit(ticket(2)), Admitted)
    assert isinstance(await admission.admit(ticket(1)), Refused)
    assert isinstance(await admission.admit(ticket(4, guild=OTHER_GUILD)), Admitted)  # no cap
    clock.now = NEXT_DAY  # a new calendar day (UTC): yesterday's images no longer count
    assert isinstance(await admission.admit(ticket(2)), Admitted)
    await admission._db.close()


async def test_a_refunded_job_gives_its_images_back_to_the_allotment(database_url):
    clock = StoppedClock(MID_MONTH)
    admission = await open_admission(database_url, clock, credit=1000)
    await allot(admission._db, GUILD, 2, AllotmentPeriod.MONTH)
    admitted = await admission.admit(ticket(2))
    assert isinstance(admitted, Admitted)
    assert isinstance(await admission.admit(ticket(1)), Refused)
    db, jobs = admission._db, JobStore(admission._db, clock)
    async with db.transaction() as conn:  # the job failed before spending, as the runner ends it
        await jobs.advance(admitted.job, JobState.FAILED, conn=conn, charge=Charge.RELEASED)
        await ledger.settle(conn, 2, spent=False, now=clock())
    assert isinstance(await admission.admit(ticket(2)), Admitted)
    await db.close()


async def test_a_refused_job_reserves_nothing_and_uses_no_grant(database_url):
    clock = StoppedClock(MID_MONTH)
    admission = await open_admission(database_url, clock, credit=1000)
    db = admission._db
    async with db.transaction() as conn:
        rule = Rule(ScopeKind.GUILD, GUILD, LimitField.IMAGES_PER_DAY, 1)
        await set_rule(conn, GUILD, rule)
        await quota_store.add_grant(conn, GUILD, USER, 3)
    await allot(db, GUILD, 2, AllotmentPeriod.DAY)
    # Within the member's limit thanks to the grant, but past the server's allotment.
    refused = await admission.admit(ticket(3))
    assert isinstance(refused, Refused) and isinstance(refused.refusal, AllotmentShort)
    assert (await ledger.balance(db)).reserved == 0
    assert (await quota_store.standing(db, GUILD, USER)).grant == 3
    assert await job_count(db) == 0
    await db.close()


async def test_each_refusal_carries_what_its_sentence_needs(database_url):
    clock = StoppedClock(MID_MONTH)
    admission = await open_admission(database_url, clock, credit=1000, max_queue_length=2)
    db = admission._db
    async with db.transaction() as conn:
        await quota_store.block_word(conn, GUILD, "castle")
        await quota_store.ban(conn, GUILD, 7, by=9, now=clock())
        rule = Rule(ScopeKind.GUILD, GUILD, LimitField.MAX_IMAGES_PER_JOB, 2)
        await set_rule(conn, GUILD, rule)

    async def refusal(t: Ticket) -> object:
        outcome = await admission.admit(t)
        assert isinstance(outcome, Refused)
        return outcome.refusal

    assert await refusal(ticket(user=7)) == MemberBanned()
    assert await refusal(ticket(prompt="a Castle at dusk")) == PromptBlocked("castle")
    assert await refusal(ticket(3)) == LimitReached(LimitField.MAX_IMAGES_PER_JOB, 2)
    for _ in range(2):
        assert isinstance(await admission.admit(ticket()), Admitted)
    busy = await refusal(ticket())
    assert isinstance(busy, QueueFull) and busy.retry_at > clock()
    async with db.transaction() as conn:
        await ledger.pause(conn, "out of credit", clock())
    assert await refusal(ticket(guild=OTHER_GUILD)) == GenerationPaused()
    await db.close()


async def test_reading_a_members_activity_does_not_grow_with_their_server(tmp_path):
    """Admission reads a member's jobs in their server (the cooldown, the day's images) on
    every request: it must cost the same in a server where thousands of others generate.
    The cost is SQLite's own count of the steps its statement took."""
    db = await open_database(f"sqlite:///{tmp_path}/bot.db")
    sqlite = db._conn  # type: ignore[attr-defined]  # the driver's connection: its step counter

    async def steps_to_read_activity() -> int:
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0  # carry on

        sqlite.set_progress_handler(count, 1)
        async with db.transaction() as conn:
            activity = await member_activity(conn, GUILD, USER, since=MID_MONTH - 86_400)
        sqlite.set_progress_handler(None, 1)
        assert len(activity.recent) == 1
        return steps[0]

    async def add_jobs(users: range) -> None:
        async with db.transaction() as conn:
            for user in users:
                await conn.execute(
                    """INSERT INTO jobs (id, kind, state, charge, cost, guild_id, channel_id,
                           user_id, request, created_at, updated_at)
                       VALUES ($1, 'txt2img', 'done', 'committed', 1, $2, 2, $3, '{}', $4, $4)""",
                    f"job-{user}",
                    GUILD,
                    user,
                    MID_MONTH - user,
                )

    await add_jobs(range(USER, USER + 1))
    quiet = await steps_to_read_activity()
    await add_jobs(range(1000, 4000))
    busy = await steps_to_read_activity()
    await db.close()
    assert busy < quiet * 1.5, (quiet, busy)
