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
FAKE_DISCORD_URL is set). With `SHARD_COUNT` and `SHARD_IDS` (one id) it runs that one
shard, as one of ours' processes does, so several floor processes share the guilds as ours'.

With `BACKEND=a1111` and `A1111_URLS=http://...,http://...` it does per job what ours does
over a pool of AUTOMATIC1111 servers (`backends/a1111.py`), and nothing else: one job per
server at a time (a job takes the idle server freed longest ago, or waits in line, first
come first served, and is shown its place in line as ours shows it: 0.05 s after the line
changes, then at most once a second, only when the place changed); per job the blocking
`POST /sdapi/v1/txt2img` (ours' body, sent the way ours sends it) and, while it runs,
`POST /internal/progress` for its `force_task_id` as soon as the POST is on its way, then
every second until the POST returns (live previews asked for, as ours does); a progress edit
per reading that changed what the reply shows (at most one a second per job, the new live
preview attached), then the base64 PNG decoded and the final edit as above. The server is
free again once its POST has returned. No start-up reads of the servers' samplers, models
or upscalers, no health checks: at these loads ours needs none per job either.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands

SAFETY_NEGATIVE_PROMPT = "nsfw, nude, naked, nipples, explicit, sexual, porn, gore, blood, violence"
FIRST_POLL = 1.0  # as ours: a task is never done sooner
FINISH_MARGIN = 0.05  # as ours: wake just after the predicted finish
WORKING, DONE = discord.Colour.blurple(), discord.Colour.green()
OMNI_SAMPLER = "DPM++ SDE Karras"
A1111_SAMPLER = "DPM++ 2M Karras"  # as ours: the first of its preferred ones a server lists
POLL_INTERVAL = 1.0  # as ours (backends/a1111.py): seconds between progress reads
MIN_EDIT_INTERVAL = 1.0  # as ours (cogs/utils/reporter.py): one progress edit a second a job
POSITIONS_SETTLE, POSITIONS_EVERY = 0.05, 1.0  # as ours (jobs/positions.py): places in line
PREVIEW_FILENAME = "preview.png"
BAR_WIDTH = 20


class FloorBot(discord.Client):
    def __init__(
        self,
        guild_id: int,
        omni_url: str,
        omni_key: str,
        a1111_urls: tuple[str, ...] = (),
        shard: tuple[int, int] | None = None,
    ) -> None:
        shard_id, shard_count = shard or (None, None)
        super().__init__(
            intents=discord.Intents.default(), shard_id=shard_id, shard_count=shard_count
        )
        self.tree = app_commands.CommandTree(self)
        self.guild = discord.Object(guild_id)
        self.omni_url = omni_url.rstrip("/")
        self.headers = {"X-Omni-Key": omni_key, "Accept": "application/json"}
        self.session: aiohttp.ClientSession | None = None
        self.line = Line(a1111_urls) if a1111_urls else None
        self.background: set[asyncio.Task[None]] = set()

        @self.tree.command(name="imagine", description="Generate an image", guild=self.guild)
        async def imagine(interaction: discord.Interaction, prompt: str) -> None:
            if self.line is not None:
                await self.imagine_a1111(interaction, prompt, self.line)
            else:
                await self.imagine(interaction, prompt)

    async def setup_hook(self) -> None:
        self.session = aiohttp.ClientSession()
        await self.tree.sync(guild=self.guild)
        if self.line is not None:
            task = asyncio.create_task(self.line.show_places())
            self.background.add(task)

    async def close(self) -> None:
        for task in self.background:
            task.cancel()
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
        filename, user_id = files[0].filename, interaction.user.id
        embed = result(job_id, prompt, filename, seed, user_id, started, OMNI_SAMPLER)
        await reply.edit_message(message_id, embed=embed, attachments=files, view=buttons(job_id))

    async def a1111(self, url: str, body: dict[str, Any], sent: asyncio.Event | None = None) -> Any:
        """One POST to an A1111 server, its JSON reply; with `sent`, the body goes out as
        ours sends a generation's (`a1111/client.py`: set once the connection is made)."""
        assert self.session is not None
        if sent is None:
            async with self.session.post(url, json=body) as response:
                return await response.json()
        data = announcing(json.dumps(body, separators=(",", ":")).encode(), sent)
        headers = {"Content-Type": "application/json"}
        async with self.session.post(url, data=data, headers=headers) as response:
            return json.loads(await response.read())

    async def imagine_a1111(
        self, interaction: discord.Interaction, prompt: str, line: Line
    ) -> None:
        started = time.monotonic()
        job_id = uuid.uuid4().hex
        callback = await interaction.response.defer(thinking=True)
        message_id = callback.message_id if callback else None
        assert message_id is not None
        reply = Reply(interaction.followup, message_id, job_id, prompt)
        server = await line.take(reply)
        try:
            task_id = "floor-" + uuid.uuid4().hex
            body = {
                "prompt": prompt,
                "negative_prompt": SAFETY_NEGATIVE_PROMPT,
                "sampler_name": A1111_SAMPLER,
                "steps": 20,
                "cfg_scale": 7.0,
                "seed": -1,
                "subseed": -1,
                "subseed_strength": 0.0,
                "width": 1024,
                "height": 1024,
                "batch_size": 1,
                "n_iter": 1,
                "send_images": True,
                "save_images": False,
                "force_task_id": task_id,
            }
            sent = asyncio.Event()
            call = asyncio.ensure_future(self.a1111(f"{server}/sdapi/v1/txt2img", body, sent))
            announced = asyncio.ensure_future(sent.wait())
            await asyncio.wait({call, announced}, return_when=asyncio.FIRST_COMPLETED)
            announced.cancel()
            preview_id = -1
            while not call.done():
                seen = await self.a1111(
                    f"{server}/internal/progress",
                    {"id_task": task_id, "id_live_preview": preview_id, "live_preview": True},
                )
                if call.done():
                    break
                running = seen["active"] or seen["completed"]
                fraction = 1.0 if seen["completed"] else (seen["progress"] or 0.0)
                stage = "🎨 Generating" if running else "⏳ Queued at the image server"
                eta = f" · about {seen['eta']:.0f}s left" if seen["eta"] else ""
                text = f"{stage}\n`{bar(fraction)}` {fraction:.0%}{eta}"
                preview = None
                if running and seen["live_preview"]:
                    preview = base64.b64decode(seen["live_preview"].partition(",")[2])
                if isinstance(seen["id_live_preview"], int):
                    preview_id = seen["id_live_preview"]
                if text != reply.shown or preview is not None:
                    reply.shown = text
                    reply.progress(text, preview)
                await asyncio.wait({call}, timeout=POLL_INTERVAL)
            answer = call.result()
        finally:
            line.give_back(server)
        images = [base64.b64decode(image) for image in answer["images"]]
        seed = json.loads(answer["info"])["all_seeds"][0]
        files = [
            discord.File(io.BytesIO(data), filename=f"sdxl_{job_id[:8]}_{i}.png")
            for i, data in enumerate(images)
        ]
        filename, user_id = files[0].filename, interaction.user.id
        embed = result(job_id, prompt, filename, seed, user_id, started, A1111_SAMPLER)
        await reply.settle()
        await reply.webhook.edit_message(
            message_id, embed=embed, attachments=files, view=buttons(job_id)
        )


class Reply:
    """One job's reply, shown as ours' reporter shows it: progress edits never hold up the
    job, go out one at a time, at most one a second, the newest replacing one not yet sent;
    the final edit lets an edit on its way land first and drops one not yet sent."""

    def __init__(self, webhook: discord.Webhook, message_id: int, job_id: str, prompt: str):
        self.webhook = webhook
        self.message_id = message_id
        self.job_id = job_id
        self.prompt = prompt
        self.shown: str | None = None  # the progress text of the last reading shown
        self.place = 0  # the place in line shown
        self.latest: tuple[str, bytes | None] | None = None
        self.last_edit = float("-inf")
        self.sending = False
        self.task: asyncio.Task[None] | None = None

    def progress(self, text: str, preview: bytes | None = None) -> None:
        self.latest = (text, preview)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self.show())

    async def show(self) -> None:
        loop = asyncio.get_running_loop()
        while self.latest is not None:
            wait = self.last_edit + MIN_EDIT_INTERVAL - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if self.latest is None:
                return
            (text, preview), self.latest = self.latest, None
            embed = status(self.job_id, self.prompt, text)
            files: list[discord.File] = discord.utils.MISSING
            if preview is not None:
                embed.set_image(url=f"attachment://{PREVIEW_FILENAME}")
                files = [discord.File(io.BytesIO(preview), filename=PREVIEW_FILENAME)]
            self.sending = True
            try:
                await self.webhook.edit_message(self.message_id, embed=embed, attachments=files)
            finally:
                self.sending = False
            self.last_edit = loop.time()

    async def settle(self) -> None:
        if self.task is None:
            return
        self.latest = None
        if self.sending:
            await asyncio.wait([self.task])
        else:
            self.task.cancel()


