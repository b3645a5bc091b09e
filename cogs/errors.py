"""One place where command errors become friendly, ephemeral answers.

No member ever sees a traceback or a reply stuck on "thinking": whatever escapes a command
ends in a short message, and the details go to the log.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs.utils import wording
from cogs.utils.replies import answer

if TYPE_CHECKING:
    from bot import ImagineBot

log = logging.getLogger(__name__)


def describe(error: app_commands.AppCommandError) -> str:
    """The member's answer to an error from a command's checks or option parsing. A value
    the member (or a forged payload) sent is never echoed back."""
    if isinstance(error, app_commands.MissingPermissions):
        return wording.MODERATORS_ONLY
    if isinstance(error, app_commands.NoPrivateMessage):
        return wording.SERVERS_ONLY
    if isinstance(error, app_commands.CheckFailure):
        return f"⛔ {error}" if str(error) else wording.NOT_HERE
    if isinstance(error, app_commands.TransformerError):
        return wording.option_not_valid(error.transformer.type.name.lower())
    if isinstance(error, app_commands.CommandSignatureMismatch):
        return wording.option_not_valid("command")  # options typed unlike the synced command
    return wording.UNEXPECTED


class Errors(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self._previous = bot.tree.on_error
        bot.tree.error(self.on_app_command_error)

    async def cog_unload(self) -> None:
        self.bot.tree.error(self._previous)

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        text = describe(error)
        if text is wording.UNEXPECTED:
            original = getattr(error, "original", error)
            log.error(
                "command %s failed",
                interaction.command.qualified_name if interaction.command else "?",
                exc_info=original,
            )
        await answer(interaction, text)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Errors(bot))
