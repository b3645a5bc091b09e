"""The gallery: finished jobs shared once to a server's gallery channel, and voted on.

Sharing is three steps, in this order, so that nothing is held that will not be posted:
1. `claim` checks the job and the member, then asks the caller where the gallery channel
   is *now* (a channel deleted in Discord is refused here, before anything is written), and
   only then claims the job's single post in the database, so two clicks of Share (or two
   processes) cannot post it twice;
2. `publish` posts through the caller and records the message; if posting fails the claim
   is given back, so the member can simply try again;
3. a claim whose process died between the two is taken over after `ABANDONED_CLAIM_AFTER`.
Refusals are codes (`ShareRefusal`); the sentences are the presentation layer's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from clock import Clock
from jobs.model import Job
from quota.changes import ChannelSet
from quota.guild_settings import GuildChannel
from quota.moderation import Moderation
from sharing import store
from sharing.store import Post
from storage import Database

PERIODS = {"day": 86_400.0, "week": 7 * 86_400.0, "all": None}

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

    @property
    def channel(self) -> C:
        return self.destination.channel


class Gallery:
    def __init__(self, db: Database, clock: Clock, moderation: Moderation) -> None:
        self._db = db
        self._clock = clock
        self._moderation = moderation

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
        return Claim(job.id, destination)

    async def publish(self, claim: Claim[C], post: Callable[[C], Awaitable[int]]) -> int:
        """Post through `post` (which returns the message id) and record it. If posting
        raises, the claim is given back and the error goes on to the caller."""
        try:
            message_id = await post(claim.channel)
        except Exception:
            await store.release(self._db, claim.job_id)
            raise
        await store.mark_posted(self._db, claim.job_id, message_id)
        return message_id

    async def post_for(self, job_id: str) -> Post | None:
        return await store.post_for(self._db, job_id)

    async def remove(self, job_id: str) -> Post | None:
        """Forget a job's gallery post (its original was deleted); returns what to delete."""
        async with self._db.transaction() as conn:
            post = await store.post_for(conn, job_id)
            if post is not None:
                await store.remove(conn, job_id)
        return post

    async def vote(self, job_id: str, user_id: int) -> tuple[bool, int]:
        """Count one vote per member; returns (whether this vote was new, the total)."""
        added = await store.add_vote(self._db, job_id, user_id, self._clock())
        return added, await store.votes(self._db, job_id)

    async def top(self, guild_id: int, period: str, limit: int = 10) -> list[Post]:
        window = PERIODS[period]
        since = self._clock() - window if window else 0.0
        return await store.top(self._db, guild_id, since, limit)
