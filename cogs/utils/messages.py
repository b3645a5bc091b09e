"""Deleting messages the bot posted, by the ids the database holds."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import discord

log = logging.getLogger(__name__)


async def delete_messages(client: discord.Client, channel_id: int, ids: Iterable[int]) -> None:
    """Delete each message; one already gone, or out of the bot's reach, is skipped."""
    channel = client.get_partial_messageable(channel_id)
    for message_id in ids:
        try:
            await channel.get_partial_message(message_id).delete()
        except discord.HTTPException as error:
            log.info("could not delete message %s in %s: %s", message_id, channel_id, error)
