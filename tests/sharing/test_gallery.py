"""The share rules against a real database (SQLite and PostgreSQL), no Discord: what may be
shared, that a job is posted at most once, and that a refused or failed share holds nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from jobs.backend import Generation
from jobs.model import Charge, Job, JobKind, JobState, Origin
from jobs.store import JobStore
from quota.moderation import Moderation
from sharing import store
from sharing.gallery import (
    ABANDONED_CLAIM_AFTER,
    TOP_PAGE,
    Claim,
    Destination,
    Gallery,
    Posted,
    ShareRefusal,
    VoteOutcome,
    VoteRefusal,
)
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
    jobs = JobStore(db, clock)
    for number in range(1, 4):  # the jobs the tests share are in the database, as in the bot
        async with db.transaction() as conn:
            await jobs.insert(conn, job(f"job-{number}"))
    yield gallery, clock, Channels(), db
    await db.close()


class Unposted:
    """The chat platform's side of taking messages down: what was asked."""

    def __init__(self) -> None:
        self.taken_down: list[int] = []

    async def __call__(self, channel: int, message_ids: Sequence[int]) -> None:
        self.taken_down += message_ids


async def shared(
    gallery: Gallery, claim: Claim[int], message_id: int = 900, *more: int
) -> Posted | ShareRefusal:
    async def post(channel: int) -> Posted:
        return Posted((message_id, *more), f"https://cdn.example/{message_id}.png")

    return await gallery.publish(claim, post, Unposted())


async def test_the_author_shares_a_finished_job_once(world):
    gallery, _, channels, _ = world
    await gallery.set_channel(GUILD, MOD, GALLERY)
    claim = await gallery.claim(job(), AUTHOR, channels.find)
    assert isinstance(claim, Claim) and claim.channel == GALLERY
    assert await shared(gallery, claim, 900, 901, 902) == Posted(
        (900, 901, 902), "https://cdn.example/900.png"
    )
    post = await gallery.post_for("job-1")
    assert post is not None and (post.channel_id, post.message_id) == (GALLERY, 900)
    assert post.message_ids == (900, 901, 902)
    assert (post.image_url, post.shared_by) == ("https://cdn.example/900.png", AUTHOR)
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
    gallery, _, channels, _ = world
    await gallery.set_channel(GUILD, MOD, GALLERY)
    assert await gallery.claim(the_job, sharer, channels.find) is refusal
    assert await gallery.post_for(the_job.id) is None


async def test_without_a_gallery_channel_nothing_can_be_shared(world):
    gallery, _, channels, _ = world
    assert await gallery.claim(job(), AUTHOR, channels.find) is ShareRefusal.NO_GALLERY
    assert await gallery.post_for("job-1") is None


async def test_a_gallery_deleted_in_discord_is_refused_before_anything_is_claimed(world):
    gallery, _, channels, _ = world
    await gallery.set_channel(GUILD, MOD, GALLERY)
    del channels.existing[GALLERY]
    assert await gallery.claim(job(), AUTHOR, channels.find) is ShareRefusal.GALLERY_GONE
    assert await gallery.post_for("job-1") is None
    await gallery.set_channel(GUILD, MOD, NSFW_GALLERY)
    claim = await gallery.claim(job(), AUTHOR, channels.find)
    assert isinstance(claim, Claim) and claim.channel == NSFW_GALLERY


async def test_age_restricted_images_go_to_an_age_restricted_gallery(world):
    gallery, _, channels, _ = world
    await gallery.set_channel(GUILD, MOD, NSFW_GALLERY)
    assert isinstance(await gallery.claim(job(age_restricted=True), AUTHOR, channels.find), Claim)


async def test_ten_clicks_at_once_claim_the_post_once(world):
    gallery, _, channels, _ = world
    await gallery.set_channel(GUILD, MOD, GALLERY)
    outcomes = await asyncio.gather(
        *(gallery.claim(job(), AUTHOR, channels.find) for _ in range(10))
    )
    assert sum(isinstance(o, Claim) for o in outcomes) == 1
    assert outcomes.count(ShareRefusal.ALREADY_SHARED) == 9


async def test_a_failed_post_gives_the_claim_back_and_passes_the_error_on(world):
    gallery, _, channels, _ = world
    await gallery.set_channel(GUILD, MOD, GALLERY)
    claim = await gallery.claim(job(), AUTHOR, channels.find)
    assert isinstance(claim, Claim)

    async def refused(channel: int) -> Posted:
        raise ConnectionError("Discord said no")

    with pytest.raises(ConnectionError):
        await gallery.publish(claim, refused, Unposted())
    assert await gallery.post_for("job-1") is None
    again = await gallery.claim(job(), AUTHOR, channels.find)
    assert isinstance(again, Claim)


async def test_a_claim_left_by_a_dead_process_is_taken_over_only_once_abandoned(world):
    gallery, clock, channels, _ = world
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
    gallery, clock, channels, _ = world
    await gallery.set_channel(GUILD, MOD, GALLERY)
    for number in (1, 2, 3):
        claim = await gallery.claim(job(f"job-{number}"), AUTHOR, channels.find)
        assert isinstance(claim, Claim)
        await shared(gallery, claim, 900 + number)
        clock.advance(1)
    assert await gallery.vote("job-2", OTHER) == VoteOutcome(1)
    assert await gallery.vote("job-2", OTHER) == VoteOutcome(1, VoteRefusal.ALREADY_VOTED)
    assert await gallery.vote("job-2", MOD) == VoteOutcome(2)
    assert await gallery.vote("job-3", OTHER) == VoteOutcome(1)
    top = await gallery.top(GUILD, "all")
    assert [(p.job_id, p.votes) for p in top.posts] == [
        ("job-2", 2),
        ("job-3", 1),
        ("job-1", 0),
    ]
    assert (top.page, top.pages, top.total, top.first_rank) == (1, 1, 3, 1)
    clock.advance(86_400 - 2.5)  # job-1 was shared more than a day ago, the others within it
    assert [p.job_id for p in (await gallery.top(GUILD, "day")).posts] == ["job-2", "job-3"]
    assert (await gallery.top(GUILD + 1, "all")).posts == []


