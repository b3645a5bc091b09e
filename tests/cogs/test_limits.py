"""Limits, the credit ledger, allotments, moderator and operator commands, through the fake
Discord."""

from __future__ import annotations

import aiohttp
import discord
import pytest

from omni.emulator import Fault
from quota import ledger
from quota import store as quota_store
from tests.fakes.discord import Member
from tests.harness import Harness, build_world

OPERATOR_ONLY = "Only the bot's operator"


@pytest.fixture
async def harness(fake_discord, emulator, database_url):
    """The limits suite runs twice: on SQLite and on PostgreSQL. The server has a moderator
    (Manage Server) and, apart, the bot's operator (listed in OWNER_IDS, also a moderator)."""
    world = build_world(fake_discord)
    operator = world.guild.add_member("operator", roles=[world.mods])
    h = Harness(fake_discord, emulator, world, database_url)
    h.settings_overrides = {"owner_ids": frozenset({operator.id})}
    await h.start_bot()
    yield h
    await h.stop_bot()


def operator_of(harness) -> Member:
    return next(m for m in harness.world.guild.members if m.user.name == "operator")


MODERATOR_COMMANDS = [
    ("limits show", {}),
    ("limits set", {"scope": "guild", "field": "images_per_day", "value": 3}),
    ("limits reset", {}),
    ("limits grant", {"user": "alice", "images": 5}),
    ("limits ban", {"user": "alice"}),
    ("limits unban", {"user": "alice"}),
    ("credit show", {}),
    ("credit set", {"images": 10}),
    ("credit allot", {"images": 10}),
    ("credit unallot", {}),
    ("blocklist add", {"word": "castle"}),
    ("blocklist remove", {"word": "castle"}),
    ("blocklist list", {}),
    ("modlog channel", {"channel": "modlog"}),
]


def resolve(harness, options: dict) -> dict:
    w = harness.world
    named = {"alice": w.alice, "bob": w.bob, "modlog": w.modlog}
    return {k: named.get(v, v) if isinstance(v, str) else v for k, v in options.items()}


async def moderate(harness, name: str, *, by: Member | None = None, **options):
    """`by` (the moderator unless given) runs `/name`; the answer is for them alone."""
    member = by or harness.world.mod
    record = await harness.command(member, name, **resolve(harness, options))
    await harness.answered(record)
    assert record.latest.ephemeral
    return record


async def operate(harness, name: str, **options):
    """The bot's operator runs `/name`."""
    return await moderate(harness, name, by=operator_of(harness), **options)


def modlog_says(harness, text: str, channel=None) -> bool:
    return any(
        text in m.content for m in harness.fake.channel_messages(channel or harness.world.modlog)
    )


async def balance(harness) -> ledger.Balance:
    """The ledger once every job has settled."""
    await harness.bot.services.runner.wait_idle()
    return await ledger.balance(harness.bot.services.db)


@pytest.mark.parametrize(("name", "options"), MODERATOR_COMMANDS)
async def test_a_member_is_refused_every_moderator_command_even_sent_directly(
    harness, name, options
):
    before = await harness.bot.services.moderation.audit_trail(harness.world.guild.id)
    record = await harness.command(harness.world.alice, name, **resolve(harness, options))
    await harness.answered(record)
    assert record.latest.ephemeral
    assert "Only moderators" in record.latest.text
    assert await harness.bot.services.moderation.audit_trail(harness.world.guild.id) == before


async def test_moderator_commands_are_hidden_from_members_in_discords_ui(harness):
    commands = {c["name"]: c for c in harness.fake.guild_commands[harness.world.guild.id]}
    for group in ("limits", "credit", "blocklist", "modlog"):
        assert int(commands[group]["default_member_permissions"]) == 1 << 5  # Manage Server
    assert commands["imagine"].get("default_member_permissions") is None
    assert commands["quota"].get("default_member_permissions") is None


async def test_a_refused_job_says_which_limit_and_when_it_resets_and_spends_nothing(harness):
    first = await harness.imagine()
    await harness.finished(first)
    second = await harness.imagine()
    await harness.finished(second)
    refusal = second.followups[0]
    assert refusal.ephemeral
    assert "10s between jobs" in refusal.content and "<t:" in refusal.content
    assert second.original_deleted  # the public "thinking…" reply is gone
    assert (await balance(harness)).reserved == 0
    harness.clock.advance(11)
    third = await harness.imagine()
    await harness.finished(third)
    assert "Images ready" in third.latest.text


