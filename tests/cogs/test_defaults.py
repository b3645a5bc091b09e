"""`/settings`: a member's own defaults for `/imagine`, per server and per member, checked as
`/imagine` checks its options; an option given to `/imagine` always wins."""

from __future__ import annotations

import pytest

from members.defaults import MemberDefaults


async def settings(harness, member, name, **options):
    record = await harness.command(member, f"settings {name}", **options)
    await harness.answered(record)
    assert record.latest.ephemeral
    return record.latest.text


async def imagined(harness, member=None, **options):
    harness.clock.advance(3600)  # past the cooldown and the hourly limits
    record = await harness.imagine(member=member, **options)
    await harness.finished(record)
    assert "Images ready" in record.latest.text
    return record.latest.text


async def test_imagine_uses_the_members_default_for_an_option_left_out(harness):
    said = await settings(harness, harness.world.alice, "set", steps=30, cfg_scale=9.5)
    assert "**steps:** 30" in said and "**cfg_scale:** 9.5" in said
    shown = await imagined(harness)
    assert "Steps: 30" in shown and "CFG scale: 9.5" in shown


async def test_an_option_given_to_imagine_wins_over_the_default(harness):
    await settings(harness, harness.world.alice, "set", steps=30)
    assert "Steps: 12" in await imagined(harness, steps=12)


async def test_defaults_are_the_members_own(harness):
    await settings(harness, harness.world.alice, "set", steps=30)
    shown = await imagined(harness, member=harness.world.bob)
    assert "Steps: 20" in shown  # /imagine's own default
    assert "no defaults" in await settings(harness, harness.world.bob, "show")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"steps": 80}, "steps"),
        ({"cfg_scale": 0.2}, "cfg_scale"),
        ({"sampler": "DDIM"}, "sampler"),
        ({"images": 9}, "images"),
    ],
)
async def test_an_invalid_default_is_refused_with_imagines_own_error(harness, options, named):
    refused = await settings(harness, harness.world.alice, "set", **options)
    from_imagine = await harness.imagine(**options)
    await harness.answered(from_imagine)
    assert f"**{named}**" in refused
    assert refused == from_imagine.latest.text
    assert "no defaults" in await settings(harness, harness.world.alice, "show")


async def test_one_bad_value_stores_none_of_the_others(harness):
    await settings(harness, harness.world.alice, "set", steps=30, sampler="DDIM")
    assert "no defaults" in await settings(harness, harness.world.alice, "show")


async def test_clearing_one_default_or_all_of_them(harness):
    alice = harness.world.alice
    await settings(harness, alice, "set", steps=30, size="1216x832", negative_prompt="blur")
    after_one = await settings(harness, alice, "clear", option="steps")
    assert "steps" not in after_one and "1216x832" in after_one and "blur" in after_one
    assert "Steps: 20" in await imagined(harness)
    assert "no defaults" in await settings(harness, alice, "clear")


async def test_defaults_are_kept_per_server(harness):
    store = MemberDefaults(harness.bot.services.db, harness.clock)
    capabilities = harness.bot.services.backend.capabilities
    here, elsewhere = harness.world.guild.id, harness.world.guild.id + 1
    alice = harness.world.alice.id
    await store.set(here, alice, {"steps": 30}, capabilities)
    await store.set(elsewhere, alice, {"steps": 40, "images": 2}, capabilities)
    assert await store.get(here, alice) == {"steps": 30}
    assert await store.get(elsewhere, alice) == {"steps": 40, "images": 2}
    await store.clear(elsewhere, alice)
    assert await store.get(here, alice) == {"steps": 30}
