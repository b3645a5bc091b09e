"""Limits, grants, bans, the blocklist, allotments and the audit log in the database: the
one module with SQL on `limit_rules`, `grants`, `bans`, `blocklist`, `guild_allotments` and
`audit_log`. Every function takes the caller's connection (often a transaction's)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from jobs import store as job_store
from quota.allotments import Allotment, AllotmentPeriod, AllotmentUse, period_bounds
from quota.changes import AuditEntry
from quota.limits import DAY, HOUR, LimitField, Rule, ScopeKind, Usage
from storage import Connection, Row


@dataclass(frozen=True)
class Standing:
    """What admission and `/quota` read of a member and their server apart from their jobs,
    in two statements (one round trip each on PostgreSQL) rather than five: whether a
    moderator banned them, their unused grant, the server's allotment (None: no cap), its
    limit rules and its blocked words (sorted)."""

    banned: bool
    grant: int
    allotment: Allotment | None
    rules: list[Rule]
    blocked_words: list[str]


async def standing(conn: Connection, guild_id: int, user_id: int) -> Standing:
    member = await conn.fetchrow(
        """SELECT EXISTS (SELECT 1 FROM bans WHERE guild_id = $1 AND user_id = $2) AS banned,
                  (SELECT images FROM grants
                   WHERE guild_id = $1 AND user_id = $2) AS grant_images,
                  (SELECT images FROM guild_allotments WHERE guild_id = $1) AS allotted,
                  (SELECT period FROM guild_allotments WHERE guild_id = $1) AS period""",
        guild_id,
        user_id,
    )
    assert member is not None  # a SELECT without FROM: always one row
    # The server's rules and words in one list: a rule's row has no word, a word's only one.
    server = await conn.fetch(
        """SELECT scope_kind, scope_id, field, value, NULL AS word
           FROM limit_rules WHERE guild_id = $1
           UNION ALL
           SELECT NULL, NULL, NULL, NULL, word FROM blocklist WHERE guild_id = $1
           ORDER BY word""",
        guild_id,
    )
    allotted = member["allotted"]
    return Standing(
        banned=bool(member["banned"]),
        grant=member["grant_images"] or 0,
        allotment=None
        if allotted is None
        else Allotment(allotted, AllotmentPeriod(member["period"])),
        rules=[_rule(row) for row in server if row["word"] is None],
        blocked_words=[row["word"] for row in server if row["word"] is not None],
    )


def _rule(row: Row) -> Rule:
    return Rule(
        ScopeKind(row["scope_kind"]), row["scope_id"], LimitField(row["field"]), row["value"]
    )


async def rules_for_guild(conn: Connection, guild_id: int) -> list[Rule]:
    rows = await conn.fetch(
        "SELECT scope_kind, scope_id, field, value FROM limit_rules WHERE guild_id = $1",
        guild_id,
    )
    return [_rule(row) for row in rows]


async def set_rule(conn: Connection, guild_id: int, rule: Rule) -> int | None:
    """Upsert a rule; returns the value it replaced."""
    before = await conn.fetchval(
        """SELECT value FROM limit_rules
           WHERE guild_id = $1 AND scope_kind = $2 AND scope_id = $3 AND field = $4""",
        guild_id,
        rule.scope.value,
        rule.scope_id,
        rule.field.value,
    )
    await conn.execute(
        """INSERT INTO limit_rules (guild_id, scope_kind, scope_id, field, value)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (guild_id, scope_kind, scope_id, field) DO UPDATE SET value = $5""",
        guild_id,
        rule.scope.value,
        rule.scope_id,
        rule.field.value,
        rule.value,
    )
    return before


async def clear_rules(conn: Connection, guild_id: int, scope: ScopeKind, scope_id: int) -> int:
    return await conn.execute(
        "DELETE FROM limit_rules WHERE guild_id = $1 AND scope_kind = $2 AND scope_id = $3",
        guild_id,
        scope.value,
        scope_id,
    )


async def usage(conn: Connection, guild_id: int, user_id: int, now: float, *, grant: int) -> Usage:
    """A member's counted images and jobs (from the jobs' store), with their unused `grant`
    (read with their `standing`); released (refunded) jobs do not count."""
    activity = await job_store.member_activity(conn, guild_id, user_id, since=now - DAY)
    recent = activity.recent
    return Usage(
        images_last_day=sum(images for _, images in recent),
        images_last_hour=sum(images for at, images in recent if at > now - HOUR),
        running_jobs=activity.running,
        last_job_at=activity.last_job_at,
        grant=grant,
        recent=recent,
    )


async def add_grant(conn: Connection, guild_id: int, user_id: int, images: int) -> int:
    """Add `images` to a member's one-off grant; returns the new total."""
    await conn.execute(
        """INSERT INTO grants (guild_id, user_id, images) VALUES ($1, $2, $3)
           ON CONFLICT (guild_id, user_id) DO UPDATE SET images = grants.images + $3""",
        guild_id,
        user_id,
        images,
    )
    return await conn.fetchval(
        "SELECT images FROM grants WHERE guild_id = $1 AND user_id = $2", guild_id, user_id
    )


