"""Run-time checks every command and button makes before touching the domain.

`guild_only` on a command is a hint to Discord's UI, not a guarantee: a user-installed app, a
DM or a forged payload still reaches the bot. Everything that reads or spends a server's
limits first proves it runs in a server the bot is in.
"""

from __future__ import annotations

import discord
from discord import app_commands

from cogs.utils import wording
from cogs.utils.replies import answer


class UnknownServer(app_commands.NoPrivateMessage):
    """Not from a server the bot is in (a DM, or a server without the bot); the error cog
    answers it as it answers `NoPrivateMessage`."""


def require_known_guild(interaction: discord.Interaction) -> int:
    """The id of the server the interaction comes from, when the bot is in it; otherwise
    raise `UnknownServer`. For checks (`interaction_check`), where the error cog answers."""
    guild_id = interaction.guild_id
    if guild_id is not None and interaction.client.get_guild(guild_id) is not None:
        return guild_id
    raise UnknownServer(wording.SERVERS_ONLY)


async def known_guild(interaction: discord.Interaction) -> int | None:
    """The id of the server the interaction comes from, when the bot is in it; otherwise
    the member is told (ephemerally) and None is returned."""
    try:
        return require_known_guild(interaction)
    except UnknownServer:
        await answer(interaction, wording.SERVERS_ONLY)
        return None
