"""The share rules against a real database (SQLite and PostgreSQL), no Discord: what may be
shared, that a job is posted at most once, and that a refused or failed share holds nothing."""

from __future__ import annotations

import asyncio

import pytest

from jobs.backend import Generation
from jobs.model import Charge, Job, JobKind, JobState, Origin
from quota.moderation import Moderation
from sharing.gallery import ABANDONED_CLAIM_AFTER, Claim, Destination, Gallery, ShareRefusal
from storage import open_database

GUILD, AUTHOR, OTHER, MOD = 1, 10, 11, 12
GALLERY, NSFW_GALLERY = 500, 501


class ManualClock:
    """Time that moves only when the test says."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Channels:
    """The chat platform's channels as the cog looks them up (id → age-restricted)."""

    def __init__(self) -> None:
        self.existing: dict[int, bool] = {GALLERY: False, NSFW_GALLERY: True}

    def find(self, channel_id: int) -> Destination[int] | None:
        if channel_id not in self.existing:
            return None
        return Destination(channel_id, age_restricted=self.existing[channel_id])


def job(
    job_id: str = "job-1",
    *,
    state: JobState = JobState.DONE,
    age_restricted: bool = False,
    deleted_at: float | None = None,
) -> Job:
    return Job(
        id=job_id,
        kind=JobKind.TXT2IMG,
        state=state,
        charge=Charge.COMMITTED,
        cost=1,
        origin=Origin(GUILD, channel_id=2, user_id=AUTHOR, age_restricted=age_restricted),
        request=Generation(prompt="a heron"),
        deleted_at=deleted_at,
    )


@pytest.fixture
async def world(database_url):
    clock = ManualClock()
    db = await open_database(database_url)
    gallery = Gallery(db, clock, Moderation(db, clock))
    yield gallery, clock, Channels()
    await db.close()


async def shared(gallery: Gallery, claim: Claim[int], message_id: int = 900) -> int:
    async def post(channel: int) -> int:
        return message_id

    return await gallery.publish(claim, post)


async def test_the_author_shares_a_finished_job_once(world):
    gallery, _, channels = world
    await gallery.set_channel(GUILD, MOD, GALLERY)
    claim = await gallery.claim(job(), AUTHOR, channels.find)
    assert isinstance(claim, Claim) and claim.channel == GALLERY
    assert await shared(gallery, claim, 900) == 900
    post = await gallery.post_for("job-1")
    assert post is not None and (post.channel_id, post.message_id) == (GALLERY, 900)
    assert await gallery.claim(job(), AUTHOR, channels.find) is ShareRefusal.ALREADY_SHARED


@pytest.mark.parametrize(
    ("the_job", "sharer", "refusal"),
    [
        (job(state=JobState.SUBMITTED), AUTHOR, ShareRefusal.NOT_FINISHED),
        (job(deleted_at=5.0), AUTHOR, ShareRefusal.DELETED),
        (job(), OTHER, ShareRefusal.NOT_YOURS),
        (job(age_restricted=True), AUTHOR, ShareRefusal.AGE_RESTRICTED),
    ],
)
async def test_a_refused_share_says_why_and_holds_nothing(world, the_job, sharer, refusal):
    gallery, _, channels = world
    await gallery.set_channel(GUILD, MOD, GALLERY)
    assert await gallery.claim(the_job, sharer, channels.find) is refusal
    assert await gallery.post_for(the_job.id) is None


async def test_without_a_gallery_channel_nothing_can_be_shared(world):
    gallery, _, channels = world
    assert await gallery.claim(job(), AUTHOR, channels.find) is ShareRefusal.NO_GALLERY
    assert await gallery.post_for("job-1") is None


async def test_a_gallery_deleted_in_discord_is_refused_before_anything_is_claimed(world):
    gallery, _, channels = world
    await gallery.set_channel(GUILD, MOD, GALLERY)
    del channels.existing[GALLERY]
    assert await gallery.claim(job(), AUTHOR, channels.find) is ShareRefusal.GALLERY_GONE
    assert await gallery.post_for("job-1") is None
    await gallery.set_channel(GUILD, MOD, NSFW_GALLERY)
    claim = await gallery.claim(job(), AUTHOR, channels.find)
    assert isinstance(claim, Claim) and claim.channel == NSFW_GALLERY


