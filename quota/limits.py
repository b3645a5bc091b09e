"""The limits model: which numbers apply to a member, and whether a job fits under them.

Precedence, for each field separately:
1. a rule set for the member themself wins;
2. otherwise, rules set for any of the member's roles: the strictest of those wins;
3. otherwise, the guild's default; otherwise the built-in default.
A role or user rule is an override: it may be looser than the guild default (a "Supporter"
role with more images a day) or stricter (a "New member" role with fewer).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class LimitField(StrEnum):
    IMAGES_PER_DAY = "images_per_day"
    IMAGES_PER_HOUR = "images_per_hour"
    COOLDOWN_SECONDS = "cooldown_seconds"
    CONCURRENT_JOBS = "concurrent_jobs"
    MAX_IMAGES_PER_JOB = "max_images_per_job"


class ScopeKind(StrEnum):
    GUILD = "guild"
    ROLE = "role"
    USER = "user"


BUILT_IN_DEFAULTS: dict[LimitField, int] = {
    LimitField.IMAGES_PER_DAY: 40,
    LimitField.IMAGES_PER_HOUR: 12,
    LimitField.COOLDOWN_SECONDS: 10,
    LimitField.CONCURRENT_JOBS: 2,
    LimitField.MAX_IMAGES_PER_JOB: 4,
}

# What a moderator may set: no negative limits, no absurd values.
FIELD_BOUNDS: dict[LimitField, tuple[int, int]] = {
    LimitField.IMAGES_PER_DAY: (0, 10_000),
    LimitField.IMAGES_PER_HOUR: (0, 1_000),
    LimitField.COOLDOWN_SECONDS: (0, 86_400),
    LimitField.CONCURRENT_JOBS: (0, 20),
    LimitField.MAX_IMAGES_PER_JOB: (1, 4),
}

DAY = 86_400.0
HOUR = 3_600.0


@dataclass(frozen=True)
class Rule:
    scope: ScopeKind
    scope_id: int
    field: LimitField
    value: int


@dataclass(frozen=True)
class Limits:
    images_per_day: int
    images_per_hour: int
    cooldown_seconds: int
    concurrent_jobs: int
    max_images_per_job: int

    def value(self, field: LimitField) -> int:
        return getattr(self, field.value)


class Quantity(StrEnum):
    """Other numbers a moderator or the operator gives, each with its bounds."""

    GRANT = "grant"  # images
    CREDIT = "credit"  # images
    ALLOTMENT = "allotment"  # images
    WORD_LENGTH = "word_length"  # characters of a blocked word


@dataclass(frozen=True)
class OutOfRange:
    """A value refused for its size: what it was for, the accepted range and what was given."""

    what: LimitField | Quantity
    low: int
    high: int
    got: int


def validate_value(field: LimitField, value: int) -> OutOfRange | None:
    """Why `value` cannot be set for `field`, or None when it is acceptable."""
    low, high = FIELD_BOUNDS[field]
    if not low <= value <= high:
        return OutOfRange(field, low, high, value)
    return None


def resolve(rules: list[Rule], *, guild_id: int, user_id: int, role_ids: set[int]) -> Limits:
    """Apply the precedence above to the rules stored for one guild, in one pass over them."""
    user: dict[LimitField, int] = {}
    roles: dict[LimitField, int] = {}
    guild: dict[LimitField, int] = {}
    for rule in rules:
        if rule.scope is ScopeKind.USER and rule.scope_id == user_id:
            user.setdefault(rule.field, rule.value)
        elif rule.scope is ScopeKind.ROLE and rule.scope_id in role_ids:
            roles[rule.field] = min(rule.value, roles.get(rule.field, rule.value))
        elif rule.scope is ScopeKind.GUILD and rule.scope_id == guild_id:
            guild.setdefault(rule.field, rule.value)
    values = BUILT_IN_DEFAULTS | guild | roles | user  # the later wins
    return Limits(**{field.value: value for field, value in values.items()})


@dataclass(frozen=True)
class Usage:
    """What a member has used, as read inside the admission transaction."""

    images_last_day: int
    images_last_hour: int
    running_jobs: int
    last_job_at: float | None
    grant: int
    # (created_at, images) of the member's counted jobs in the last day, oldest first
    recent: tuple[tuple[float, int], ...] = ()


@dataclass(frozen=True)
class LimitReached:
    """A job refused by one of the member's limits: which, its value, and when it frees up
    (None: waiting alone does not free it). `running` is the member's unfinished jobs, for
    `concurrent_jobs`."""

    field: LimitField
    limit: int
    resets_at: float | None = None
    running: int = 0


@dataclass(frozen=True)
class Verdict:
    refusal: LimitReached | None
    grant_used: int = 0


def check(limits: Limits, usage: Usage, images: int, now: float) -> Verdict:
    """Would a job of `images` fit? Cheap and pure: runs inside the reservation transaction."""
    if images > limits.max_images_per_job:
        return Verdict(LimitReached(LimitField.MAX_IMAGES_PER_JOB, limits.max_images_per_job))
    if usage.running_jobs >= limits.concurrent_jobs:
        return Verdict(
            LimitReached(
                LimitField.CONCURRENT_JOBS, limits.concurrent_jobs, running=usage.running_jobs
            )
        )
    if usage.last_job_at is not None and limits.cooldown_seconds:
        ready_at = usage.last_job_at + limits.cooldown_seconds
        if now < ready_at:
            return Verdict(
                LimitReached(LimitField.COOLDOWN_SECONDS, limits.cooldown_seconds, ready_at)
            )
    over_day = usage.images_last_day + images - limits.images_per_day
    over_hour = usage.images_last_hour + images - limits.images_per_hour
    overflow = max(over_day, over_hour, 0)
    if overflow == 0:
        return Verdict(None)
    if overflow <= usage.grant:
        return Verdict(None, grant_used=overflow)
    if over_hour > 0 and over_hour >= over_day:
        return Verdict(
            LimitReached(
                LimitField.IMAGES_PER_HOUR,
                limits.images_per_hour,
                _frees_at(usage.recent, over_hour - usage.grant, HOUR, now),
            )
        )
    return Verdict(
        LimitReached(
            LimitField.IMAGES_PER_DAY,
            limits.images_per_day,
            _frees_at(usage.recent, over_day - usage.grant, DAY, now),
        )
    )


def _frees_at(
    recent: tuple[tuple[float, int], ...], needed: int, window: float, now: float
) -> float | None:
    """When enough of the member's images age out of `window` for `needed` more."""
    freed = 0
    for created_at, images in recent:
        if created_at <= now - window:
            continue
        freed += images
        if freed >= needed:
            return created_at + window
    return None
