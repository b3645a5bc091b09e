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

from cogs.utils.replies import answer
from cogs.utils.wording import UNEXPECTED

if TYPE_CHECKING:
    from bot import ImagineBot

log = logging.getLogger(__name__)


def describe(error: app_commands.AppCommandError) -> str:
    if isinstance(error, app_commands.MissingPermissions):
        return "⛔ Only moderators (Manage Server) can use this command."
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command works in servers only."
    if isinstance(error, app_commands.CheckFailure):
        return f"⛔ {error}" if str(error) else "⛔ You can't use this command here."
    if isinstance(error, app_commands.TransformerError):
        return f"❌ **{error.transformer.type.name.lower()}** option: {error.value!r} is not valid."
    return UNEXPECTED


class Errors(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self._previous = bot.tree.on_error
        bot.tree.on_error = self.on_app_command_error

    async def cog_unload(self) -> None:
        self.bot.tree.on_error = self._previous

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        text = describe(error)
        if text is UNEXPECTED:
            original = getattr(error, "original", error)
            log.error(
                "command %s failed",
                interaction.command.qualified_name if interaction.command else "?",
                exc_info=original,
            )
        await answer(interaction, text)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Errors(bot))
