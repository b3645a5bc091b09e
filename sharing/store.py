"""Gallery posts and votes in the database: the one module with SQL on `gallery_posts` and
`votes`. Every function takes the caller's connection."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from storage import Connection, Row

_POST_COLUMNS = """p.job_id, p.channel_id, p.message_id, p.followup_message_ids, p.image_url,
                   p.shared_by, p.shared_at"""


@dataclass(frozen=True)
class Post:
    job_id: str
    channel_id: int
    message_id: int | None  # None while the post is being made
    votes: int = 0
    shared_by: int = 0  # the job's author: only they may share it
    shared_at: float = 0.0
    followup_message_ids: tuple[int, ...] = ()  # the rest of a post split over messages
    image_url: str | None = None  # the first image, as Discord stores it

    @property
    def message_ids(self) -> tuple[int, ...]:
        """Every gallery message of this post, first one first (none while being made)."""
        if self.message_id is None:
            return ()
        return (self.message_id, *self.followup_message_ids)


async def claim(
    conn: Connection,
    job_id: str,
    guild_id: int,
    channel_id: int,
    sharer_id: int,
    now: float,
    *,
    abandoned_before: float,
) -> bool:
    """Take the job's one gallery post; False when it is posted or being posted. A claim
    never posted and made before `abandoned_before` (its process died mid-post) is taken
    over."""
    return bool(
        await conn.execute(
            """INSERT INTO gallery_posts (job_id, guild_id, channel_id, shared_by, shared_at)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (job_id) DO UPDATE SET guild_id = $2, channel_id = $3,
                   shared_by = $4, shared_at = $5
               WHERE gallery_posts.message_id IS NULL AND gallery_posts.shared_at < $6""",
            job_id,
            guild_id,
            channel_id,
            sharer_id,
            now,
            abandoned_before,
        )
    )


async def mark_posted(
    conn: Connection,
    job_id: str,
    claimed_at: float,
    message_ids: Sequence[int],
    image_url: str | None,
) -> bool:
    """Record the messages of the claim made at `claimed_at`; False when that claim no longer
    exists (the job was deleted meanwhile, or the claim was taken over)."""
    first, *rest = message_ids
    return bool(
        await conn.execute(
            """UPDATE gallery_posts SET message_id = $3, followup_message_ids = $4,
                   image_url = $5
               WHERE job_id = $1 AND shared_at = $2 AND message_id IS NULL""",
            job_id,
            claimed_at,
            first,
            json.dumps(rest),
            image_url,
        )
    )


async def release(conn: Connection, job_id: str) -> bool:
    """Give back a claim that was never posted."""
    return bool(
        await conn.execute(
            "DELETE FROM gallery_posts WHERE job_id = $1 AND message_id IS NULL", job_id
        )
    )


async def post_for(conn: Connection, job_id: str) -> Post | None:
    row = await conn.fetchrow(
        f"""SELECT {_POST_COLUMNS},
                  (SELECT COUNT(*) FROM votes v WHERE v.job_id = p.job_id) AS votes
           FROM gallery_posts p WHERE p.job_id = $1""",
        job_id,
    )
    return _post(row) if row else None


async def remove(conn: Connection, job_id: str) -> None:
    """Forget a job's post and its votes."""
    await conn.execute("DELETE FROM gallery_posts WHERE job_id = $1", job_id)
    await conn.execute("DELETE FROM votes WHERE job_id = $1", job_id)


async def add_vote(conn: Connection, job_id: str, user_id: int, now: float) -> bool:
    """Count a member's vote once, and only on a posted gallery post; False otherwise."""
    return bool(
        await conn.execute(
            """INSERT INTO votes (job_id, user_id, voted_at)
               SELECT $1, $2, $3 WHERE EXISTS (
                   SELECT 1 FROM gallery_posts
                   WHERE job_id = $1 AND message_id IS NOT NULL)
               ON CONFLICT (job_id, user_id) DO NOTHING""",
            job_id,
            user_id,
            now,
        )
    )


async def votes(conn: Connection, job_id: str) -> int:
    return await conn.fetchval("SELECT COUNT(*) FROM votes WHERE job_id = $1", job_id)


async def top(
    conn: Connection, guild_id: int, since: float, limit: int, offset: int = 0
) -> list[Post]:
    """A server's posted images shared since `since`, most voted first (earliest on ties)."""
    rows = await conn.fetch(
        f"""SELECT {_POST_COLUMNS}, COUNT(v.user_id) AS votes
           FROM gallery_posts p LEFT JOIN votes v ON v.job_id = p.job_id
           WHERE p.guild_id = $1 AND p.shared_at >= $2 AND p.message_id IS NOT NULL
           GROUP BY p.job_id, p.channel_id, p.message_id, p.followup_message_ids,
                    p.image_url, p.shared_by, p.shared_at
           ORDER BY votes DESC, p.shared_at ASC, p.job_id ASC LIMIT $3 OFFSET $4""",
        guild_id,
        since,
        limit,
        offset,
    )
    return [_post(row) for row in rows]


async def count_posted(conn: Connection, guild_id: int, since: float) -> int:
    """How many posted images `top` ranks for these arguments."""
    return await conn.fetchval(
        """SELECT COUNT(*) FROM gallery_posts
           WHERE guild_id = $1 AND shared_at >= $2 AND message_id IS NOT NULL""",
        guild_id,
        since,
    )


def _post(row: Row) -> Post:
    return Post(
        job_id=row["job_id"],
        channel_id=row["channel_id"],
        message_id=row["message_id"],
        votes=row["votes"],
        shared_by=row["shared_by"],
        shared_at=row["shared_at"],
        followup_message_ids=tuple(json.loads(row["followup_message_ids"] or "[]")),
        image_url=row["image_url"],
    )
