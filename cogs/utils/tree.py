"""The bot's command tree: a payload discord.py cannot even parse still gets an answer.

discord.py turns option values into Python values (a NUMBER with `float()`...) before any
check or error handler runs, so a forged or malformed payload raised past `on_error` and
left the member on "thinking…" for ever. Here such an error is logged and answered like
any bad option, without echoing the value.
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from cogs.utils import wording
from cogs.utils.replies import answer

log = logging.getLogger(__name__)


class CommandTree(app_commands.CommandTree[discord.Client]):
    async def _call(self, interaction: discord.Interaction) -> None:
        try:
            await super()._call(interaction)
        except app_commands.AppCommandError:
            raise  # the tree's own path: on_error has answered it
        except (TypeError, ValueError, KeyError, OverflowError) as error:
            interaction.command_failed = True
            log.info("unparseable options for an interaction: %s", type(error).__name__)
            await answer(interaction, wording.option_not_valid("command"))
