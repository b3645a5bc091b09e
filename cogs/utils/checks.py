"""Run-time permission checks: Discord's default_permissions only hide commands, and server
admins can change them, so every moderator action is checked again when it runs.

Two levels. A server's *moderators* (Manage Server) run that server: its limits, grants,
bans, blocklist and channels. The bot's *operator* (the application's owner or team members,
or a user listed in OWNER_IDS) runs what every server shares: the account's credit and each
server's allotment of it. Manage Server in one server never reaches what others get.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import discord
from discord import app_commands

from cogs.utils import wording

if TYPE_CHECKING:
    from bot import ImagineBot

MODERATOR_PERMISSIONS = discord.Permissions(manage_guild=True)


class NotOperator(app_commands.CheckFailure):
    """Answered by the error cog with its message."""


def require_moderator(interaction: discord.Interaction) -> None:
    """Raise `MissingPermissions` (answered by the error cog) unless the member may moderate."""
    if not interaction.permissions.manage_guild:
        raise app_commands.MissingPermissions(["manage_guild"])


async def is_operator(bot: ImagineBot, user: discord.abc.User) -> bool:
    """Listed in OWNER_IDS, or the application's owner or a member of its team (as Discord
    says; discord.py asks once and remembers)."""
    return user.id in bot.settings.owner_ids or await bot.is_owner(user)


async def is_operator_of(interaction: discord.Interaction) -> bool:
    """Whether the user behind `interaction` is the operator (the client is always the bot)."""
    return await is_operator(cast("ImagineBot", interaction.client), interaction.user)


async def require_operator(interaction: discord.Interaction) -> None:
    """Raise `NotOperator` (answered by the error cog) unless the user is the operator."""
    if not await is_operator_of(interaction):
        raise NotOperator(wording.OPERATOR_ONLY)
