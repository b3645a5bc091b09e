"""What moderators change, each change validated and written to the audit log with it.

Every method runs one transaction: the change and its audit row land together or not at all.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from clock import Clock
from quota import ledger
from quota import store as quota_store
from quota.blocklist import normalise
from quota.limits import (
    DAY,
    HOUR,
    LimitField,
    Limits,
    Rule,
    ScopeKind,
    Usage,
    resolve,
    validate_value,
)
from storage import Database

MAX_GRANT = 10_000
MAX_CREDIT = 10**9
MAX_WORD_LENGTH = 100
MAX_BLOCKED_WORDS = 500


class ModerationError(ValueError):
    """A change refused for its value; the message is for the moderator."""


@dataclass(frozen=True)
class Change:
    """One audited change: what, to whom, before and after."""

    action: str
    target: str
    before: str | None
    after: str | None

    def describe(self) -> str:
        return f"{self.action} {self.target}: {self.before or '—'} → {self.after or '—'}"


@dataclass(frozen=True)
class Quota:
    """A member's allowance as `/quota` shows it."""

    limits: Limits
    usage: Usage
    day_left: int
    hour_left: int
    day_resets_at: float | None
    hour_resets_at: float | None
    banned: bool


class Moderation:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def set_limit(
        self,
        guild_id: int,
        actor_id: int,
        scope: ScopeKind,
        scope_id: int,
        field: LimitField,
        value: int,
    ) -> Change:
        problem = validate_value(field, value)
        if problem:
            raise ModerationError(problem)
        async with self._db.transaction() as conn:
            before = await quota_store.set_rule(conn, guild_id, Rule(scope, scope_id, field, value))
            change = Change(
                "limit set",
                f"{_scope_label(scope, scope_id)} {field.value}",
                None if before is None else str(before),
                str(value),
            )
            await self._audit(conn, guild_id, actor_id, change)
        return change

    async def reset_limits(
        self, guild_id: int, actor_id: int, scope: ScopeKind, scope_id: int
    ) -> Change:
        async with self._db.transaction() as conn:
            rules = [
                r
                for r in await quota_store.rules_for_guild(conn, guild_id)
                if r.scope is scope and r.scope_id == scope_id
            ]
            await quota_store.clear_rules(conn, guild_id, scope, scope_id)
            change = Change(
                "limits reset",
                _scope_label(scope, scope_id),
                ", ".join(f"{r.field.value}={r.value}" for r in rules) or None,
                "defaults",
            )
            await self._audit(conn, guild_id, actor_id, change)
        return change

    async def grant(self, guild_id: int, actor_id: int, user_id: int, images: int) -> Change:
        if not 1 <= images <= MAX_GRANT:
            raise ModerationError(f"a grant must be from 1 to {MAX_GRANT} images (got {images})")
        async with self._db.transaction() as conn:
            total = await quota_store.add_grant(conn, guild_id, user_id, images)
            change = Change("grant", f"<@{user_id}>", str(total - images), str(total))
            await self._audit(conn, guild_id, actor_id, change)
        return change

    async def ban(self, guild_id: int, actor_id: int, user_id: int) -> Change:
        async with self._db.transaction() as conn:
            await quota_store.ban(conn, guild_id, user_id, actor_id, self._clock())
            change = Change("ban", f"<@{user_id}>", None, "banned")
            await self._audit(conn, guild_id, actor_id, change)
        return change

    async def unban(self, guild_id: int, actor_id: int, user_id: int) -> Change:
        async with self._db.transaction() as conn:
            was = await quota_store.unban(conn, guild_id, user_id)
            change = Change("unban", f"<@{user_id}>", "banned" if was else None, None)
            await self._audit(conn, guild_id, actor_id, change)
        return change

    async def set_credit(self, guild_id: int, actor_id: int, images: int) -> Change:
        if not 0 <= images <= MAX_CREDIT:
            raise ModerationError(f"credit must be from 0 to {MAX_CREDIT} images (got {images})")
        async with self._db.transaction() as conn:
            before = await ledger.lock_balance(conn, self._db.dialect)
            await ledger.set_credit(conn, images, self._clock())
            change = Change("credit set", "account", f"{before.available} available", f"{images}")
            await self._audit(conn, guild_id, actor_id, change)
        return change

    async def block_word(self, guild_id: int, actor_id: int, word: str) -> Change:
        word = normalise(word)
        if not word or len(word) > MAX_WORD_LENGTH:
            raise ModerationError(f"a blocked word must be 1 to {MAX_WORD_LENGTH} characters")
        async with self._db.transaction() as conn:
            if len(await quota_store.blocklist(conn, guild_id)) >= MAX_BLOCKED_WORDS:
                raise ModerationError(f"the blocklist is full ({MAX_BLOCKED_WORDS} words)")
            added = await quota_store.block_word(conn, guild_id, word)
            change = Change("blocklist add", word, None if added else "blocked", "blocked")
            await self._audit(conn, guild_id, actor_id, change)
        return change

    async def unblock_word(self, guild_id: int, actor_id: int, word: str) -> Change:
        word = normalise(word)
        async with self._db.transaction() as conn:
            removed = await quota_store.unblock_word(conn, guild_id, word)
            change = Change("blocklist remove", word, "blocked" if removed else None, None)
            await self._audit(conn, guild_id, actor_id, change)
        return change

    async def set_modlog(self, guild_id: int, actor_id: int, channel_id: int) -> Change:
        return await self.set_guild_channel(
            guild_id, actor_id, "modlog_channel_id", "modlog channel", channel_id
        )

    async def set_guild_channel(
        self, guild_id: int, actor_id: int, column: str, action: str, channel_id: int
    ) -> Change:
        """Point one of the guild's special channels (mod-log, gallery) somewhere."""
        assert column in ("modlog_channel_id", "gallery_channel_id")
        async with self._db.transaction() as conn:
            before = await conn.fetchval(
                f"SELECT {column} FROM guild_settings WHERE guild_id = $1", guild_id
            )
            await conn.execute(
                f"""INSERT INTO guild_settings (guild_id, {column}) VALUES ($1, $2)
                    ON CONFLICT (guild_id) DO UPDATE SET {column} = $2""",
                guild_id,
                channel_id,
            )
            change = Change(
                action, "server", f"<#{before}>" if before else None, f"<#{channel_id}>"
            )
            await self._audit(conn, guild_id, actor_id, change)
        return change

    # -- reading ---------------------------------------------------------------------------

    async def modlog_channel(self, guild_id: int) -> int | None:
        return await self._db.fetchval(
            "SELECT modlog_channel_id FROM guild_settings WHERE guild_id = $1", guild_id
        )

    async def modlog_channels(self) -> list[int]:
        """Every guild's mod-log channel: where an account-wide problem is announced."""
        rows = await self._db.fetch(
            "SELECT modlog_channel_id FROM guild_settings WHERE modlog_channel_id IS NOT NULL"
        )
        return [row["modlog_channel_id"] for row in rows]

    async def blocklist(self, guild_id: int) -> list[str]:
        return await quota_store.blocklist(self._db, guild_id)

    async def rules(self, guild_id: int) -> list[Rule]:
        return await quota_store.rules_for_guild(self._db, guild_id)

    async def balance(self) -> ledger.Balance:
        return await ledger.balance(self._db)

    async def quota(self, guild_id: int, user_id: int, role_ids: set[int]) -> Quota:
        now = self._clock()
        limits = resolve(
            await quota_store.rules_for_guild(self._db, guild_id),
            guild_id=guild_id,
            user_id=user_id,
            role_ids=role_ids,
        )
        usage = await quota_store.usage(self._db, guild_id, user_id, now)
        hour_recent = [(t, n) for t, n in usage.recent if t > now - HOUR]
        return Quota(
            limits=limits,
            usage=usage,
            day_left=max(0, limits.images_per_day - usage.images_last_day),
            hour_left=max(0, limits.images_per_hour - usage.images_last_hour),
            day_resets_at=usage.recent[0][0] + DAY if usage.recent else None,
            hour_resets_at=hour_recent[0][0] + HOUR if hour_recent else None,
            banned=await quota_store.is_banned(self._db, guild_id, user_id),
        )

    async def audit_trail(self, guild_id: int, limit: int = 20) -> list[dict[str, Any]]:
        rows = await self._db.fetch(
            "SELECT * FROM audit_log WHERE guild_id = $1 ORDER BY at DESC LIMIT $2",
            guild_id,
            limit,
        )
        return [dict(row) for row in rows]

    async def _audit(self, conn: Any, guild_id: int, actor_id: int, change: Change) -> None:
        await conn.execute(
            """INSERT INTO audit_log (id, guild_id, actor_id, action, target, before_value,
                   after_value, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            uuid.uuid4().hex,
            guild_id,
            actor_id,
            change.action,
            change.target,
            change.before,
            change.after,
            self._clock(),
        )


def _scope_label(scope: ScopeKind, scope_id: int) -> str:
    if scope is ScopeKind.ROLE:
        return f"<@&{scope_id}>"
    if scope is ScopeKind.USER:
        return f"<@{scope_id}>"
    return "server default"
