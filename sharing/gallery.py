"""The gallery: finished jobs shared once to a server's gallery channel, and voted on.

Sharing is three steps, in this order, so that nothing is held that will not be posted:
1. `claim` checks the job and the member, then asks the caller where the gallery channel
   is *now* (a channel deleted in Discord is refused here, before anything is written), and
   only then claims the job's single post in the database, so two clicks of Share (or two
   processes) cannot post it twice;
2. `publish` posts through the caller and records the messages; if posting fails the claim
   is given back, so the member can simply try again. Once posted it checks again, in the
   database, that the claim still stands and the job was not deleted meanwhile (a Delete
   pressed while the post was being made): if not, what was just posted is taken down, so a
   Share racing a Delete never leaves an orphan gallery post;
3. a claim whose process died between the two is taken over after `ABANDONED_CLAIM_AFTER`.
Votes count once per member, only on a posted gallery post, never the author's own.
Refusals are codes (`ShareRefusal`, `VoteRefusal`); the sentences are the presentation
layer's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from clock import Clock
from jobs.model import Job
from jobs.store import JobStore
from quota.changes import ChannelSet
from quota.guild_settings import GuildChannel
from quota.moderation import Moderation
from sharing import store
from sharing.store import Post
from storage import Database

PERIODS = {"day": 86_400.0, "week": 7 * 86_400.0, "all": None}
TOP_PAGE = 10  # entries per page of `/gallery top` (Discord shows at most 10 embeds a message)

# Longer than any real post takes (reading and uploading a few images), so a live post is
# never taken over; short enough that a crash does not block sharing for long.
ABANDONED_CLAIM_AFTER = 600.0

C = TypeVar("C")


class ShareRefusal(StrEnum):
    NO_GALLERY = "no_gallery"  # no gallery channel was ever set
    GALLERY_GONE = "gallery_gone"  # it was set, and has since been deleted (or is out of reach)
    NOT_FINISHED = "not_finished"
    DELETED = "deleted"
    ALREADY_SHARED = "already_shared"  # posted, or being posted right now
    NOT_YOURS = "not_yours"
    AGE_RESTRICTED = "age_restricted"  # made in an age-restricted channel, gallery is not
    IMAGES_GONE = "images_gone"  # the job's messages no longer hold any image


class VoteRefusal(StrEnum):
    NOT_SHARED = "not_shared"  # no gallery post (never shared, or deleted since)
    OWN_IMAGES = "own_images"
    ALREADY_VOTED = "already_voted"


@dataclass(frozen=True)
class VoteOutcome:
    total: int  # the post's votes after this one
    refusal: VoteRefusal | None = None


@dataclass(frozen=True)
class Posted:
    """What the caller posted to the gallery: its messages, first one first (the one with
    the Vote button), and the first image's address as the platform stores it."""

    message_ids: tuple[int, ...]
    image_url: str | None = None


@dataclass(frozen=True)
class TopPage:
    posts: list[Post]
    page: int  # from 1, within 1..pages
    pages: int
    total: int

    @property
    def first_rank(self) -> int:
        return (self.page - 1) * TOP_PAGE + 1


@dataclass(frozen=True)
class Destination(Generic[C]):
    """The gallery channel as the chat platform has it now (`channel` is the caller's own
    object, handed back to it for posting)."""

    channel: C
    age_restricted: bool


@dataclass(frozen=True)
class Claim(Generic[C]):
    """A job's gallery post, reserved for this share."""

    job_id: str
    destination: Destination[C]
    claimed_at: float  # identifies this claim (a claim taken over has another time)

    @property
    def channel(self) -> C:
        return self.destination.channel


