"""Run the real bot (`bot.main`) in its own process, pointed at a fake Discord.

    FAKE_DISCORD_URL=http://127.0.0.1:PORT python -m tests.fakes.run_bot

Only the two discord.py addresses are changed, as the test fixtures do in-process; the rest
(settings from the environment, signals, shutdown) is exactly `python bot.py`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import discord
import yarl

import bot

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    base = os.environ["FAKE_DISCORD_URL"]
    discord.http.Route.BASE = f"{base}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(
        base.replace("http://", "ws://") + "/gateway"
    )
    return bot.main()


async def spawn(
    fake_url: str, settings: dict[str, str], *, stderr: int | None = asyncio.subprocess.DEVNULL
) -> asyncio.subprocess.Process:
    """Start `python bot.py` against the fake Discord at `fake_url`, with these settings (its
    log, stderr, kept when asked: `stderr=asyncio.subprocess.PIPE`)."""
    env = {**os.environ, "FAKE_DISCORD_URL": fake_url, **settings}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.run_bot",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=stderr,
    )


if __name__ == "__main__":
    sys.exit(main())