async def test_removing_a_post_forgets_it_and_its_votes(world):
    gallery, _, channels, _ = world
    await gallery.set_channel(GUILD, MOD, GALLERY)
    claim = await gallery.claim(job(), AUTHOR, channels.find)
    assert isinstance(claim, Claim)
    await shared(gallery, claim, 900)
    await gallery.vote("job-1", OTHER)
    removed = await gallery.remove("job-1")
    assert removed is not None and removed.message_id == 900
    assert await gallery.post_for("job-1") is None
    assert await gallery.remove("job-1") is None
    # the vote went with the post, and no vote is taken for a post that is gone
    assert await gallery.vote("job-1", MOD) == VoteOutcome(0, VoteRefusal.NOT_SHARED)
    assert await gallery.vote("job-1", OTHER) == VoteOutcome(0, VoteRefusal.NOT_SHARED)


async def test_a_vote_needs_a_posted_gallery_post_and_not_the_authors_own(world):
    gallery, _, channels, _ = world
    await gallery.set_channel(GUILD, MOD, GALLERY)
    # never shared (a forged Vote button), then only claimed (being posted): nothing stored
    assert await gallery.vote("job-1", OTHER) == VoteOutcome(0, VoteRefusal.NOT_SHARED)
    claim = await gallery.claim(job(), AUTHOR, channels.find)
    assert isinstance(claim, Claim)
    assert await gallery.vote("job-1", OTHER) == VoteOutcome(0, VoteRefusal.NOT_SHARED)
    await shared(gallery, claim)
    assert await gallery.vote("job-1", AUTHOR) == VoteOutcome(0, VoteRefusal.OWN_IMAGES)
    assert await gallery.vote("job-1", OTHER) == VoteOutcome(1)
    post = await gallery.post_for("job-1")
    assert post is not None and post.votes == 1  # the refused votes stored nothing


async def deleted_while_posting(
    world, *, gallery_post_removed: bool
) -> tuple[Posted | ShareRefusal, Unposted]:
    """Share job-1 while its Delete runs during the post: marked deleted, and (or not yet)
    its gallery post removed, as `cogs.imagine.on_delete` does in that order."""
    gallery, clock, channels, db = world
    await gallery.set_channel(GUILD, MOD, GALLERY)
    claim = await gallery.claim(job(), AUTHOR, channels.find)
    assert isinstance(claim, Claim)
    jobs = JobStore(db, clock)
    unposted = Unposted()

    async def post(channel: int) -> Posted:
        assert await jobs.mark_deleted(job())
        if gallery_post_removed:
            await gallery.remove("job-1")
        return Posted((900, 901))

    return await gallery.publish(claim, post, unposted), unposted


@pytest.mark.parametrize("gallery_post_removed", [True, False])
async def test_a_job_deleted_while_it_was_being_posted_leaves_no_gallery_post(
    world, gallery_post_removed
):
    gallery, _, _, _ = world
    outcome, unposted = await deleted_while_posting(
        world, gallery_post_removed=gallery_post_removed
    )
    assert outcome is ShareRefusal.DELETED
    assert unposted.taken_down == [900, 901]
    assert await gallery.post_for("job-1") is None
    assert (await gallery.top(GUILD, "all")).posts == []


async def test_nothing_left_to_post_gives_the_claim_back(world):
    gallery, _, channels, _ = world
    await gallery.set_channel(GUILD, MOD, GALLERY)
    claim = await gallery.claim(job(), AUTHOR, channels.find)
    assert isinstance(claim, Claim)

    async def nothing(channel: int) -> Posted:
        return Posted(())

    assert await gallery.publish(claim, nothing, Unposted()) is ShareRefusal.IMAGES_GONE
    assert await gallery.post_for("job-1") is None


async def test_the_top_is_paged_ten_at_a_time(world):
    gallery, clock, channels, db = world
    await gallery.set_channel(GUILD, MOD, GALLERY)
    count = TOP_PAGE + 2
    for number in range(count):
        the_job = job(f"top-{number:02}")
        async with db.transaction() as conn:
            await JobStore(db, clock).insert(conn, the_job)
        claim = await gallery.claim(the_job, AUTHOR, channels.find)
        assert isinstance(claim, Claim)
        await shared(gallery, claim, 1000 + number)
        clock.advance(1)
    first = await gallery.top(GUILD, "all")
    assert (first.page, first.pages, first.total, len(first.posts)) == (1, 2, count, TOP_PAGE)
    second = await gallery.top(GUILD, "all", page=2)
    assert [p.job_id for p in second.posts] == ["top-10", "top-11"]
    assert second.first_rank == TOP_PAGE + 1
    assert (await gallery.top(GUILD, "all", page=99)).page == 2
    assert await store.votes(db, "top-00") == 0