class Gallery:
    def __init__(self, db: Database, clock: Clock, moderation: Moderation) -> None:
        self._db = db
        self._clock = clock
        self._moderation = moderation
        self._jobs = JobStore(db, clock)  # read only: to see whether a job was deleted

    async def set_channel(self, guild_id: int, actor_id: int, channel_id: int) -> ChannelSet:
        return await self._moderation.set_channel(
            guild_id, actor_id, GuildChannel.GALLERY, channel_id
        )

    async def channel(self, guild_id: int) -> int | None:
        return await self._moderation.channel(guild_id, GuildChannel.GALLERY)

    async def claim(
        self, job: Job, sharer_id: int, find: Callable[[int], Destination[C] | None]
    ) -> Claim[C] | ShareRefusal:
        """Reserve the job's single gallery post, or say why not. `find` looks the stored
        gallery channel up in the chat platform (None: it no longer exists there)."""
        if not job.images_posted:
            return ShareRefusal.NOT_FINISHED
        if job.deleted_at is not None:
            return ShareRefusal.DELETED
        if sharer_id != job.origin.user_id:
            return ShareRefusal.NOT_YOURS
        guild_id = job.origin.guild_id or 0
        channel_id = await self.channel(guild_id)
        if channel_id is None:
            return ShareRefusal.NO_GALLERY
        destination = find(channel_id)
        if destination is None:
            return ShareRefusal.GALLERY_GONE
        if job.origin.age_restricted and not destination.age_restricted:
            return ShareRefusal.AGE_RESTRICTED
        now = self._clock()
        claimed = await store.claim(
            self._db,
            job.id,
            guild_id,
            channel_id,
            sharer_id,
            now,
            abandoned_before=now - ABANDONED_CLAIM_AFTER,
        )
        if not claimed:
            return ShareRefusal.ALREADY_SHARED
        return Claim(job.id, destination, now)

    async def publish(
        self,
        claim: Claim[C],
        post: Callable[[C], Awaitable[Posted]],
        unpost: Callable[[C, Sequence[int]], Awaitable[None]],
    ) -> Posted | ShareRefusal:
        """Post through `post` and record what it posted. If posting raises, the claim is
        given back and the error goes on to the caller. If the job was deleted (or the claim
        lost) while posting, what was posted is taken down through `unpost` and the share is
        refused."""
        try:
            posted = await post(claim.channel)
        except Exception:
            await store.release(self._db, claim.job_id)
            raise
        if not posted.message_ids:
            await store.release(self._db, claim.job_id)
            return ShareRefusal.IMAGES_GONE
        recorded = await store.mark_posted(
            self._db, claim.job_id, claim.claimed_at, posted.message_ids, posted.image_url
        )
        # Checked after recording: a Delete that removed the gallery post before this
        # record finds the claim gone (not recorded); one after it finds the post and takes
        # it down itself; either way the job reads as deleted here from then on.
        deleted = await self._job_deleted(claim.job_id)
        if recorded and not deleted:
            return posted
        if recorded:
            await self.remove(claim.job_id)
        await unpost(claim.channel, posted.message_ids)
        return ShareRefusal.DELETED if deleted else ShareRefusal.ALREADY_SHARED  # taken over

    async def give_back(self, claim: Claim[C]) -> None:
        """Release a claim that will not be published (the member could not be answered)."""
        await store.release(self._db, claim.job_id)

    async def _job_deleted(self, job_id: str) -> bool:
        job = await self._jobs.get(job_id)
        return job is None or job.deleted_at is not None

    async def post_for(self, job_id: str) -> Post | None:
        return await store.post_for(self._db, job_id)

    async def remove(self, job_id: str) -> Post | None:
        """Forget a job's gallery post (its original was deleted); returns what to delete."""
        async with self._db.transaction() as conn:
            post = await store.post_for(conn, job_id)
            if post is not None:
                await store.remove(conn, job_id)
        return post

    async def vote(self, job_id: str, voter_id: int) -> VoteOutcome:
        """Count one vote per member on a posted gallery post, never the author's own."""
        post = await store.post_for(self._db, job_id)
        if post is None or post.message_id is None:
            return VoteOutcome(0, VoteRefusal.NOT_SHARED)
        if voter_id == post.shared_by:
            return VoteOutcome(post.votes, VoteRefusal.OWN_IMAGES)
        added = await store.add_vote(self._db, job_id, voter_id, self._clock())
        total = await store.votes(self._db, job_id)
        if added:
            return VoteOutcome(total)
        if await store.post_for(self._db, job_id) is None:  # removed since the look-up
            return VoteOutcome(0, VoteRefusal.NOT_SHARED)
        return VoteOutcome(total, VoteRefusal.ALREADY_VOTED)

    async def top(self, guild_id: int, period: str, page: int = 1) -> TopPage:
        """One page of the server's most voted posts over `period` (a key of PERIODS); a
        page past the end shows the last one."""
        window = PERIODS[period]
        since = self._clock() - window if window else 0.0
        total = await store.count_posted(self._db, guild_id, since)
        pages = max(1, -(-total // TOP_PAGE))
        page = min(max(page, 1), pages)
        posts = await store.top(self._db, guild_id, since, TOP_PAGE, (page - 1) * TOP_PAGE)
        return TopPage(posts, page, pages, total)