async def test_age_restricted_images_go_to_an_age_restricted_gallery(world):
    gallery, _, channels = world
    await gallery.set_channel(GUILD, MOD, NSFW_GALLERY)
    assert isinstance(await gallery.claim(job(age_restricted=True), AUTHOR, channels.find), Claim)


async def test_ten_clicks_at_once_claim_the_post_once(world):
    gallery, _, channels = world
    await gallery.set_channel(GUILD, MOD, GALLERY)
    outcomes = await asyncio.gather(
        *(gallery.claim(job(), AUTHOR, channels.find) for _ in range(10))
    )
    assert sum(isinstance(o, Claim) for o in outcomes) == 1
    assert outcomes.count(ShareRefusal.ALREADY_SHARED) == 9


async def test_a_failed_post_gives_the_claim_back_and_passes_the_error_on(world):
    gallery, _, channels = world
    await gallery.set_channel(GUILD, MOD, GALLERY)
    claim = await gallery.claim(job(), AUTHOR, channels.find)
    assert isinstance(claim, Claim)

    async def refused(channel: int) -> int:
        raise ConnectionError("Discord said no")

    with pytest.raises(ConnectionError):
        await gallery.publish(claim, refused)
    assert await gallery.post_for("job-1") is None
    again = await gallery.claim(job(), AUTHOR, channels.find)
    assert isinstance(again, Claim)


async def test_a_claim_left_by_a_dead_process_is_taken_over_only_once_abandoned(world):
    gallery, clock, channels = world
    await gallery.set_channel(GUILD, MOD, GALLERY)
    assert isinstance(await gallery.claim(job(), AUTHOR, channels.find), Claim)  # never posted
    clock.advance(ABANDONED_CLAIM_AFTER - 5)
    assert await gallery.claim(job(), AUTHOR, channels.find) is ShareRefusal.ALREADY_SHARED
    clock.advance(10)
    taken_over = await gallery.claim(job(), AUTHOR, channels.find)
    assert isinstance(taken_over, Claim)
    await shared(gallery, taken_over)
    clock.advance(ABANDONED_CLAIM_AFTER * 2)
    assert await gallery.claim(job(), AUTHOR, channels.find) is ShareRefusal.ALREADY_SHARED


async def test_votes_count_once_per_member_and_rank_the_top(world):
    gallery, clock, channels = world
    await gallery.set_channel(GUILD, MOD, GALLERY)
    for number in (1, 2, 3):
        claim = await gallery.claim(job(f"job-{number}"), AUTHOR, channels.find)
        assert isinstance(claim, Claim)
        await shared(gallery, claim, 900 + number)
        clock.advance(1)
    assert await gallery.vote("job-2", OTHER) == (True, 1)
    assert await gallery.vote("job-2", OTHER) == (False, 1)
    assert await gallery.vote("job-2", MOD) == (True, 2)
    assert await gallery.vote("job-3", OTHER) == (True, 1)
    top = await gallery.top(GUILD, "all")
    assert [(p.job_id, p.votes) for p in top] == [("job-2", 2), ("job-3", 1), ("job-1", 0)]
    clock.advance(86_400 - 2.5)  # job-1 was shared more than a day ago, the others within it
    assert [p.job_id for p in await gallery.top(GUILD, "day")] == ["job-2", "job-3"]
    assert await gallery.top(GUILD + 1, "all") == []


async def test_removing_a_post_forgets_it_and_its_votes(world):
    gallery, _, channels = world
    await gallery.set_channel(GUILD, MOD, GALLERY)
    claim = await gallery.claim(job(), AUTHOR, channels.find)
    assert isinstance(claim, Claim)
    await shared(gallery, claim, 900)
    await gallery.vote("job-1", OTHER)
    removed = await gallery.remove("job-1")
    assert removed is not None and removed.message_id == 900
    assert await gallery.post_for("job-1") is None
    assert await gallery.remove("job-1") is None
    assert await gallery.vote("job-1", MOD) == (True, 1)  # the old vote went with the post
