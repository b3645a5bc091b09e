"""Run-time checks every command and button makes before touching the domain.

`guild_only` on a command is a hint to Discord's UI, not a guarantee: a user-installed app, a
DM or a forged payload still reaches the bot. Everything that reads or spends a server's
limits first proves it runs in a server the bot is in.
"""

from __future__ import annotations

import discord

from cogs.utils import wording
from cogs.utils.replies import answer


async def known_guild(interaction: discord.Interaction) -> int | None:
    """The id of the server the interaction comes from, when the bot is in it; otherwise
    the member is told (ephemerally) and None is returned."""
    guild_id = interaction.guild_id
    client = interaction.client
    if guild_id is not None and client.get_guild(guild_id) is not None:
        return guild_id
    await answer(interaction, wording.SERVERS_ONLY)
    return None
