"""The intake remembers acknowledged requests until admission answers, on both databases, so
the next start can tell the members whose requests died with the process."""

from __future__ import annotations

from jobs.admission import Admission, Admitted, Ticket
from jobs.backend import Generation
from jobs.intake import Intake, PendingRequest
from jobs.model import Origin
from jobs.store import JobStore
from quota import ledger
from storage import open_database
from tests.harness import FakeClock


def request(interaction_id: int) -> PendingRequest:
    return PendingRequest(interaction_id, 7, f"token-{interaction_id}", token_expires_at=2000.0)


async def test_only_requests_noted_before_the_cutoff_and_never_admitted_are_lost(database_url):
    clock = FakeClock()
    db = await open_database(database_url)
    async with db.transaction() as conn:
        await ledger.ensure_account(conn, 100, clock())
    intake = Intake(db, clock)
    admission = Admission(db, JobStore(db, clock), clock, max_queue_length=9, max_jobs_in_flight=9)

    await intake.note(request(1))  # died before admission
    await intake.note(request(2))  # admitted; the process died before forgetting it
    origin = Origin(1, 2, 3, application_id=7, interaction_token="token-2")
    assert isinstance(await admission.admit(Ticket(origin, Generation(prompt="x"))), Admitted)
    await intake.note(request(3))  # answered normally
    await intake.forget(3)
    cutoff = clock()
    clock.advance(1)
    await intake.note(request(4))  # noted after the cutoff: a live process's, not ours to tell

    assert await intake.abandoned(noted_before=cutoff) == [request(1)]
    assert await intake.abandoned(noted_before=cutoff) == []  # each is told once
    clock.advance(1)
    assert await intake.abandoned(noted_before=clock()) == [request(4)]  # the rest were taken
    await db.close()