class Line:
    """The A1111 servers, one job each at a time: a job takes the idle server freed longest
    ago, or waits in line (first come, first served) and is shown its place."""

    def __init__(self, urls: tuple[str, ...]) -> None:
        self.idle = deque(url.rstrip("/") for url in urls)
        self.waiting: deque[tuple[Reply, asyncio.Future[str]]] = deque()
        self.changed = asyncio.Event()

    async def take(self, reply: Reply) -> str:
        if self.idle and not self.waiting:
            return self.idle.popleft()
        turn = asyncio.get_running_loop().create_future()
        self.waiting.append((reply, turn))
        self.changed.set()
        return await turn

    def give_back(self, server: str) -> None:
        if self.waiting:
            _, turn = self.waiting.popleft()
            turn.set_result(server)
            self.changed.set()
        else:
            self.idle.append(server)

    async def show_places(self) -> None:
        """As ours: soon after the line changed, then at most once a second, each job in
        line whose place changed is shown its new place."""
        while True:
            await self.changed.wait()
            await asyncio.sleep(POSITIONS_SETTLE)
            self.changed.clear()
            for place, (reply, _) in enumerate(self.waiting, start=1):
                if reply.place != place:
                    reply.place = place
                    reply.progress(f"⏳ Waiting in line: position {place}")
            await asyncio.sleep(POSITIONS_EVERY)


