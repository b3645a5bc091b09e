"""Shared fixtures. PostgreSQL fixtures live in tests/pg.py; the bot harness in harness.py."""

from __future__ import annotations

import pytest

from omni.emulator import Emulator
from tests.fakes.discord import FakeDiscord
from tests.harness import Harness, build_world

pytest_plugins = ["tests.pg"]


@pytest.fixture
async def emulator():
    emu = Emulator(api_key="e2e-key", duration=0.6)
    await emu.start()
    yield emu
    await emu.stop()


@pytest.fixture
async def fake_discord():
    fake = FakeDiscord()
    await fake.start()
    with fake.patch_discord():
        yield fake
    await fake.stop()


@pytest.fixture
async def harness(fake_discord, emulator, tmp_path):
    """The bot running against the fake Discord and the emulator, on SQLite."""
    h = Harness(fake_discord, emulator, build_world(fake_discord), f"sqlite:///{tmp_path}/bot.db")
    await h.start_bot()
    yield h
    await h.stop_bot()