async def use_grant(conn: Connection, guild_id: int, user_id: int, images: int) -> None:
    await conn.execute(
        "UPDATE grants SET images = images - $3 WHERE guild_id = $1 AND user_id = $2",
        guild_id,
        user_id,
        images,
    )


async def ban(conn: Connection, guild_id: int, user_id: int, by: int, now: float) -> bool:
    return bool(
        await conn.execute(
            """INSERT INTO bans (guild_id, user_id, banned_by, banned_at) VALUES ($1, $2, $3, $4)
               ON CONFLICT (guild_id, user_id) DO NOTHING""",
            guild_id,
            user_id,
            by,
            now,
        )
    )


async def unban(conn: Connection, guild_id: int, user_id: int) -> bool:
    return bool(
        await conn.execute(
            "DELETE FROM bans WHERE guild_id = $1 AND user_id = $2", guild_id, user_id
        )
    )


async def blocklist(conn: Connection, guild_id: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT word FROM blocklist WHERE guild_id = $1 ORDER BY word", guild_id
    )
    return [r["word"] for r in rows]


async def block_word(conn: Connection, guild_id: int, word: str) -> bool:
    return bool(
        await conn.execute(
            "INSERT INTO blocklist (guild_id, word) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            guild_id,
            word,
        )
    )


async def unblock_word(conn: Connection, guild_id: int, word: str) -> bool:
    return bool(
        await conn.execute(
            "DELETE FROM blocklist WHERE guild_id = $1 AND word = $2", guild_id, word
        )
    )


async def server_allotment(conn: Connection, guild_id: int) -> Allotment | None:
    row = await conn.fetchrow(
        "SELECT images, period FROM guild_allotments WHERE guild_id = $1", guild_id
    )
    return Allotment(row["images"], AllotmentPeriod(row["period"])) if row else None


async def allotment_use(conn: Connection, guild_id: int, now: float) -> AllotmentUse | None:
    """A server's allotment and its use in the current period (from the jobs' store), or
    None without one."""
    current = await server_allotment(conn, guild_id)
    return None if current is None else await use_of(conn, guild_id, current, now)


async def use_of(conn: Connection, guild_id: int, allotment: Allotment, now: float) -> AllotmentUse:
    """A server's use of its `allotment` in the current period. Exact inside admission's
    transaction: every admission holds the account row, so no other admission changes the
    use meanwhile."""
    start, end = period_bounds(allotment.period, now)
    used = await job_store.server_images_since(conn, guild_id, start)
    return AllotmentUse(allotment, used, resets_at=end)


async def set_allotment(
    conn: Connection, guild_id: int, allotment: Allotment | None, by: int, now: float
) -> Allotment | None:
    """Cap a server's draw (None: remove the cap); returns the allotment it replaced."""
    before = await server_allotment(conn, guild_id)
    if allotment is None:
        await conn.execute("DELETE FROM guild_allotments WHERE guild_id = $1", guild_id)
        return before
    await conn.execute(
        """INSERT INTO guild_allotments (guild_id, images, period, set_by, set_at)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (guild_id) DO UPDATE SET images = $2, period = $3, set_by = $4,
               set_at = $5""",
        guild_id,
        allotment.images,
        allotment.period.value,
        by,
        now,
    )
    return before


async def record(
    conn: Connection, guild_id: int, actor_id: int, entry: AuditEntry, at: float
) -> None:
    """Write one audit row (inside the transaction that made the change)."""
    await conn.execute(
        """INSERT INTO audit_log (id, guild_id, actor_id, action, target, before_value,
               after_value, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        uuid.uuid4().hex,
        guild_id,
        actor_id,
        entry.action.value,
        entry.target,
        entry.before,
        entry.after,
        at,
    )


async def audit_trail(conn: Connection, guild_id: int, limit: int) -> list[Row]:
    """A server's latest audit rows, newest first."""
    return await conn.fetch(
        "SELECT * FROM audit_log WHERE guild_id = $1 ORDER BY at DESC, id LIMIT $2",
        guild_id,
        limit,
    )
