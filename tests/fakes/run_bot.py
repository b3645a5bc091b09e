"""Run the real bot (`bot.main`) in its own process, pointed at a fake Discord.

    FAKE_DISCORD_URL=http://127.0.0.1:PORT python -m tests.fakes.run_bot

Only the two discord.py addresses are changed, as the test fixtures do in-process; the rest
(settings from the environment, signals, shutdown) is exactly `python bot.py`.
"""

from __future__ import annotations

import os
import sys

import discord
import yarl

import bot


def main() -> int:
    base = os.environ["FAKE_DISCORD_URL"]
    discord.http.Route.BASE = f"{base}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(
        base.replace("http://", "ws://") + "/gateway"
    )
    return bot.main()


if __name__ == "__main__":
    sys.exit(main())
