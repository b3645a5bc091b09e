"""What moderators and the operator change, each change validated and written to the audit
log with it, and what they read back.

Every change runs one transaction: the change and its audit row land together or not at
all. Changes come back as data (`quota.changes`), refusals as `ModerationError` carrying a
problem (`OutOfRange`, `BlocklistFull`): the sentences are the presentation layer's.

Who may call what is the caller's check: a server's moderators change that server's limits,
grants, bans, blocklist and channels; only the operator changes what every server shares
(the account's credit) or what one server may draw from it (its allotment).
"""

from __future__ import annotations

from dataclasses import dataclass

from clock import Clock
from quota import guild_settings, ledger
from quota import store as quota_store
from quota.allotments import MAX_ALLOTMENT, Allotment, AllotmentUse
from quota.blocklist import normalise
from quota.changes import (
    AllotmentSet,
    Banned,
    Change,
    ChannelSet,
    CreditSet,
    Granted,
    LimitSet,
    LimitsReset,
    Unbanned,
    WordBlocked,
    WordUnblocked,
)
from quota.guild_settings import GuildChannel
from quota.limits import (
    DAY,
    HOUR,
    LimitField,
    Limits,
    OutOfRange,
    Quantity,
    Rule,
    ScopeKind,
    Usage,
    resolve,
    validate_value,
)
from storage import Connection, Database, Row

MAX_GRANT = 10_000
MAX_CREDIT = 10**9
MAX_WORD_LENGTH = 100
MAX_BLOCKED_WORDS = 500


@dataclass(frozen=True)
class BlocklistFull:
    capacity: int  # words a server's blocklist holds at most


class ModerationError(ValueError):
    """A change refused for its value; `problem` says why, with the numbers."""

    def __init__(self, problem: OutOfRange | BlocklistFull) -> None:
        super().__init__(problem)
        self.problem = problem


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


@dataclass(frozen=True)
class CreditStatus:
    """What `/credit show` tells a server's moderators: the account every server shares,
    and this server's allotment with its use this period (None: no allotment)."""

    balance: ledger.Balance
    allotment: AllotmentUse | None


