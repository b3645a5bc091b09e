"""Settings are validated at start: each problem on one line, secrets never echoed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from settings import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB"


def test_a_complete_environment_loads():
    settings = load_settings({"DISCORD_TOKEN": TOKEN, "OMNI_API_KEY": "key-123456"})
    assert settings.omni_base_url == "https://api.omniinfer.io"
    assert settings.database_url.startswith("sqlite:///")
    assert TOKEN not in repr(settings)
    assert "key-123456" not in repr(settings)


def test_every_problem_is_reported_at_once_and_names_its_setting():
    with pytest.raises(ConfigError) as caught:
        load_settings({"LOG_LEVEL": "loud", "DEV_GUILD_ID": "abc", "OMNI_BASE_URL": "ftp://x"})
    names = [p.split()[0].split("=")[0] for p in caught.value.problems]
    assert set(names) >= {
        "DISCORD_TOKEN",
        "OMNI_API_KEY",
        "LOG_LEVEL",
        "DEV_GUILD_ID",
        "OMNI_BASE_URL",
    }


def test_a_malformed_token_is_reported_without_echoing_it():
    with pytest.raises(ConfigError) as caught:
        load_settings({"DISCORD_TOKEN": "not-a-token-secret", "OMNI_API_KEY": "k"})
    assert "not-a-token-secret" not in str(caught.value)


def test_sandbox_needs_no_api_key():
    settings = load_settings({"DISCORD_TOKEN": TOKEN, "OMNI_SANDBOX": "1"})
    assert settings.sandbox
    assert settings.omni_api_key


def test_bot_without_settings_prints_one_line_per_problem_and_exits_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "OMNI_API_KEY")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bot.py")],
        cwd=tmp_path,  # no .env here
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert [line.split()[1] for line in lines] == ["DISCORD_TOKEN", "OMNI_API_KEY"]
    assert "Traceback" not in result.stderr


def test_lease_timings_are_settings_and_a_renewal_fits_twice_in_a_lease():
    base = {"DISCORD_TOKEN": TOKEN, "OMNI_API_KEY": "key-123456"}
    default = load_settings(base)
    assert (default.lease_seconds, default.lease_renew_seconds) == (20.0, 2.0)
    quick = load_settings({**base, "LEASE_SECONDS": "6", "LEASE_RENEW_SECONDS": "1"})
    assert (quick.lease_seconds, quick.lease_renew_seconds) == (6.0, 1.0)
    with pytest.raises(ConfigError) as caught:
        load_settings({**base, "LEASE_SECONDS": "6", "LEASE_RENEW_SECONDS": "4"})
    [problem] = caught.value.problems
    assert problem.startswith("LEASE_RENEW_SECONDS=4") and "LEASE_SECONDS=6" in problem