async def test_daily_allowance_is_enforced_and_resets_after_a_day(harness):
    await moderate(harness, "limits set", scope="guild", field="images_per_day", value=3)
    await moderate(harness, "limits set", scope="guild", field="cooldown_seconds", value=0)
    ok = await harness.imagine(images=3)
    await harness.finished(ok)
    over = await harness.imagine(images=1)
    await harness.finished(over)
    assert "images per day" in over.followups[0].content
    quota = await harness.command(harness.world.alice, "quota")
    await harness.answered(quota)
    assert "0 of 3" in quota.latest.text
    harness.clock.advance(86_401)
    again = await harness.imagine()
    await harness.finished(again)
    assert "Images ready" in again.latest.text


async def test_role_and_user_overrides_follow_the_documented_precedence(harness):
    w = harness.world
    await moderate(harness, "limits set", scope="guild", field="max_images_per_job", value=1)
    await moderate(
        harness, "limits set", scope="user", field="max_images_per_job", value=3, target=w.alice
    )
    alice = await harness.imagine(images=3)
    bob = await harness.imagine(member=w.bob, images=2)
    await harness.finished(alice)
    await harness.finished(bob)
    assert "Images ready" in alice.latest.text
    assert "at most 1 images per job" in bob.followups[0].content


async def test_a_grant_lets_a_member_past_their_allowance_once(harness):
    await moderate(harness, "limits set", scope="guild", field="images_per_day", value=1)
    await moderate(harness, "limits grant", user=harness.world.alice, images=2)
    first = await harness.imagine(images=3)
    await harness.finished(first)
    assert "Images ready" in first.latest.text
    harness.clock.advance(11)
    second = await harness.imagine()
    await harness.finished(second)
    assert "images per day" in second.followups[0].content


async def test_a_job_that_fails_uncharged_gives_back_the_grant_it_used(harness):
    await moderate(harness, "limits set", scope="guild", field="images_per_day", value=1)
    await moderate(harness, "limits grant", user=harness.world.alice, images=2)
    harness.emulator.faults.fail_next_task("the GPU caught fire")
    failed = await harness.imagine(images=3)
    await harness.finished(failed)
    assert "The generation failed" in failed.latest.text
    harness.clock.advance(11)
    retried = await harness.imagine(images=3)
    await harness.finished(retried)
    assert "Images ready" in retried.latest.text


async def test_a_job_counted_as_spent_keeps_the_grant_it_used(harness):
    await moderate(harness, "limits set", scope="guild", field="images_per_day", value=1)
    await moderate(harness, "limits grant", user=harness.world.alice, images=2)
    harness.emulator.faults.add(Fault("txt2img", "drop", after_accept=True))
    uncertain = await harness.imagine(images=3)  # Omniinfer may have made and billed these
    await harness.finished(uncertain)
    assert "did not confirm" in uncertain.latest.text
    db, guild, alice = harness.bot.services.db, harness.world.guild, harness.world.alice
    assert (await quota_store.standing(db, guild.id, alice.id)).grant == 0


async def test_a_banned_member_is_refused_until_unbanned(harness):
    await moderate(harness, "limits ban", user=harness.world.alice)
    refused = await harness.imagine()
    await harness.finished(refused)
    assert "turned off image generation for you" in refused.followups[0].content
    await moderate(harness, "limits unban", user=harness.world.alice)
    ok = await harness.imagine()
    await harness.finished(ok)
    assert "Images ready" in ok.latest.text


async def test_blocked_words_are_refused_in_this_guild(harness):
    await moderate(harness, "blocklist add", word="Castle")
    refused = await harness.imagine(prompt="a castle on a hill")
    await harness.finished(refused)
    assert "“castle”" in refused.followups[0].content
    listing = await moderate(harness, "blocklist list")
    assert "castle" in listing.latest.text
    ok = await harness.imagine(member=harness.world.bob, prompt="a castlewood table")
    await harness.finished(ok)
    assert "Images ready" in ok.latest.text  # whole words only


