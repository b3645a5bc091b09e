"""Answering an interaction once, whatever state its response is in."""

from __future__ import annotations

import logging

import discord

log = logging.getLogger(__name__)


async def answer(interaction: discord.Interaction, text: str) -> None:
    """Tell the member `text`, ephemerally: as the response, or (after a deferral) as a
    follow-up in place of the public "thinking" reply. Never raises."""
    try:
        if interaction.response.is_done():
            thinking = discord.InteractionResponseType.deferred_channel_message
            if interaction.response.type is thinking:
                # The first followup would take the place of the public "thinking" reply:
                # remove that first, so the error goes to the member alone.
                await interaction.delete_original_response()
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException as error:
        log.warning("could not answer the member: %s", error)
