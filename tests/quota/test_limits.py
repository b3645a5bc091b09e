"""The limits model: precedence of rules, and what a job is refused for."""

from quota.limits import (
    BUILT_IN_DEFAULTS,
    DAY,
    HOUR,
    LimitField,
    LimitReached,
    Limits,
    OutOfRange,
    Rule,
    ScopeKind,
    Usage,
    check,
    resolve,
    validate_value,
)

GUILD, ALICE, SUPPORTER, NEWBIE = 1, 10, 100, 101
DAILY = LimitField.IMAGES_PER_DAY


def rule(scope: ScopeKind, scope_id: int, value: int, field: LimitField = DAILY) -> Rule:
    return Rule(scope, scope_id, field, value)


def limits_for(rules: list[Rule], roles: set[int]) -> Limits:
    return resolve(rules, guild_id=GUILD, user_id=ALICE, role_ids=roles)


def test_built_in_defaults_apply_when_nothing_is_set():
    assert limits_for([], set()).images_per_day == BUILT_IN_DEFAULTS[DAILY]


def test_guild_default_replaces_built_in():
    assert limits_for([rule(ScopeKind.GUILD, GUILD, 5)], set()).images_per_day == 5


def test_a_role_override_may_be_looser_than_the_guild_default():
    rules = [rule(ScopeKind.GUILD, GUILD, 5), rule(ScopeKind.ROLE, SUPPORTER, 50)]
    assert limits_for(rules, {SUPPORTER}).images_per_day == 50


def test_among_several_roles_the_strictest_wins():
    rules = [rule(ScopeKind.ROLE, SUPPORTER, 50), rule(ScopeKind.ROLE, NEWBIE, 3)]
    assert limits_for(rules, {SUPPORTER, NEWBIE}).images_per_day == 3


def test_a_user_override_beats_every_role():
    rules = [rule(ScopeKind.ROLE, NEWBIE, 3), rule(ScopeKind.USER, ALICE, 30)]
    assert limits_for(rules, {NEWBIE}).images_per_day == 30


def test_roles_the_member_lacks_do_not_apply():
    rules = [rule(ScopeKind.GUILD, GUILD, 5), rule(ScopeKind.ROLE, SUPPORTER, 50)]
    assert limits_for(rules, set()).images_per_day == 5


def test_fields_resolve_independently():
    rules = [rule(ScopeKind.USER, ALICE, 0, LimitField.COOLDOWN_SECONDS)]
    limits = limits_for(rules, set())
    assert limits.cooldown_seconds == 0
    assert limits.images_per_day == BUILT_IN_DEFAULTS[DAILY]


def test_negative_and_absurd_values_are_rejected_with_the_range():
    assert validate_value(DAILY, -1) == OutOfRange(DAILY, 0, 10_000, -1)
    assert validate_value(DAILY, 10**9) == OutOfRange(DAILY, 0, 10_000, 10**9)
    assert validate_value(LimitField.MAX_IMAGES_PER_JOB, 0) is not None
    assert validate_value(DAILY, 20) is None


LIMITS = Limits(
    images_per_day=10,
    images_per_hour=6,
    cooldown_seconds=30,
    concurrent_jobs=1,
    max_images_per_job=4,
)
NOW = 1_000_000.0


def usage(**changes) -> Usage:
    base = dict(images_last_day=0, images_last_hour=0, running_jobs=0, last_job_at=None, grant=0)
    base.update(changes)
    return Usage(**base)


def test_a_job_within_every_limit_is_accepted():
    assert check(LIMITS, usage(), 4, NOW).refusal is None


def test_too_many_images_per_job_is_refused_with_the_limit():
    assert check(LIMITS, usage(), 5, NOW).refusal == LimitReached(
        LimitField.MAX_IMAGES_PER_JOB, limit=4
    )


def test_a_second_concurrent_job_is_refused_with_the_running_count():
    assert check(LIMITS, usage(running_jobs=1), 1, NOW).refusal == LimitReached(
        LimitField.CONCURRENT_JOBS, limit=1, running=1
    )


def test_cooldown_refusal_says_when_it_ends():
    verdict = check(LIMITS, usage(last_job_at=NOW - 10), 1, NOW)
    assert verdict.refusal == LimitReached(LimitField.COOLDOWN_SECONDS, 30, resets_at=NOW + 20)


def test_cooldown_over_means_accepted():
    assert check(LIMITS, usage(last_job_at=NOW - 31), 1, NOW).refusal is None


def test_hourly_limit_resets_when_the_oldest_images_age_out():
    recent = ((NOW - 3000, 4), (NOW - 100, 2))
    verdict = check(LIMITS, usage(images_last_day=6, images_last_hour=6, recent=recent), 1, NOW)
    assert verdict.refusal == LimitReached(LimitField.IMAGES_PER_HOUR, 6, NOW - 3000 + HOUR)


def test_daily_limit_reset_time_counts_only_the_last_day():
    recent = ((NOW - 80_000, 5), (NOW - 50_000, 5))
    verdict = check(LIMITS, usage(images_last_day=10, recent=recent), 2, NOW)
    assert verdict.refusal == LimitReached(LimitField.IMAGES_PER_DAY, 10, NOW - 80_000 + DAY)


def test_a_grant_covers_images_past_the_allowance():
    verdict = check(LIMITS, usage(images_last_day=9, grant=5), 3, NOW)
    assert verdict.refusal is None
    assert verdict.grant_used == 2


def test_a_grant_too_small_does_not_help_and_is_not_used():
    verdict = check(LIMITS, usage(images_last_day=10, grant=1), 3, NOW)
    assert verdict.refusal is not None
    assert verdict.grant_used == 0
