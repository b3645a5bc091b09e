"""Limits, the credit ledger and moderator commands, through the fake Discord."""

from __future__ import annotations

import aiohttp
import pytest

from omni.emulator import Fault
from quota import ledger
from tests.harness import Harness, build_world


@pytest.fixture
async def harness(fake_discord, emulator, database_url):
    """The limits suite runs twice: on SQLite and on PostgreSQL."""
    h = Harness(fake_discord, emulator, build_world(fake_discord), database_url)
    await h.start_bot()
    yield h
    await h.stop_bot()


MODERATOR_COMMANDS = [
    ("limits show", {}),
    ("limits set", {"scope": "guild", "field": "images_per_day", "value": 3}),
    ("limits reset", {}),
    ("limits grant", {"user": "alice", "images": 5}),
    ("limits ban", {"user": "alice"}),
    ("limits unban", {"user": "alice"}),
    ("credit show", {}),
    ("credit set", {"images": 10}),
    ("blocklist add", {"word": "castle"}),
    ("blocklist remove", {"word": "castle"}),
    ("blocklist list", {}),
    ("modlog channel", {"channel": "modlog"}),
]


def resolve(harness, options: dict) -> dict:
    w = harness.world
    named = {"alice": w.alice, "bob": w.bob, "modlog": w.modlog}
    return {k: named.get(v, v) if isinstance(v, str) else v for k, v in options.items()}


async def moderate(harness, name: str, **options):
    record = await harness.command(harness.world.mod, name, **resolve(harness, options))
    await harness.answered(record)
    assert record.latest.ephemeral
    return record


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
    grant = await harness.bot.services.db.fetchval(
        "SELECT images FROM grants WHERE user_id = $1", harness.world.alice.id
    )
    assert grant == 0


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
    await moderate(harness, "credit set", images=2)
    refused = await harness.imagine(images=3)
    await harness.finished(refused)
    assert "budget has 2 image(s) left" in refused.followups[0].content


async def test_out_of_credit_at_omniinfer_pauses_everyone_and_tells_moderators(harness):
    await moderate(harness, "modlog channel", channel=harness.world.modlog)
    harness.emulator.credit = 0
    failed = await harness.imagine()
    await harness.finished(failed)
    assert "out of credit" in failed.latest.text
    await harness.fake.wait_for(
        lambda: any(
            "out of credit" in m.content
            for m in harness.fake.channel_messages(harness.world.modlog)
        )
    )
    paused = await harness.imagine(member=harness.world.bob)
    await harness.finished(paused)
    assert "paused" in paused.followups[0].content
    harness.emulator.credit = None
    await moderate(harness, "credit set", images=100)
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
    await harness.fake.wait_for(
        lambda: any(
            "images_per_hour: 5 → 6" in m.content
            for m in harness.fake.channel_messages(harness.world.modlog)
        )
    )


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
        ("credit set", {"images": -5}, "from 0 to"),
    ],
)
async def test_absurd_values_get_a_clear_error_and_change_nothing(harness, name, options, error):
    record = await moderate(harness, name, **options)
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
