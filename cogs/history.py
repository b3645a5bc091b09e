"""`/history`: a member's recent jobs with their parameters and links."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs.utils import embeds, wording
from cogs.utils.guards import known_guild
from jobs.model import Job, JobKind, JobState

if TYPE_CHECKING:
    from bot import ImagineBot
    from services import Services

HISTORY_PAGE = 5


class History(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @property
    def services(self) -> Services:
        return self.bot.services

    @app_commands.command(name="history", description="Your recent images")
    @app_commands.guild_only()
    @app_commands.describe(user="Moderators: whose history to show", page="Page number")
    async def history(
        self,
        interaction: discord.Interaction,
        user: discord.Member | None = None,
        page: app_commands.Range[int, 1, 1000] = 1,
    ) -> None:
        others = user is not None and user.id != interaction.user.id
        if others and not interaction.permissions.manage_guild:
            await interaction.response.send_message(
                wording.HISTORY_OTHERS_MODERATORS_ONLY, ephemeral=True
            )
            return
        guild_id = await known_guild(interaction)
        if guild_id is None:
            return
        member = user or interaction.user
        total = await self.services.jobs.count_for(guild_id, member.id)
        pages = max(1, -(-total // HISTORY_PAGE))
        page = min(max(page, 1), pages)
        jobs = await self.services.jobs.history(
            guild_id, member.id, limit=HISTORY_PAGE, offset=(page - 1) * HISTORY_PAGE
        )
        embed = discord.Embed(title=f"Recent images of {member.display_name}")
        for job in jobs:
            embed.add_field(name=_history_title(job), value=_history_line(job), inline=False)
        if not jobs:
            embed.description = wording.HISTORY_EMPTY
        embed.set_footer(text=wording.history_footer(page, pages, total))
        await interaction.response.send_message(embed=embed, ephemeral=True)


def _history_title(job: Job) -> str:
    kind = {JobKind.UPSCALE: "Upscale", JobKind.VARIATION: "Variation"}.get(job.kind, "Image")
    return embeds.truncate(f"{kind} · <t:{int(job.created_at)}:R> · {job.state.value}", 256)


def _history_line(job: Job) -> str:
    r = job.request
    seeds = embeds.seed_text(job.result.seeds) if job.result else "—"
    line = (
        f"{embeds.member_text(r.prompt, 200)}\n"
        f"{r.sampler} · {r.steps} steps · cfg {r.cfg_scale:g} · seed {seeds} · "
        f"{r.width}×{r.height}"
    )
    if job.message_id and job.state is JobState.DONE and job.deleted_at is None:
        line += (
            f"\nhttps://discord.com/channels/{job.origin.guild_id}/"
            f"{job.origin.channel_id}/{job.message_id}"
        )
    return embeds.truncate(line, 1024)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(History(bot))
