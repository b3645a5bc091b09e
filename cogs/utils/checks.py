"""Run-time permission checks: Discord's default_permissions only hide commands, and server
admins can change them, so every moderator action is checked again when it runs."""

from __future__ import annotations

import discord
from discord import app_commands

MODERATOR_PERMISSIONS = discord.Permissions(manage_guild=True)


def require_moderator(interaction: discord.Interaction) -> None:
    """Raise `MissingPermissions` (answered by the error cog) unless the member may moderate."""
    if not interaction.permissions.manage_guild:
        raise app_commands.MissingPermissions(["manage_guild"])
