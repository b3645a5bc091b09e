"""Where an upscale finds its source image: the attachment on the finished job's message.

Omniinfer's result links expire, but the images live on in Discord, so the message is the
durable copy (also after a restart). Images that did not fit in the first message are in
the job's further messages, found by file name.
"""

from __future__ import annotations

import discord

from cogs.utils.uploads import file_stem
from jobs.model import Job
from jobs.reporting import SourceImageMissing
from jobs.store import JobStore


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
        if not isinstance(channel, discord.abc.Messageable):
            raise SourceImageMissing(f"channel {parent.origin.channel_id} has no messages")
        wanted = f"{file_stem(parent.id)}_{job.upscale_index}."
        for message_id in (parent.message_id, *parent.followup_message_ids):
            try:
                message = await channel.fetch_message(message_id)
            except (discord.NotFound, discord.Forbidden):
                continue
            found = next((a for a in message.attachments if a.filename.startswith(wanted)), None)
            if found is not None:
                return await found.read()
        raise SourceImageMissing(f"job {parent.id} has no image {job.upscale_index + 1}")
