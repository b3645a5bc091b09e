"""The fair queue serves members in turn, whatever order their jobs arrived in."""

from jobs.backend import Generation
from jobs.fair_queue import FairQueue
from jobs.model import Charge, Job, JobKind, JobState, Origin


def job(user: int, n: int) -> Job:
    return Job(
        id=f"{user}-{n}",
        kind=JobKind.TXT2IMG,
        state=JobState.QUEUED,
        charge=Charge.RESERVED,
        cost=1,
        origin=Origin(guild_id=1, channel_id=2, user_id=user),
        request=Generation(prompt="x"),
    )


def test_one_members_burst_does_not_starve_the_others():
    queue = FairQueue()
    for n in range(5):
        queue.push(job(1, n))
    queue.push(job(2, 0))
    queue.push(job(3, 0))
    popped = [queue.pop().id for _ in range(len(queue))]
    assert popped[:3] == ["1-0", "2-0", "3-0"]
    assert popped[3:] == ["1-1", "1-2", "1-3", "1-4"]


def test_in_order_predicts_pop_order_for_queue_positions():
    queue = FairQueue()
    for user, n in [(1, 0), (1, 1), (2, 0), (1, 2), (3, 0), (2, 1)]:
        queue.push(job(user, n))
    predicted = [j.id for j in queue.in_order()]
    assert predicted == [queue.pop().id for _ in range(6)]
    assert queue.pop() is None


def test_drain_empties_the_queue_in_order():
    queue = FairQueue()
    queue.push(job(1, 0))
    queue.push(job(2, 0))
    assert [j.id for j in queue.drain()] == ["1-0", "2-0"]
    assert len(queue) == 0
