"""Limits, grants, bans and the blocklist in the database, and a member's usage."""

from __future__ import annotations

from typing import Any

from quota.limits import DAY, HOUR, LimitField, Rule, ScopeKind, Usage

_COUNTED_CHARGES = ("reserved", "committed")
_ACTIVE_STATES = ("queued", "submitting", "submitted", "delivering")


async def rules_for_guild(conn: Any, guild_id: int) -> list[Rule]:
    rows = await conn.fetch(
        "SELECT scope_kind, scope_id, field, value FROM limit_rules WHERE guild_id = $1",
        guild_id,
    )
    return [
        Rule(ScopeKind(r["scope_kind"]), r["scope_id"], LimitField(r["field"]), r["value"])
        for r in rows
    ]


async def set_rule(conn: Any, guild_id: int, rule: Rule) -> int | None:
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


async def clear_rules(conn: Any, guild_id: int, scope: ScopeKind, scope_id: int) -> int:
    return await conn.execute(
        "DELETE FROM limit_rules WHERE guild_id = $1 AND scope_kind = $2 AND scope_id = $3",
        guild_id,
        scope.value,
        scope_id,
    )


async def usage(conn: Any, guild_id: int, user_id: int, now: float) -> Usage:
    """A member's counted images and jobs; released (refunded) jobs do not count."""
    rows = await conn.fetch(
        """SELECT created_at, cost, state FROM jobs
           WHERE user_id = $1 AND guild_id = $2 AND created_at > $3
             AND charge IN ($4, $5)
           ORDER BY created_at""",
        user_id,
        guild_id,
        now - DAY,
        *_COUNTED_CHARGES,
    )
    last = await conn.fetchval(
        "SELECT MAX(created_at) FROM jobs WHERE user_id = $1 AND guild_id = $2",
        user_id,
        guild_id,
    )
    running = await conn.fetchval(
        f"""SELECT COUNT(*) FROM jobs WHERE user_id = $1
            AND state IN ({", ".join(f"${i}" for i in range(2, 2 + len(_ACTIVE_STATES)))})""",
        user_id,
        *_ACTIVE_STATES,
    )
    grant = await conn.fetchval(
        "SELECT images FROM grants WHERE guild_id = $1 AND user_id = $2", guild_id, user_id
    )
    return Usage(
        images_last_day=sum(r["cost"] for r in rows),
        images_last_hour=sum(r["cost"] for r in rows if r["created_at"] > now - HOUR),
        running_jobs=running or 0,
        last_job_at=last,
        grant=grant or 0,
        recent=tuple((r["created_at"], r["cost"]) for r in rows),
    )


async def add_grant(conn: Any, guild_id: int, user_id: int, images: int) -> int:
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


async def use_grant(conn: Any, guild_id: int, user_id: int, images: int) -> None:
    await conn.execute(
        "UPDATE grants SET images = images - $3 WHERE guild_id = $1 AND user_id = $2",
        guild_id,
        user_id,
        images,
    )


async def is_banned(conn: Any, guild_id: int, user_id: int) -> bool:
    found = await conn.fetchval(
        "SELECT 1 FROM bans WHERE guild_id = $1 AND user_id = $2", guild_id, user_id
    )
    return found is not None


async def ban(conn: Any, guild_id: int, user_id: int, by: int, now: float) -> bool:
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


async def unban(conn: Any, guild_id: int, user_id: int) -> bool:
    return bool(
        await conn.execute(
            "DELETE FROM bans WHERE guild_id = $1 AND user_id = $2", guild_id, user_id
        )
    )


async def blocklist(conn: Any, guild_id: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT word FROM blocklist WHERE guild_id = $1 ORDER BY word", guild_id
    )
    return [r["word"] for r in rows]


async def block_word(conn: Any, guild_id: int, word: str) -> bool:
    return bool(
        await conn.execute(
            "INSERT INTO blocklist (guild_id, word) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            guild_id,
            word,
        )
    )


async def unblock_word(conn: Any, guild_id: int, word: str) -> bool:
    return bool(
        await conn.execute(
            "DELETE FROM blocklist WHERE guild_id = $1 AND word = $2", guild_id, word
        )
    )