def _in_range(what: Quantity, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ModerationError(OutOfRange(what, low, high, value))


class Moderation:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    # -- a server's own settings (its moderators) ------------------------------------------

    async def set_limit(
        self,
        guild_id: int,
        actor_id: int,
        scope: ScopeKind,
        scope_id: int,
        field: LimitField,
        value: int,
    ) -> LimitSet:
        problem = validate_value(field, value)
        if problem is not None:
            raise ModerationError(problem)
        async with self._db.transaction() as conn:
            before = await quota_store.set_rule(conn, guild_id, Rule(scope, scope_id, field, value))
            change = LimitSet(scope, scope_id, field, before, value)
            await self._audit(conn, guild_id, actor_id, change)
        return change

    async def reset_limits(
        self, guild_id: int, actor_id: int, scope: ScopeKind, scope_id: int
    ) -> LimitsReset:
        async with self._db.transaction() as conn:
            rules = [
                r
                for r in await quota_store.rules_for_guild(conn, guild_id)
                if r.scope is scope and r.scope_id == scope_id
            ]
            await quota_store.clear_rules(conn, guild_id, scope, scope_id)
            change = LimitsReset(scope, scope_id, tuple(rules))
            await self._audit(conn, guild_id, actor_id, change)
        return change

    async def grant(self, guild_id: int, actor_id: int, user_id: int, images: int) -> Granted:
        _in_range(Quantity.GRANT, images, 1, MAX_GRANT)
        async with self._db.transaction() as conn:
            total = await quota_store.add_grant(conn, guild_id, user_id, images)
            change = Granted(user_id, total - images, total)
            await self._audit(conn, guild_id, actor_id, change)
        return change

    async def ban(self, guild_id: int, actor_id: int, user_id: int) -> Banned:
        async with self._db.transaction() as conn:
            added = await quota_store.ban(conn, guild_id, user_id, actor_id, self._clock())
            change = Banned(user_id, already=not added)
            await self._audit(conn, guild_id, actor_id, change)
        return change

    async def unban(self, guild_id: int, actor_id: int, user_id: int) -> Unbanned:
        async with self._db.transaction() as conn:
            was = await quota_store.unban(conn, guild_id, user_id)
            change = Unbanned(user_id, was_banned=was)
            await self._audit(conn, guild_id, actor_id, change)
        return change

    async def block_word(self, guild_id: int, actor_id: int, word: str) -> WordBlocked:
        word = normalise(word)
        _in_range(Quantity.WORD_LENGTH, len(word), 1, MAX_WORD_LENGTH)
        async with self._db.transaction() as conn:
            if len(await quota_store.blocklist(conn, guild_id)) >= MAX_BLOCKED_WORDS:
                raise ModerationError(BlocklistFull(MAX_BLOCKED_WORDS))
            added = await quota_store.block_word(conn, guild_id, word)
            change = WordBlocked(word, already=not added)
            await self._audit(conn, guild_id, actor_id, change)
        return change

    async def unblock_word(self, guild_id: int, actor_id: int, word: str) -> WordUnblocked:
        word = normalise(word)
        async with self._db.transaction() as conn:
            removed = await quota_store.unblock_word(conn, guild_id, word)
            change = WordUnblocked(word, was_blocked=removed)
            await self._audit(conn, guild_id, actor_id, change)
        return change

    async def set_channel(
        self, guild_id: int, actor_id: int, which: GuildChannel, channel_id: int
    ) -> ChannelSet:
        """Point one of the server's special channels (mod-log, gallery) somewhere."""
        async with self._db.transaction() as conn:
            before = await guild_settings.set_channel(conn, guild_id, which, channel_id)
            change = ChannelSet(guild_id, which, before, channel_id)
            await self._audit(conn, guild_id, actor_id, change)
        return change

    # -- what every server shares (the operator) -------------------------------------------

    async def set_credit(self, guild_id: int, actor_id: int, images: int) -> CreditSet:
        """State the account's credit after a top-up (lifts an out-of-credit pause).
        Audited in the server it was run in."""
        _in_range(Quantity.CREDIT, images, 0, MAX_CREDIT)
        async with self._db.transaction() as conn:
            before = await ledger.lock_balance(conn)
            await ledger.set_credit(conn, images, self._clock())
            change = CreditSet(before.available, images, was_paused=bool(before.paused_reason))
            await self._audit(conn, guild_id, actor_id, change)
        return change

    async def set_allotment(
        self, guild_id: int, actor_id: int, allotment: Allotment | None
    ) -> AllotmentSet:
        """Cap what `guild_id`'s members may draw per period (None: remove the cap)."""
        if allotment is not None:
            _in_range(Quantity.ALLOTMENT, allotment.images, 0, MAX_ALLOTMENT)
        async with self._db.transaction() as conn:
            before = await quota_store.set_allotment(
                conn, guild_id, allotment, actor_id, self._clock()
            )
            change = AllotmentSet(guild_id, before, allotment)
            await self._audit(conn, guild_id, actor_id, change)
        return change

    # -- reading ---------------------------------------------------------------------------

    async def channel(self, guild_id: int, which: GuildChannel) -> int | None:
        return await guild_settings.channel(self._db, guild_id, which)

    async def modlog_channel(self, guild_id: int) -> int | None:
        return await self.channel(guild_id, GuildChannel.MODLOG)

    async def modlog_channels(self) -> list[int]:
        """Every server's mod-log channel: where an account-wide problem is announced."""
        return await guild_settings.every_server(self._db, GuildChannel.MODLOG)

    async def blocklist(self, guild_id: int) -> list[str]:
        return await quota_store.blocklist(self._db, guild_id)

    async def rules(self, guild_id: int) -> list[Rule]:
        return await quota_store.rules_for_guild(self._db, guild_id)

    async def balance(self) -> ledger.Balance:
        return await ledger.balance(self._db)

    async def credit_status(self, guild_id: int) -> CreditStatus:
        balance = await ledger.balance(self._db)
        use = await quota_store.allotment_use(self._db, guild_id, self._clock())
        return CreditStatus(balance, use)

    async def quota(self, guild_id: int, user_id: int, role_ids: set[int]) -> Quota:
        now = self._clock()
        standing = await quota_store.standing(self._db, guild_id, user_id)
        limits = resolve(standing.rules, guild_id=guild_id, user_id=user_id, role_ids=role_ids)
        usage = await quota_store.usage(self._db, guild_id, user_id, now, grant=standing.grant)
        hour_recent = [(t, n) for t, n in usage.recent if t > now - HOUR]
        return Quota(
            limits=limits,
            usage=usage,
            day_left=max(0, limits.images_per_day - usage.images_last_day),
            hour_left=max(0, limits.images_per_hour - usage.images_last_hour),
            day_resets_at=usage.recent[0][0] + DAY if usage.recent else None,
            hour_resets_at=hour_recent[0][0] + HOUR if hour_recent else None,
            banned=standing.banned,
        )

    async def audit_trail(self, guild_id: int, limit: int = 20) -> list[Row]:
        return await quota_store.audit_trail(self._db, guild_id, limit)

    async def _audit(self, conn: Connection, guild_id: int, actor_id: int, change: Change) -> None:
        await quota_store.record(conn, guild_id, actor_id, change.audit(), self._clock())
