"""Gallery posts and votes in the database: the one module with SQL on `gallery_posts` and
`votes`. Every function takes the caller's connection."""

from __future__ import annotations

from dataclasses import dataclass

from storage import Connection, Row


@dataclass(frozen=True)
class Post:
    job_id: str
    channel_id: int
    message_id: int | None  # None while the post is being made
    votes: int = 0


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


async def mark_posted(conn: Connection, job_id: str, message_id: int) -> None:
    await conn.execute(
        "UPDATE gallery_posts SET message_id = $2 WHERE job_id = $1", job_id, message_id
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
        """SELECT p.job_id, p.channel_id, p.message_id,
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
    """Count a member's vote once; False when they had voted already."""
    return bool(
        await conn.execute(
            """INSERT INTO votes (job_id, user_id, voted_at) VALUES ($1, $2, $3)
               ON CONFLICT (job_id, user_id) DO NOTHING""",
            job_id,
            user_id,
            now,
        )
    )


async def votes(conn: Connection, job_id: str) -> int:
    return await conn.fetchval("SELECT COUNT(*) FROM votes WHERE job_id = $1", job_id)


async def top(conn: Connection, guild_id: int, since: float, limit: int) -> list[Post]:
    """A server's posted images shared since `since`, most voted first (earliest on ties)."""
    rows = await conn.fetch(
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


def _post(row: Row) -> Post:
    return Post(row["job_id"], row["channel_id"], row["message_id"], row["votes"])
