"""`OMNI_SANDBOX=1` with each `BACKEND`: /imagine end to end against that backend's emulator,
started in-process by the bot itself; and `ACCOUNT_CREDIT=unlimited`."""

from __future__ import annotations

import pytest

from tests.backends.conftest import finished, settled
from tests.harness import image_bytes


@pytest.mark.parametrize("backend", ["omniinfer", "novita", "a1111"])
async def test_sandbox_runs_imagine_against_the_backends_own_emulator(harness, backend):
    await harness.stop_bot()
    harness.settings_overrides = {
        "backend": backend,
        "sandbox": True,
        "omni_api_key": "sandbox",
        "omni_base_url": "http://127.0.0.1:9",  # nothing listens: only the sandbox answers
        "a1111_urls": (),
        "sandbox_duration": 0.5,
    }
    await harness.start_bot()
    built = harness.bot.backend
    assert built.emulator is not None and built.base_url.startswith("http://127.0.0.1:")
    assert harness.bot.services.backend.capabilities.name == backend
    record = await harness.imagine(images=2)
    await finished(harness, record)
    assert "Images ready" in record.latest.text
    assert "sandbox" in record.latest.text
    assert [data[:8] for data in image_bytes(record)] == [b"\x89PNG\r\n\x1a\n"] * 2
    assert harness.emulator.stats.tasks_created == 0  # the external one was never used
    await settled(harness)


async def moderate(harness, name: str, **options) -> None:
    record = await harness.command(harness.world.mod, name, **options)
    await harness.answered(record)
    assert record.latest.ephemeral


async def test_unlimited_credit_admits_any_number_of_images_but_members_limits_hold(
    harness, tmp_path
):
    await harness.stop_bot()
    harness.database_url = f"sqlite:///{tmp_path}/unlimited.db"  # a first start
    harness.settings_overrides = {"account_credit": None}
    await harness.start_bot()
    await moderate(harness, "limits set", scope="guild", field="images_per_day", value=8)
    await moderate(harness, "limits set", scope="guild", field="cooldown_seconds", value=0)
    await moderate(harness, "limits set", scope="guild", field="images_per_hour", value=100)
    for member in (harness.world.alice, harness.world.bob, harness.world.mod):
        for _ in range(2):
            record = await harness.imagine(member=member, images=4)
            await finished(harness, record)
            assert "Images ready" in record.latest.text
    assert harness.emulator.stats.images_generated == 24  # no budget ever said no
    over = await harness.imagine(images=1)
    await finished(harness, over)
    assert "8 images per day" in over.followups[0].content
    await settled(harness)


async def test_the_sandbox_keeps_a_ledger_of_its_own(harness):
    await harness.stop_bot()
    harness.settings_overrides = {
        "sandbox": True,
        "omni_api_key": "sandbox",
        "omni_base_url": "http://127.0.0.1:9",
        "sandbox_duration": 0.2,
    }
    await harness.start_bot()
    record = await harness.imagine(images=2)
    await finished(harness, record)
    assert "Images ready" in record.latest.text
    sandbox_show = await harness.command(harness.world.mod, "credit show")
    await harness.answered(sandbox_show)
    assert "**spent:** 2" in sandbox_show.latest.text
    harness.settings_overrides = {}
    await harness.restart_bot()  # the same database, now for real
    real_show = await harness.command(harness.world.mod, "credit show")
    await harness.answered(real_show)
    assert "**spent:** 0" in real_show.latest.text
