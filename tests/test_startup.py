"""At start, a database the bot cannot use is one clear line and exit code 2, before anything
talks to Discord (here no Discord is reachable at all: a login attempt would hang or fail
with a traceback instead); a healthy start and stop log no warning."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.run_bot import spawn

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: nothing listens


def _start_bot(tmp_path: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OMNI_", "DATABASE_"))},
        "DISCORD_TOKEN": TOKEN,
        "OMNI_SANDBOX": "1",
        "DATABASE_URL": database_url,
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "bot.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _corrupt_file(tmp_path: Path) -> str:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a database" * 100)
    return f"sqlite:///{path}"


def _folder_that_cannot_be_made(tmp_path: Path) -> str:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data folder should be")  # unwritable, even for root
    return f"sqlite:///{blocker}/bot.db"


def _postgres_down(tmp_path: Path) -> str:
    return f"postgresql://bot:s3cret-pass@127.0.0.1:{_closed_port()}/bot"


@pytest.mark.parametrize(
    "make_url",
    [_corrupt_file, _folder_that_cannot_be_made, _postgres_down],
    ids=["corrupt-file", "folder-cannot-be-made", "postgres-down"],
)
def test_an_unusable_database_is_one_line_and_exit_2_before_any_login(tmp_path, make_url):
    result = _start_bot(tmp_path, make_url(tmp_path))
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "DATABASE_URL" in errors[0]
    assert "Traceback" not in result.stderr
    assert "s3cret-pass" not in result.stderr
    assert "logged in" not in result.stderr


async def test_a_healthy_start_and_stop_log_no_warning(fake_discord, emulator, tmp_path):
    """What the operator reads: on a healthy setup, a start and a stop (SIGTERM) log what
    happened and no warning: not the voice support the bot never uses, no session left
    unclosed."""
    process = await spawn(
        fake_discord.base_url,
        {
            "DISCORD_TOKEN": fake_discord.bot_token,
            "OMNI_API_KEY": emulator.api_key,
            "OMNI_BASE_URL": emulator.base_url,
            "DATABASE_URL": f"sqlite:///{tmp_path}/bot.db",
            "LOG_LEVEL": "INFO",
        },
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    started = b""
    async with asyncio.timeout(30):
        while b"logged in as" not in started:
            line = await process.stderr.readline()
            assert line, started.decode()  # the bot ended before it was ready
            started += line
    process.send_signal(signal.SIGTERM)
    _, stopped = await asyncio.wait_for(process.communicate(), 30)
    text = (started + stopped).decode()
    assert process.returncode == 0, text[-2000:]
    assert "shutting down" in text
    worrying = ("WARNING", "ERROR", "Traceback", "Unclosed")
    assert [line for line in text.splitlines() if any(w in line for w in worrying)] == []
