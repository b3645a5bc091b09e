"""The gallery: finished jobs shared once to a guild's gallery channel, and voted on.

A share is claimed in the database before it is posted, so two clicks of "Share" (or two
processes) cannot post the same job twice; a failed post gives the claim back.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from clock import Clock
from jobs.model import Job
from quota.moderation import Change, Moderation
from storage import Database

PERIODS = {"day": 86_400.0, "week": 7 * 86_400.0, "all": None}


class ShareRefusal(StrEnum):
    NO_GALLERY = (
        "This server has no gallery channel yet; a moderator can set one with `/gallery channel`."
    )
    NOT_FINISHED = "Only finished images can be shared."
    DELETED = "These images were deleted."
    ALREADY_SHARED = "These images are already in the gallery."
    NOT_YOURS = "Only the member who made these images can share them."
    AGE_RESTRICTED = (
        "These images were made in an age-restricted channel and the gallery is not "
        "age-restricted, so they can't be shared there."
    )


@dataclass(frozen=True)
class Post:
    job_id: str
    channel_id: int
    message_id: int | None
    votes: int = 0


class Gallery:
    def __init__(self, db: Database, clock: Clock, moderation: Moderation) -> None:
        self._db = db
        self._clock = clock
        self._moderation = moderation

    async def set_channel(self, guild_id: int, actor_id: int, channel_id: int) -> Change:
        return await self._moderation.set_guild_channel(
            guild_id, actor_id, "gallery_channel_id", "gallery channel", channel_id
        )

    async def channel(self, guild_id: int) -> int | None:
        return await self._db.fetchval(
            "SELECT gallery_channel_id FROM guild_settings WHERE guild_id = $1", guild_id
        )

    async def claim(
        self, job: Job, sharer_id: int, *, gallery_age_restricted: bool
    ) -> tuple[int, None] | tuple[None, ShareRefusal]:
        """Reserve the job's single gallery post; returns the channel to post in, or why not."""
        if not job.images_posted:
            return None, ShareRefusal.NOT_FINISHED
        if job.deleted_at is not None:
            return None, ShareRefusal.DELETED
        if sharer_id != job.origin.user_id:
            return None, ShareRefusal.NOT_YOURS
        channel_id = await self.channel(job.origin.guild_id or 0)
        if channel_id is None:
            return None, ShareRefusal.NO_GALLERY
        if job.origin.age_restricted and not gallery_age_restricted:
            return None, ShareRefusal.AGE_RESTRICTED
        claimed = await self._db.execute(
            """INSERT INTO gallery_posts (job_id, guild_id, channel_id, shared_by, shared_at)
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (job_id) DO NOTHING""",
            job.id,
            job.origin.guild_id or 0,
            channel_id,
            sharer_id,
            self._clock(),
        )
        if not claimed:
            return None, ShareRefusal.ALREADY_SHARED
        return channel_id, None

    async def posted(self, job_id: str, message_id: int) -> None:
        await self._db.execute(
            "UPDATE gallery_posts SET message_id = $2 WHERE job_id = $1", job_id, message_id
        )

    async def unclaim(self, job_id: str) -> None:
        await self._db.execute(
            "DELETE FROM gallery_posts WHERE job_id = $1 AND message_id IS NULL", job_id
        )

    async def post_for(self, job_id: str) -> Post | None:
        row = await self._db.fetchrow(
            """SELECT p.job_id, p.channel_id, p.message_id,
                      (SELECT COUNT(*) FROM votes v WHERE v.job_id = p.job_id) AS votes
               FROM gallery_posts p WHERE p.job_id = $1""",
            job_id,
        )
        return _post(row) if row else None

    async def remove(self, job_id: str) -> Post | None:
        """Forget a job's gallery post (its original was deleted); returns what to delete."""
        post = await self.post_for(job_id)
        if post is not None:
            async with self._db.transaction() as conn:
                await conn.execute("DELETE FROM gallery_posts WHERE job_id = $1", job_id)
                await conn.execute("DELETE FROM votes WHERE job_id = $1", job_id)
        return post

    async def vote(self, job_id: str, user_id: int) -> tuple[bool, int]:
        """Count one vote per member; returns (whether this vote was new, the total)."""
        added = await self._db.execute(
            """INSERT INTO votes (job_id, user_id, voted_at) VALUES ($1, $2, $3)
               ON CONFLICT (job_id, user_id) DO NOTHING""",
            job_id,
            user_id,
            self._clock(),
        )
        total = await self._db.fetchval("SELECT COUNT(*) FROM votes WHERE job_id = $1", job_id)
        return bool(added), total

    async def top(self, guild_id: int, period: str, limit: int = 10) -> list[Post]:
        window = PERIODS[period]
        since = self._clock() - window if window else 0.0
        rows = await self._db.fetch(
            """SELECT p.job_id, p.channel_id, p.message_id, COUNT(v.user_id) AS votes
               FROM gallery_posts p LEFT JOIN votes v ON v.job_id = p.job_id
               WHERE p.guild_id = $1 AND p.shared_at >= $2 AND p.message_id IS NOT NULL
               GROUP BY p.job_id, p.channel_id, p.message_id, p.shared_at
               ORDER BY votes DESC, p.shared_at ASC LIMIT $3""",
            guild_id,
            since,
            limit,
        )
        return [_post(row) for row in rows]


def _post(row: Any) -> Post:
    return Post(row["job_id"], row["channel_id"], row["message_id"], row["votes"])
