"""Admission is atomic on both databases: racing requests never overspend the budget."""

from __future__ import annotations

import asyncio

from jobs.admission import Admission, Admitted, Refused, Ticket
from jobs.model import Origin
from jobs.store import JobStore
from omni import Txt2ImgRequest
from quota import ledger
from quota.limits import LimitField, Rule, ScopeKind
from quota.store import set_rule
from storage import open_database
from tests.harness import FakeClock

GUILD, USER = 1, 42


async def open_admission(url: str, clock: FakeClock, credit: int) -> Admission:
    db = await open_database(url)
    async with db.transaction() as conn:
        await ledger.ensure_account(conn, credit, clock())
        for field, value in [
            (LimitField.CONCURRENT_JOBS, 20),
            (LimitField.COOLDOWN_SECONDS, 0),
            (LimitField.IMAGES_PER_HOUR, 1000),
            (LimitField.IMAGES_PER_DAY, 1000),
        ]:
            await set_rule(conn, GUILD, Rule(ScopeKind.GUILD, GUILD, field, value))
    return Admission(db, JobStore(db, clock), clock, max_queue_length=1000, max_jobs_in_flight=8)


def ticket() -> Ticket:
    return Ticket(Origin(guild_id=GUILD, channel_id=2, user_id=USER), Txt2ImgRequest(prompt="x"))


async def test_a_hundred_at_once_with_five_images_left_admits_exactly_five(database_url):
    clock = FakeClock()
    admission = await open_admission(database_url, clock, credit=5)
    outcomes = await asyncio.gather(*(admission.admit(ticket()) for _ in range(100)))
    assert sum(isinstance(o, Admitted) for o in outcomes) == 5
    refusals = {o.refusal.limit for o in outcomes if isinstance(o, Refused)}
    assert refusals == {"credit"}
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
    jobs = await first._db.fetchval("SELECT COUNT(*) FROM jobs")
    assert jobs == 5
    await first._db.close()
    await second._db.close()
