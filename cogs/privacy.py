"""`/privacy forget`, and the sweep that erases old jobs' texts (`RETENTION_DAYS`).

The rules (what is erased, and when) are `jobs/retention.py`'s and `JobStore`'s; this cog
asks the member to confirm, and runs the sweep at start and every hour.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands, tasks

from cogs.utils import wording
from cogs.utils.guards import known_guild
from jobs import retention
from storage import StorageError

if TYPE_CHECKING:
    from bot import ImagineBot
    from services import Services

log = logging.getLogger(__name__)

CONFIRM_TIMEOUT = 120.0  # seconds the Confirm/Cancel question stays answerable


class Privacy(commands.Cog):
    privacy = app_commands.Group(
        name="privacy", description="What the bot keeps about you", guild_only=True
    )

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @property
    def services(self) -> Services:
        return self.bot.services

    async def cog_load(self) -> None:
        try:
            await self.sweep_now()  # at start, before any member is answered
        except StorageError as error:
            log.warning("retention sweep failed at start, retried in an hour: %s", error)
        self.retention_sweep.start()

    async def cog_unload(self) -> None:
        self.retention_sweep.cancel()

    @tasks.loop(hours=retention.SWEEP_EVERY_HOURS)
    async def retention_sweep(self) -> None:
        if self.retention_sweep.current_loop == 0:
            return  # cog_load has just swept
        try:
            await self.sweep_now()
        except StorageError as error:
            log.warning("retention sweep failed, retried in an hour: %s", error)

    async def sweep_now(self) -> int:
        """Erase the texts of jobs older than RETENTION_DAYS now; how many were erased."""
        erased = await retention.sweep(self.services.jobs, self.bot.settings.retention_days)
        if erased:
            log.info("retention: erased the texts of %d job(s)", erased)
        return erased

    @privacy.command(name="forget", description="Erase the texts of all your jobs here")
    async def forget(self, interaction: discord.Interaction) -> None:
        guild_id = await known_guild(interaction)
        if guild_id is None:
            return
        view = ForgetQuestion(self, guild_id, interaction.user.id)
        await interaction.response.send_message(wording.FORGET_CONFIRM, view=view, ephemeral=True)
        view.question = interaction

    async def erase_member(self, guild_id: int, user_id: int) -> tuple[int, int]:
        """Erase a member's finished jobs' texts in a server: (erased, still running)."""
        jobs = self.services.jobs
        erased = await jobs.erase_finished_texts(guild_id=guild_id, user_id=user_id)
        running = [
            job
            for job in await jobs.unfinished()
            if job.origin.guild_id == guild_id and job.origin.user_id == user_id
        ]
        return erased, len(running)


class ForgetQuestion(discord.ui.View):
    """Confirm or Cancel, for the member who asked; forgotten after CONFIRM_TIMEOUT (it need
    not survive a restart: the member just asks again)."""

    def __init__(self, cog: Privacy, guild_id: int, user_id: int) -> None:
        super().__init__(timeout=CONFIRM_TIMEOUT)
        self.cog = cog
        self.guild_id = guild_id
        self.user_id = user_id
        self.question: discord.Interaction | None = None

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id == self.user_id:
            return True
        await interaction.response.send_message(wording.FORGET_NOT_YOURS, ephemeral=True)
        return False

    @discord.ui.button(label="Confirm", style=discord.ButtonStyle.danger)
    async def confirm(self, interaction: discord.Interaction, _: discord.ui.Button) -> None:
        self.stop()
        erased, running = await self.cog.erase_member(self.guild_id, self.user_id)
        await interaction.response.edit_message(content=wording.forgot(erased, running), view=None)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, _: discord.ui.Button) -> None:
        self.stop()
        await interaction.response.edit_message(content=wording.FORGET_CANCELLED, view=None)

    async def on_timeout(self) -> None:
        if self.question is not None:
            # The question may have been dismissed, or its token expired: nothing to tell.
            with contextlib.suppress(discord.HTTPException):
                await self.question.edit_original_response(
                    content=wording.FORGET_EXPIRED, view=None
                )


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Privacy(bot))