async def test_credit_is_reserved_committed_and_released(harness):
    before = await balance(harness)
    ok = await harness.imagine(images=2)
    await harness.finished(ok)
    after = await balance(harness)
    assert (after.spent - before.spent, after.reserved) == (2, 0)
    async with aiohttp.ClientSession() as session:
        await session.post(
            f"{harness.emulator.base_url}/_emulator/tasks/next",
            json={"outcome": "fail", "reason": "boom"},
        )
    harness.clock.advance(11)
    failed = await harness.imagine(images=2)
    await harness.finished(failed)
    refunded = await balance(harness)
    assert (refunded.spent, refunded.reserved) == (after.spent, 0)
    quota = await harness.command(harness.world.alice, "quota")
    await harness.answered(quota)
    assert "38 of 40" in quota.latest.text  # the failed job's images came back


async def test_the_budget_refuses_jobs_it_cannot_cover(harness):
    await operate(harness, "credit set", images=2)
    refused = await harness.imagine(images=3)
    await harness.finished(refused)
    assert "budget, shared by every server, has 2 image(s) left" in refused.followups[0].content


async def test_out_of_credit_at_omniinfer_pauses_everyone_and_tells_moderators(harness):
    await moderate(harness, "modlog channel", channel=harness.world.modlog)
    harness.emulator.credit = 0
    failed = await harness.imagine()
    await harness.finished(failed)
    assert "out of credit" in failed.latest.text
    await harness.fake.wait_for(lambda: modlog_says(harness, "out of credit"))
    paused = await harness.imagine(member=harness.world.bob)
    await harness.finished(paused)
    assert "paused" in paused.followups[0].content
    harness.emulator.credit = None
    refused = await moderate(harness, "credit set", images=100)  # not the moderators' to lift
    assert OPERATOR_ONLY in refused.latest.text
    await operate(harness, "credit set", images=100)
    await harness.fake.wait_for(lambda: modlog_says(harness, "(generation resumes)"))
    resumed = await harness.imagine(member=harness.world.bob)
    await harness.finished(resumed)
    assert "Images ready" in resumed.latest.text


async def test_changes_are_audited_and_announced_in_the_modlog(harness):
    await moderate(harness, "modlog channel", channel=harness.world.modlog)
    await moderate(harness, "limits set", scope="guild", field="images_per_hour", value=5)
    await moderate(harness, "limits set", scope="guild", field="images_per_hour", value=6)
    trail = await harness.bot.services.moderation.audit_trail(harness.world.guild.id)
    latest = trail[0]
    assert (latest["action"], latest["before_value"], latest["after_value"]) == (
        "limit set",
        "5",
        "6",
    )
    assert latest["actor_id"] == harness.world.mod.id
    await harness.fake.wait_for(lambda: modlog_says(harness, "images_per_hour: 5 → 6"))


@pytest.mark.parametrize(
    ("name", "options", "error"),
    [
        (
            "limits set",
            {"scope": "guild", "field": "images_per_day", "value": -1},
            "from 0 to 10000",
        ),
        (
            "limits set",
            {"scope": "guild", "field": "concurrent_jobs", "value": 10**6},
            "from 0 to 20",
        ),
        ("limits set", {"scope": "role", "field": "images_per_day", "value": 3}, "**target**"),
        ("limits grant", {"user": "alice", "images": 0}, "from 1 to"),
        ("credit set", {"images": -5}, "credit must be from 0 to 1000000000 images (got -5)"),
        ("credit allot", {"images": -1}, "an allotment must be from 0 to"),
    ],
)
async def test_absurd_values_get_a_clear_error_and_change_nothing(harness, name, options, error):
    record = await operate(harness, name, **options)
    assert error in record.latest.text
    assert await harness.bot.services.moderation.audit_trail(harness.world.guild.id) == []


async def test_settings_and_ledger_survive_a_restart(harness):
    await moderate(harness, "limits set", scope="guild", field="images_per_day", value=7)
    ok = await harness.imagine(images=2)
    await harness.finished(ok)
    await harness.restart_bot()
    shown = await moderate(harness, "limits show")
    assert "`images_per_day` = 7" in shown.latest.text
    quota = await harness.command(harness.world.alice, "quota")
    await harness.answered(quota)
    assert "5 of 7" in quota.latest.text


# -- what every server shares belongs to the operator -----------------------------------------


