"""Where an upscale finds its source image: the attachment on the finished job's message.

Omniinfer's result links expire, but the images live on in Discord, so the message is the
durable copy (also after a restart).
"""

from __future__ import annotations

import discord

from jobs.model import Job
from jobs.store import JobStore


class SourceImageMissing(Exception):
    pass


class DiscordSourceImages:
    def __init__(self, bot: discord.Client, store: JobStore) -> None:
        self._bot = bot
        self._store = store

    async def fetch(self, job: Job) -> bytes:
        parent = await self._store.get(job.parent_job_id or "")
        if parent is None or parent.message_id is None or job.upscale_index is None:
            raise SourceImageMissing(f"job {job.id} has no source image")
        channel = self._bot.get_channel(parent.origin.channel_id) or await self._bot.fetch_channel(
            parent.origin.channel_id
        )
        message = await channel.fetch_message(parent.message_id)  # type: ignore[union-attr]
        images = sorted(
            (a for a in message.attachments if (a.content_type or "").startswith("image/")),
            key=lambda a: a.filename,
        )
        if job.upscale_index >= len(images):
            raise SourceImageMissing(f"job {parent.id} has no image {job.upscale_index + 1}")
        return await images[job.upscale_index].read()
