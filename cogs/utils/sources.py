"""Where an upscale finds its source image: the attachment on the finished job's message.

Omniinfer's result links expire, but the images live on in Discord, so the message is the
durable copy (also after a restart). When the images did not fit in one message, the rest
follow it in the channel, so those few messages are searched too.
"""

from __future__ import annotations

import discord

from cogs.utils.uploads import file_stem
from jobs.model import Job
from jobs.reporting import SourceImageMissing
from jobs.store import JobStore

# Messages after the job's reply searched for the rest of its images: they follow it within
# moments, but other members may write in between.
SPLIT_SEARCH = 50


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
        try:
            message = await channel.fetch_message(parent.message_id)
        except (discord.NotFound, discord.Forbidden) as error:
            raise SourceImageMissing(f"job {parent.id}'s message cannot be read") from error
        found = _attachment(message, wanted)
        if found is None:
            async for later in channel.history(after=message, limit=SPLIT_SEARCH):
                if later.author == self._bot.user and (found := _attachment(later, wanted)):
                    break
        if found is None:
            raise SourceImageMissing(f"job {parent.id} has no image {job.upscale_index + 1}")
        return await found.read()


def _attachment(message: discord.Message, name_prefix: str) -> discord.Attachment | None:
    return next((a for a in message.attachments if a.filename.startswith(name_prefix)), None)