async def announcing(data: bytes, sent: asyncio.Event) -> AsyncIterator[bytes]:
    """A request body that sets `sent` when aiohttp starts writing it (as ours')."""
    sent.set()
    yield data


def bar(fraction: float) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * BAR_WIDTH)
    return "█" * filled + "░" * (BAR_WIDTH - filled)


def status(job_id: str, prompt: str, text: str) -> discord.Embed:
    embed = discord.Embed(description=f"**{prompt}**", colour=WORKING)
    embed.add_field(name="Status", value=text, inline=False)
    return embed.set_footer(text=f"job {job_id}")


def result(
    job_id: str,
    prompt: str,
    filename: str,
    seed: int,
    user_id: int,
    started: float,
    sampler: str,
) -> discord.Embed:
    embed = discord.Embed(
        title="Images ready",
        url=f"https://omniinfer.io/#job-{job_id}",
        description=f"**{prompt}**",
        colour=DONE,
    )
    for name, value in (
        ("Sampler", sampler),
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
    a1111_urls: tuple[str, ...] = ()
    if env.get("BACKEND") == "a1111":
        a1111_urls = tuple(url for url in env["A1111_URLS"].split(",") if url.strip())
    omni = env.get("OMNI_BASE_URL", ""), env.get("OMNI_API_KEY", "")
    shard = None
    if "SHARD_COUNT" in env:  # one shard of several, as ours' SHARD_COUNT and SHARD_IDS
        shard = int(env["SHARD_IDS"]), int(env["SHARD_COUNT"])
    bot = FloorBot(int(env["DEV_GUILD_ID"]), *omni, a1111_urls=a1111_urls, shard=shard)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: asyncio.ensure_future(bot.close()))
    async with bot:
        await bot.start(env["DISCORD_TOKEN"])


if __name__ == "__main__":
    asyncio.run(run())
