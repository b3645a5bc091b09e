"""Whatever option values reach `/imagine` — as Discord's client sends them, or forged by a
client that skips its checks — each ends in a clear answer, and a refused request reserves
nothing.

The payloads are drawn at random from a fixed seed (repeatable), mixing valid values, wrong
types, huge and invisible strings, out-of-range numbers and missing options.
"""

from __future__ import annotations

import random
from typing import Any

from quota import ledger
from tests.fakes.discord.webhooks import APPLICATION_COMMAND

STRING, INTEGER, BOOLEAN, NUMBER = 3, 4, 5, 10
OPTION_TYPES = {
    "prompt": STRING,
    "negative_prompt": STRING,
    "sampler": STRING,
    "steps": INTEGER,
    "cfg_scale": NUMBER,
    "seed": INTEGER,
    "size": STRING,
    "images": INTEGER,
    "strength": NUMBER,
}
HUGE = "x" * 3000
ODD_VALUES: list[Any] = [
    HUGE,
    "",
    "\u200b\u200b",
    "ｃａｔ",
    "1024x1024",
    "DPM++ 2M Karras",
    -1,
    0,
    3,
    51,
    2**40,
    -(2**40),
    1.5,
    7.0,
    float("1e300"),
    True,
    None,
    [1, 2],
    {"a": 1},
]
CLEAR_ENDINGS = ("❌", "⛔", "Images ready", "This works only")


def random_options(rng: random.Random) -> list[dict[str, Any]]:
    options = []
    for name, kind in OPTION_TYPES.items():
        if rng.random() < 0.5 and name != "prompt":
            continue
        if name == "prompt" and rng.random() < 0.1:
            continue  # a forged payload without its required option
        value = rng.choice(ODD_VALUES) if rng.random() < 0.7 else _plausible(name, rng)
        declared = kind if rng.random() < 0.8 else rng.choice([STRING, INTEGER, NUMBER, BOOLEAN])
        options.append({"type": declared, "name": name, "value": value})
    return options


def _plausible(name: str, rng: random.Random) -> Any:
    return {
        "prompt": "a red fox",
        "negative_prompt": "blur",
        "sampler": "Euler a",
        "steps": rng.randint(1, 50),
        "cfg_scale": rng.uniform(1, 30),
        "seed": rng.randint(-1, 2**32 - 1),
        "size": "1216x832",
        "images": rng.randint(1, 4),
        "strength": rng.random(),
    }[name]


async def forged_imagine(harness, options: list[dict[str, Any]]):
    fake, world = harness.fake, harness.world
    command = fake.commands_of(fake.app).find(world.guild.id, "imagine")
    data = {
        "id": command["id"],
        "name": "imagine",
        "type": 1,
        "guild_id": str(world.guild.id),
        "options": options,
    }
    return await fake._interact(fake.app, APPLICATION_COMMAND, world.general, world.alice, data)


async def test_random_option_payloads_each_end_in_a_clear_answer_and_refusals_reserve_nothing(
    harness,
):
    harness.emulator.duration = 0.05
    harness.settings_overrides = {"max_jobs_in_flight": 8}
    rng = random.Random(20261130)
    admitted = 0
    for _ in range(60):
        harness.clock.advance(3600)  # no cooldown or hourly limit between the examples
        record = await forged_imagine(harness, random_options(rng))
        await harness.finished(record, timeout=20)
        said = record.said()
        assert any(ending in said for ending in CLEAR_ENDINGS), said
        assert HUGE not in said  # a value is never echoed at length
        assert "Something went wrong" not in said, said
        if "Images ready" in said:
            admitted += 1
        else:
            assert record.latest is None or record.latest.ephemeral or record.followups
    await harness.bot.services.runner.wait_idle()
    balance = await ledger.balance(harness.bot.services.db)
    assert balance.reserved == 0
    assert harness.emulator.stats.tasks_created == admitted
    assert 0 < admitted < 60  # the draw covers both outcomes
