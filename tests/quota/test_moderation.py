"""Moderation against a real database (SQLite and PostgreSQL), no Discord: each change is
validated, applied and audited together, comes back as data, and a refused one changes
nothing."""

from __future__ import annotations

import pytest

from quota import ledger
from quota import store as quota_store
from quota.allotments import Allotment, AllotmentPeriod
from quota.changes import (
    AllotmentSet,
    Banned,
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
from quota.limits import LimitField, OutOfRange, Quantity, Rule, ScopeKind
from quota.moderation import (
    MAX_BLOCKED_WORDS,
    MAX_CREDIT,
    BlocklistFull,
    Moderation,
    ModerationError,
)
from storage import open_database

GUILD, OTHER_GUILD, MOD, ALICE, ROLE = 1, 2, 5, 10, 77
DAILY = LimitField.IMAGES_PER_DAY


class TickingClock:
    """A millisecond later at each reading: changes are audited in the order they were made."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


@pytest.fixture
async def moderation(database_url):
    db = await open_database(database_url)
    clock = TickingClock()
    async with db.transaction() as conn:
        await ledger.ensure_account(conn, 100, clock())
    yield Moderation(db, clock)
    await db.close()


async def audit(moderation: Moderation, guild: int = GUILD) -> list[tuple]:
    """The server's audit rows, oldest first, as (action, target, before, after, actor)."""
    rows = await moderation.audit_trail(guild, limit=100)
    return [
        (r["action"], r["target"], r["before_value"], r["after_value"], r["actor_id"])
        for r in reversed(rows)
    ]


async def test_a_limit_is_set_with_what_it_replaced_and_audited(moderation):
    first = await moderation.set_limit(GUILD, MOD, ScopeKind.ROLE, ROLE, DAILY, 5)
    second = await moderation.set_limit(GUILD, MOD, ScopeKind.ROLE, ROLE, DAILY, 0)
    assert first == LimitSet(ScopeKind.ROLE, ROLE, DAILY, before=None, after=5)
    assert second == LimitSet(ScopeKind.ROLE, ROLE, DAILY, before=5, after=0)
    assert await moderation.rules(GUILD) == [Rule(ScopeKind.ROLE, ROLE, DAILY, 0)]
    assert await audit(moderation) == [
        ("limit set", "role:77 images_per_day", None, "5", MOD),
        ("limit set", "role:77 images_per_day", "5", "0", MOD),
    ]


async def test_an_absurd_limit_is_refused_with_its_range_and_changes_nothing(moderation):
    with pytest.raises(ModerationError) as refused:
        await moderation.set_limit(GUILD, MOD, ScopeKind.GUILD, GUILD, DAILY, -1)
    assert refused.value.problem == OutOfRange(DAILY, 0, 10_000, -1)
    assert await moderation.rules(GUILD) == []
    assert await audit(moderation) == []


async def test_resetting_removes_only_that_scopes_rules_and_lists_them(moderation):
    await moderation.set_limit(GUILD, MOD, ScopeKind.USER, ALICE, DAILY, 9)
    await moderation.set_limit(GUILD, MOD, ScopeKind.USER, ALICE, LimitField.CONCURRENT_JOBS, 1)
    await moderation.set_limit(GUILD, MOD, ScopeKind.GUILD, GUILD, DAILY, 3)
    reset = await moderation.reset_limits(GUILD, MOD, ScopeKind.USER, ALICE)
    assert isinstance(reset, LimitsReset)
    assert set(reset.removed) == {
        Rule(ScopeKind.USER, ALICE, DAILY, 9),
        Rule(ScopeKind.USER, ALICE, LimitField.CONCURRENT_JOBS, 1),
    }
    assert await moderation.rules(GUILD) == [Rule(ScopeKind.GUILD, GUILD, DAILY, 3)]


async def test_grants_add_up_within_their_bounds(moderation):
    assert await moderation.grant(GUILD, MOD, ALICE, 3) == Granted(ALICE, before=0, after=3)
    assert await moderation.grant(GUILD, MOD, ALICE, 2) == Granted(ALICE, before=3, after=5)
    with pytest.raises(ModerationError) as refused:
        await moderation.grant(GUILD, MOD, ALICE, 0)
    assert refused.value.problem == OutOfRange(Quantity.GRANT, 1, 10_000, 0)
    assert (await quota_store.standing(moderation._db, GUILD, ALICE)).grant == 5
    assert (await quota_store.standing(moderation._db, OTHER_GUILD, ALICE)).grant == 0


async def test_a_ban_holds_in_its_server_until_lifted(moderation):
    assert await moderation.ban(GUILD, MOD, ALICE) == Banned(ALICE, already=False)
    assert await moderation.ban(GUILD, MOD, ALICE) == Banned(ALICE, already=True)
    assert (await moderation.quota(GUILD, ALICE, set())).banned
    assert not (await moderation.quota(OTHER_GUILD, ALICE, set())).banned
    assert await moderation.unban(GUILD, MOD, ALICE) == Unbanned(ALICE, was_banned=True)
    assert await moderation.unban(GUILD, MOD, ALICE) == Unbanned(ALICE, was_banned=False)
    assert not (await moderation.quota(GUILD, ALICE, set())).banned


async def test_blocked_words_are_stored_normalised_and_the_list_is_bounded(moderation):
    assert await moderation.block_word(GUILD, MOD, "  Red   Castle ") == WordBlocked(
        "red castle", already=False
    )
    assert (await moderation.block_word(GUILD, MOD, "red castle")).already
    assert await moderation.blocklist(GUILD) == ["red castle"]
    with pytest.raises(ModerationError) as too_long:
        await moderation.block_word(GUILD, MOD, "x" * 101)
    assert too_long.value.problem == OutOfRange(Quantity.WORD_LENGTH, 1, 100, 101)
    assert await moderation.unblock_word(GUILD, MOD, "RED castle") == WordUnblocked(
        "red castle", was_blocked=True
    )
    assert await moderation.blocklist(GUILD) == []


async def test_a_full_blocklist_refuses_one_more_word(moderation):
    async with moderation._db.transaction() as conn:
        for number in range(MAX_BLOCKED_WORDS):
            await quota_store.block_word(conn, GUILD, f"word{number}")
    with pytest.raises(ModerationError) as refused:
        await moderation.block_word(GUILD, MOD, "one more")
    assert refused.value.problem == BlocklistFull(MAX_BLOCKED_WORDS)
    assert "one more" not in await moderation.blocklist(GUILD)


async def test_setting_the_credit_restarts_spending_and_lifts_a_pause(moderation):
    db = moderation._db
    async with db.transaction() as conn:
        await ledger.reserve(conn, 30, 0.0)
        await ledger.settle(conn, 30, spent=True, now=0.0)
        await ledger.pause(conn, "out of credit", 0.0)
    change = await moderation.set_credit(GUILD, MOD, 250)
    assert change == CreditSet(available_before=70, credit=250, was_paused=True)
    balance = await moderation.balance()
    assert (balance.credit, balance.spent, balance.paused_reason) == (250, 0, None)
    with pytest.raises(ModerationError) as refused:
        await moderation.set_credit(GUILD, MOD, MAX_CREDIT + 1)
    assert refused.value.problem == OutOfRange(Quantity.CREDIT, 0, MAX_CREDIT, MAX_CREDIT + 1)
    assert await audit(moderation) == [("credit set", "account", "70", "250", MOD)]


async def test_channels_are_set_per_server_and_every_modlog_is_listed(moderation):
    first = await moderation.set_channel(GUILD, MOD, GuildChannel.MODLOG, 300)
    moved = await moderation.set_channel(GUILD, MOD, GuildChannel.MODLOG, 301)
    assert first == ChannelSet(GUILD, GuildChannel.MODLOG, before=None, after=300)
    assert moved == ChannelSet(GUILD, GuildChannel.MODLOG, before=300, after=301)
    await moderation.set_channel(GUILD, MOD, GuildChannel.GALLERY, 400)
    await moderation.set_channel(OTHER_GUILD, MOD, GuildChannel.GALLERY, 401)
    assert await moderation.channel(GUILD, GuildChannel.MODLOG) == 301
    assert await moderation.channel(GUILD, GuildChannel.GALLERY) == 400
    assert await moderation.channel(OTHER_GUILD, GuildChannel.MODLOG) is None
    assert await moderation.modlog_channels() == [301]
    assert [row[0] for row in await audit(moderation)] == [
        "modlog channel",
        "modlog channel",
        "gallery channel",
    ]


async def test_an_allotment_is_set_replaced_and_removed_with_its_use_shown(moderation):
    month = Allotment(40, AllotmentPeriod.MONTH)
    day = Allotment(5, AllotmentPeriod.DAY)
    assert await moderation.set_allotment(GUILD, MOD, month) == AllotmentSet(GUILD, None, month)
    assert await moderation.set_allotment(GUILD, MOD, day) == AllotmentSet(GUILD, month, day)
    status = await moderation.credit_status(GUILD)
    assert status.allotment is not None
    assert (status.allotment.allotment, status.allotment.used, status.allotment.left) == (
        day,
        0,
        5,
    )
    assert (await moderation.credit_status(OTHER_GUILD)).allotment is None
    assert await moderation.set_allotment(GUILD, MOD, None) == AllotmentSet(GUILD, day, None)
    assert (await moderation.credit_status(GUILD)).allotment is None
    with pytest.raises(ModerationError):
        await moderation.set_allotment(GUILD, MOD, Allotment(-1, AllotmentPeriod.DAY))
    assert [row[2:4] for row in await audit(moderation)] == [
        (None, "40/month"),
        ("40/month", "5/day"),
        ("5/day", None),
    ]


async def test_a_members_standing_is_what_moderators_set_for_them_and_their_server(moderation):
    """What admission reads in two statements: each moderator setting, for this member and
    server only."""
    db = moderation._db
    async with db.transaction() as conn:
        assert await quota_store.standing(conn, GUILD, ALICE) == quota_store.Standing(
            banned=False, grant=0, allotment=None, rules=[], blocked_words=[]
        )
    await moderation.ban(GUILD, MOD, ALICE)
    await moderation.grant(GUILD, MOD, ALICE, 3)
    await moderation.set_allotment(GUILD, MOD, Allotment(50, AllotmentPeriod.MONTH))
    await moderation.set_limit(GUILD, MOD, ScopeKind.ROLE, ROLE, DAILY, 5)
    for word in ("zebra", "apple"):
        await moderation.block_word(GUILD, MOD, word)
    await moderation.ban(OTHER_GUILD, MOD, ALICE + 1)  # another member, another server
    await moderation.block_word(OTHER_GUILD, MOD, "mango")

    async with db.transaction() as conn:
        assert await quota_store.standing(conn, GUILD, ALICE) == quota_store.Standing(
            banned=True,
            grant=3,
            allotment=Allotment(50, AllotmentPeriod.MONTH),
            rules=[Rule(ScopeKind.ROLE, ROLE, DAILY, 5)],
            blocked_words=["apple", "zebra"],
        )
        other = await quota_store.standing(conn, OTHER_GUILD, ALICE)
    assert (other.banned, other.grant, other.allotment, other.rules) == (False, 0, None, [])
    assert other.blocked_words == ["mango"]