@pytest.mark.parametrize(
    ("name", "options"),
    [("credit set", {"images": 10**9}), ("credit allot", {"images": 5}), ("credit unallot", {})],
)
async def test_a_moderator_cannot_change_what_every_server_gets(harness, name, options):
    before = await moderate(harness, "credit show")
    refused = await moderate(harness, name, **options)
    assert OPERATOR_ONLY in refused.latest.text
    assert await harness.bot.services.moderation.audit_trail(harness.world.guild.id) == []
    after = await moderate(harness, "credit show")
    assert after.latest.text == before.latest.text


async def test_manage_server_in_a_second_server_does_not_reach_the_first_servers_credit(harness):
    fake = harness.fake
    other = fake.add_guild("Another server")
    admins = other.add_role("Admins", discord.Permissions(manage_guild=True).value)
    their_admin = other.add_member("their-admin", roles=[admins])
    their_channel = fake.add_channel(other, "general")
    # Commands everywhere (not only in the first server), the second server known at login.
    harness.settings_overrides = {**harness.settings_overrides, "dev_guild_id": None}
    await harness.restart_bot()
    before = await moderate(harness, "credit show")

    attempt = await fake.slash(
        other, their_channel, their_admin, "credit set", {"images": 1_000_000_000}
    )
    await harness.answered(attempt)

    assert attempt.latest.ephemeral and OPERATOR_ONLY in attempt.latest.text
    after = await moderate(harness, "credit show")
    assert after.latest.text == before.latest.text
    assert "**available:** 1000 " in after.latest.text
    assert await harness.bot.services.moderation.audit_trail(other.id) == []


async def test_the_operator_sets_the_credit_audited_and_announced_in_every_modlog(harness):
    await moderate(harness, "modlog channel", channel=harness.world.modlog)
    done = await operate(harness, "credit set", images=500)
    assert "credit set account: 1000 available → 500" in done.latest.text
    assert (await balance(harness)).available == 500
    [entry] = [
        row
        for row in await harness.bot.services.moderation.audit_trail(harness.world.guild.id)
        if row["action"] == "credit set"
    ]
    assert (entry["actor_id"], entry["before_value"], entry["after_value"]) == (
        operator_of(harness).id,
        "1000",
        "500",
    )
    await harness.fake.wait_for(lambda: modlog_says(harness, "credit set account"))


async def test_an_allotment_caps_what_the_servers_members_draw_and_says_when_it_resets(harness):
    await moderate(harness, "modlog channel", channel=harness.world.modlog)
    await operate(harness, "credit allot", images=3, period="day")
    first = await harness.imagine(images=2)
    await harness.finished(first)
    assert "Images ready" in first.latest.text

    over = await harness.imagine(member=harness.world.bob, images=2)
    await harness.finished(over)

    refusal = over.followups[0]
    assert refusal.ephemeral
    assert "this server's allotment has 1 image(s) left this day and this job needs 2" in (
        refusal.content
    )
    assert "You can try again <t:" in refusal.content and "Nothing was charged" in refusal.content
    assert (await balance(harness)).reserved == 0
    shown = await moderate(harness, "credit show")
    assert "3 images per day · **used:** 2 · **left:** 1" in shown.latest.text
    trail = await harness.bot.services.moderation.audit_trail(harness.world.guild.id)
    assert ("allotment set", None, "3/day") in [
        (row["action"], row["before_value"], row["after_value"]) for row in trail
    ]
    await harness.fake.wait_for(
        lambda: modlog_says(harness, "allotment set server: — → 3 images per day")
    )
    await operate(harness, "credit unallot")
    uncapped = await harness.imagine(member=harness.world.bob, images=2)
    await harness.finished(uncapped)
    assert "Images ready" in uncapped.latest.text


async def test_credit_show_tells_moderators_the_account_and_their_servers_allotment(harness):
    shown = await moderate(harness, "credit show")
    assert "**Credit:** 1000 images" in shown.latest.text
    assert "**This server's allotment:** none" in shown.latest.text
    await operate(harness, "credit allot", images=40)  # the period defaults to a month
    ok = await harness.imagine(images=2)
    await harness.finished(ok)
    shown = await moderate(harness, "credit show")
    assert "**available:** 998 (shared by every server)" in shown.latest.text
    assert "40 images per month · **used:** 2 · **left:** 38 · resets <t:" in shown.latest.text
