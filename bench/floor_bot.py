"""The floor of this stack: a bare discord.py bot doing the same Discord and HTTP work per
`/imagine` as ours, and nothing else.

    FAKE_DISCORD_URL=http://127.0.0.1:PORT DISCORD_TOKEN=... OMNI_API_KEY=... \\
    OMNI_BASE_URL=http://127.0.0.1:PORT DEV_GUILD_ID=... python -m bench.floor_bot

No database, limits, credit ledger, queue, restart bookkeeping or validation: per job it
defers the interaction, submits one txt2img task with aiohttp, polls its progress twice on
the schedule ours follows for a 3 s task (after 1 s, then just after the predicted finish),
edits the reply with the progress once, downloads the image and makes the final edit (the
same kind of embed, the image attached, the same seven buttons with persistent-looking
custom ids). Like ours, it shows no place in line: ours does only for a job that has to
wait, and at these loads none does. `bench.imagine_load` runs it beside ours: whatever ours
spends beyond this is the cost of what ours adds. Run like `tests.fakes.run_bot` runs ours
(its own process; only discord.py's two addresses point at the fake Discord when
FAKE_DISCORD_URL is set).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import time
import uuid
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands

SAFETY_NEGATIVE_PROMPT = "nsfw, nude, naked, nipples, explicit, sexual, porn, gore, blood, violence"
FIRST_POLL = 1.0  # as ours: a task is never done sooner
FINISH_MARGIN = 0.05  # as ours: wake just after the predicted finish
WORKING, DONE = discord.Colour.blurple(), discord.Colour.green()


class FloorBot(discord.Client):
    def __init__(self, guild_id: int, omni_url: str, omni_key: str) -> None:
        super().__init__(intents=discord.Intents.default())
        self.tree = app_commands.CommandTree(self)
        self.guild = discord.Object(guild_id)
        self.omni_url = omni_url.rstrip("/")
        self.headers = {"X-Omni-Key": omni_key, "Accept": "application/json"}
        self.session: aiohttp.ClientSession | None = None

        @self.tree.command(name="imagine", description="Generate an image", guild=self.guild)
        async def imagine(interaction: discord.Interaction, prompt: str) -> None:
            await self.imagine(interaction, prompt)

    async def setup_hook(self) -> None:
        self.session = aiohttp.ClientSession()
        await self.tree.sync(guild=self.guild)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        await super().close()

    async def omni(self, method: str, path: str, **kwargs: Any) -> Any:
        assert self.session is not None
        url = self.omni_url + path
        async with self.session.request(method, url, headers=self.headers, **kwargs) as response:
            return (await response.json())["data"]

    async def imagine(self, interaction: discord.Interaction, prompt: str) -> None:
        started = time.monotonic()
        job_id = uuid.uuid4().hex
        callback = await interaction.response.defer(thinking=True)
        message_id = callback.message_id if callback else None
        assert message_id is not None
        reply = interaction.followup
        body = {
            "prompt": prompt,
            "negative_prompt": SAFETY_NEGATIVE_PROMPT,
            "sampler_name": "DPM++ SDE Karras",
            "steps": 20,
            "cfg_scale": 7.0,
            "seed": -1,
            "width": 1024,
            "height": 1024,
            "batch_size": 1,
            "n_iter": 1,
            "model_name": "sd_xl_base_1.0.safetensors",
        }
        task_id = (await self.omni("POST", "/v2/txt2img", json=body))["task_id"]
        await asyncio.sleep(FIRST_POLL)
        progress = await self.omni("GET", "/v2/progress", params={"task_id": task_id})
        while progress["status"] < 2:  # 0 queued, 1 running
            if progress["status"] == 1:
                filled = round(20 * progress["progress"])
                text = (
                    f"🎨 Generating\n`{'█' * filled}{'░' * (20 - filled)}` "
                    f"{progress['progress']:.0%} · about {progress['eta_relative']:.0f}s left"
                )
                await reply.edit_message(message_id, embed=status(job_id, prompt, text))
            await asyncio.sleep(max(0.25, progress["eta_relative"] + FINISH_MARGIN))
            progress = await self.omni("GET", "/v2/progress", params={"task_id": task_id})
        if progress["status"] != 2:
            raise RuntimeError(f"task {task_id} ended with status {progress['status']}")
        seed = json.loads(progress["info"])["seed"]
        assert self.session is not None
        images = []
        for url in progress["imgs"]:
            async with self.session.get(url) as response:
                images.append(await response.read())
        files = [
            discord.File(io.BytesIO(data), filename=f"sdxl_{job_id[:8]}_{i}.png")
            for i, data in enumerate(images)
        ]
        embed = result(job_id, prompt, files[0].filename, seed, interaction.user.id, started)
        await reply.edit_message(message_id, embed=embed, attachments=files, view=buttons(job_id))


def status(job_id: str, prompt: str, text: str) -> discord.Embed:
    embed = discord.Embed(description=f"**{prompt}**", colour=WORKING)
    embed.add_field(name="Status", value=text, inline=False)
    return embed.set_footer(text=f"job {job_id}")


def result(
    job_id: str, prompt: str, filename: str, seed: int, user_id: int, started: float
) -> discord.Embed:
    embed = discord.Embed(
        title="Images ready",
        url=f"https://omniinfer.io/#job-{job_id}",
        description=f"**{prompt}**",
        colour=DONE,
    )
    for name, value in (
        ("Sampler", "DPM++ SDE Karras"),
        ("Steps", "20"),
        ("CFG scale", "7"),
        ("Seed", str(seed)),
        ("Size", "1024×1024"),
        ("Time", f"{time.monotonic() - started:.1f}s"),
    ):
        embed.add_field(name=name, value=value, inline=True)
    embed.add_field(name="Requested by", value=f"<@{user_id}>", inline=False)
    embed.set_image(url=f"attachment://{filename}")
    return embed.set_footer(text=f"job {job_id}")


def buttons(job_id: str) -> discord.ui.View:
    """Ours' result view for one image: four buttons, then Upscale, subtle, strong rows."""
    view = discord.ui.View(timeout=None)
    for name, label, emoji, style in (
        ("reroll", "Reroll", "🎲", discord.ButtonStyle.primary),
        ("share", "Share", "📣", discord.ButtonStyle.success),
        ("details", "Details", "🔎", discord.ButtonStyle.secondary),
        ("delete", "Delete", "🗑️", discord.ButtonStyle.danger),
    ):
        custom_id = f"imagine:{name}:{job_id}"
        view.add_item(discord.ui.Button(label=label, emoji=emoji, style=style, custom_id=custom_id))
    for row, label, emoji, custom_id in (
        (1, "Upscale 1", "⬆️", f"imagine:upscale:{job_id}:0"),
        (2, "1 subtle", "🔀", f"imagine:variation:{job_id}:0:subtle"),
        (3, "1 strong", "🔀", f"imagine:variation:{job_id}:0:strong"),
    ):
        view.add_item(discord.ui.Button(label=label, emoji=emoji, custom_id=custom_id, row=row))
    return view


async def run() -> None:
    env = os.environ
    if "FAKE_DISCORD_URL" in env:  # as tests.fakes.run_bot: only discord.py's two addresses
        base = env["FAKE_DISCORD_URL"]
        discord.http.Route.BASE = f"{base}/api/v10"
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(
            base.replace("http://", "ws://") + "/gateway"
        )
    bot = FloorBot(int(env["DEV_GUILD_ID"]), env["OMNI_BASE_URL"], env["OMNI_API_KEY"])
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: asyncio.ensure_future(bot.close()))
    async with bot:
        await bot.start(env["DISCORD_TOKEN"])


if __name__ == "__main__":
    asyncio.run(run())
