"""What a moderator (or the operator) changed, as data: the audit log stores it, the
presentation layer (`cogs/utils/wording.py`) says it.

Each change carries what a sentence about it needs (whose limit, which field, the value
before and after...) and turns itself into an audit row. Audit rows hold plain values and
neutral targets (`user:42`, `role:7`, `guild:1`, `account`), not Discord mentions.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from quota.allotments import Allotment
from quota.guild_settings import GuildChannel
from quota.limits import LimitField, Rule, ScopeKind


class ChangeKind(StrEnum):
    """The audit log's `action` column (values kept from before changes were typed)."""

    LIMIT_SET = "limit set"
    LIMITS_RESET = "limits reset"
    GRANT = "grant"
    BAN = "ban"
    UNBAN = "unban"
    CREDIT_SET = "credit set"
    ALLOTMENT_SET = "allotment set"
    WORD_BLOCKED = "blocklist add"
    WORD_UNBLOCKED = "blocklist remove"
    MODLOG_CHANNEL = "modlog channel"
    GALLERY_CHANNEL = "gallery channel"


@dataclass(frozen=True)
class AuditEntry:
    action: ChangeKind
    target: str
    before: str | None
    after: str | None


def _scope(scope: ScopeKind, scope_id: int) -> str:
    return f"{scope.value}:{scope_id}"


def _text(value: int | None) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class LimitSet:
    scope: ScopeKind
    scope_id: int
    field: LimitField
    before: int | None  # None: no rule was set at this scope
    after: int

    def audit(self) -> AuditEntry:
        return AuditEntry(
            ChangeKind.LIMIT_SET,
            f"{_scope(self.scope, self.scope_id)} {self.field.value}",
            _text(self.before),
            str(self.after),
        )


@dataclass(frozen=True)
class LimitsReset:
    scope: ScopeKind
    scope_id: int
    removed: tuple[Rule, ...]  # the rules that were set at this scope

    def audit(self) -> AuditEntry:
        before = ", ".join(f"{r.field.value}={r.value}" for r in self.removed) or None
        return AuditEntry(ChangeKind.LIMITS_RESET, _scope(self.scope, self.scope_id), before, None)


@dataclass(frozen=True)
class Granted:
    user_id: int
    before: int  # the member's unused grant before, in images
    after: int

    def audit(self) -> AuditEntry:
        target = _scope(ScopeKind.USER, self.user_id)
        return AuditEntry(ChangeKind.GRANT, target, str(self.before), str(self.after))


@dataclass(frozen=True)
class Banned:
    user_id: int
    already: bool  # the member was banned before

    def audit(self) -> AuditEntry:
        target = _scope(ScopeKind.USER, self.user_id)
        return AuditEntry(ChangeKind.BAN, target, "banned" if self.already else None, "banned")


@dataclass(frozen=True)
class Unbanned:
    user_id: int
    was_banned: bool

    def audit(self) -> AuditEntry:
        target = _scope(ScopeKind.USER, self.user_id)
        return AuditEntry(ChangeKind.UNBAN, target, "banned" if self.was_banned else None, None)


@dataclass(frozen=True)
class CreditSet:
    """The operator stated the account's credit: spending restarts from zero, a pause for
    lack of credit is lifted."""

    available_before: int
    credit: int
    was_paused: bool

    def audit(self) -> AuditEntry:
        return AuditEntry(
            ChangeKind.CREDIT_SET, "account", str(self.available_before), str(self.credit)
        )


@dataclass(frozen=True)
class AllotmentSet:
    """The operator capped (or uncapped: None) what one server may draw per period."""

    guild_id: int
    before: Allotment | None
    after: Allotment | None

    def audit(self) -> AuditEntry:
        return AuditEntry(
            ChangeKind.ALLOTMENT_SET,
            _scope(ScopeKind.GUILD, self.guild_id),
            _allotment(self.before),
            _allotment(self.after),
        )


def _allotment(allotment: Allotment | None) -> str | None:
    return None if allotment is None else f"{allotment.images}/{allotment.period.value}"


@dataclass(frozen=True)
class WordBlocked:
    word: str  # as stored (normalised)
    already: bool

    def audit(self) -> AuditEntry:
        before = "blocked" if self.already else None
        return AuditEntry(ChangeKind.WORD_BLOCKED, self.word, before, "blocked")


@dataclass(frozen=True)
class WordUnblocked:
    word: str
    was_blocked: bool

    def audit(self) -> AuditEntry:
        before = "blocked" if self.was_blocked else None
        return AuditEntry(ChangeKind.WORD_UNBLOCKED, self.word, before, None)


_CHANNEL_ACTIONS = {
    GuildChannel.MODLOG: ChangeKind.MODLOG_CHANNEL,
    GuildChannel.GALLERY: ChangeKind.GALLERY_CHANNEL,
}


@dataclass(frozen=True)
class ChannelSet:
    guild_id: int
    channel: GuildChannel
    before: int | None  # the channel id it pointed at before
    after: int

    def audit(self) -> AuditEntry:
        return AuditEntry(
            _CHANNEL_ACTIONS[self.channel],
            _scope(ScopeKind.GUILD, self.guild_id),
            _text(self.before),
            str(self.after),
        )


Change = (
    LimitSet
    | LimitsReset
    | Granted
    | Banned
    | Unbanned
    | CreditSet
    | AllotmentSet
    | WordBlocked
    | WordUnblocked
    | ChannelSet
)
