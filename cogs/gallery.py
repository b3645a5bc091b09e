"""Community sharing: the gallery channel, votes, `/history`, Variations and Upscale.

Variations and Upscale are jobs like any other: they go through the same admission (limits,
credit) and the same runner as `/imagine`.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from cogs.utils import embeds
from cogs.utils.buttons import GALLERY_BUTTONS, vote_view
from cogs.utils.checks import require_moderator
from jobs.model import Job, JobKind, JobState
from omni import rules
from sharing.gallery import ShareRefusal

if TYPE_CHECKING:
    from bot import ImagineBot
    from cogs.imagine import Imagine
    from services import Services

log = logging.getLogger(__name__)

HISTORY_PAGE = 5


class Gallery(commands.Cog):
    # `/gallery top` is for everyone, so the group cannot be hidden; `/gallery channel`
    # checks for moderators itself.
    gallery = app_commands.Group(
        name="gallery", description="The server's image gallery", guild_only=True
    )

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @property
    def services(self) -> Services:
        return self.bot.services

    @property
    def imagine(self) -> Imagine:
        return self.bot.get_cog("Imagine")  # type: ignore[return-value]

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*GALLERY_BUTTONS)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*GALLERY_BUTTONS)

    # -- commands --------------------------------------------------------------------------

    @gallery.command(name="channel", description="Moderators: where shared images are posted")
    async def gallery_channel(
        self, interaction: discord.Interaction, channel: discord.TextChannel
    ) -> None:
        require_moderator(interaction)
        change = await self.services.gallery.set_channel(
            interaction.guild_id or 0, interaction.user.id, channel.id
        )
        await interaction.response.send_message(f"✅ {change.describe()}", ephemeral=True)

    @gallery.command(name="top", description="The most voted shared images")
    @app_commands.describe(period="Over which period (default: week)")
    async def gallery_top(
        self, interaction: discord.Interaction, period: Literal["day", "week", "all"] = "week"
    ) -> None:
        posts = await self.services.gallery.top(interaction.guild_id or 0, period)
        if not posts:
            await interaction.response.send_message(
                "No shared images with votes in that period yet.", ephemeral=True
            )
            return
        guild_id = interaction.guild_id
        lines = [
            f"**{rank}.** ⭐ {post.votes} · "
            f"https://discord.com/channels/{guild_id}/{post.channel_id}/{post.message_id}"
            for rank, post in enumerate(posts, start=1)
        ]
        embed = discord.Embed(title=f"Top images ({period})", description="\n".join(lines))
        await interaction.response.send_message(embed=embed)

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
                "⛔ Only moderators can see another member's history.", ephemeral=True
            )
            return
        member = user or interaction.user
        guild_id = interaction.guild_id or 0
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
            embed.description = "No images yet. Try `/imagine`!"
        embed.set_footer(text=f"Page {page} of {pages} · {total} job(s) · use page: to turn")
        await interaction.response.send_message(embed=embed, ephemeral=True)

    # -- buttons ---------------------------------------------------------------------------

    async def on_share(self, interaction: discord.Interaction, job_id: str) -> None:
        job = await self.imagine.job_for(interaction, job_id)
        if job is None:
            return
        gallery_id = await self.services.gallery.channel(job.origin.guild_id or 0)
        channel = self.bot.get_channel(gallery_id) if gallery_id else None
        channel_nsfw = bool(getattr(channel, "nsfw", False))
        _claimed, refusal = await self.services.gallery.claim(
            job, interaction.user.id, gallery_age_restricted=channel_nsfw
        )
        if refusal is not None or not isinstance(channel, discord.TextChannel):
            text = refusal.value if refusal is not None else ShareRefusal.NO_GALLERY.value
            await interaction.response.send_message(f"⛔ {text}", ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            message = await self._post_to_gallery(channel, job, interaction.message)
        except discord.HTTPException as error:
            await self.services.gallery.unclaim(job.id)
            log.warning("gallery post for %s failed: %s", job.id, error)
            await interaction.followup.send("❌ Discord refused the gallery post; try again.")
            return
        await self.services.gallery.posted(job.id, message.id)
        await interaction.followup.send(f"📣 Shared to {channel.mention}!")

    async def _post_to_gallery(
        self, channel: discord.TextChannel, job: Job, original: discord.Message | None
    ) -> discord.Message:
        files = []
        if original is not None:
            for attachment in original.attachments:
                data = await attachment.read()
                files.append(discord.File(io.BytesIO(data), filename=attachment.filename))
        embed = discord.Embed(
            description=embeds.truncate(f"**{job.request.prompt}**", 2000),
            colour=embeds.COLOUR_DONE,
        )
        embed.add_field(name="By", value=f"<@{job.origin.user_id}>")
        if original is not None:
            embed.add_field(name="Original", value=f"[jump to it]({original.jump_url})")
        if files:
            embed.set_image(url=f"attachment://{files[0].filename}")
        return await channel.send(
            embed=embed,
            files=files,
            view=vote_view(job.id, 0),
            allowed_mentions=discord.AllowedMentions.none(),
        )

    async def on_vote(self, interaction: discord.Interaction, job_id: str) -> None:
        if interaction.user.id == (await self._author_of(job_id)):
            await interaction.response.send_message(
                "You can't vote for your own images.", ephemeral=True
            )
            return
        added, total = await self.services.gallery.vote(job_id, interaction.user.id)
        if not added:
            await interaction.response.send_message(
                f"You've already voted for this one (⭐ {total}).", ephemeral=True
            )
            return
        await interaction.response.edit_message(view=vote_view(job_id, total))

    async def _author_of(self, job_id: str) -> int | None:
        job = await self.services.jobs.get(job_id)
        return job.origin.user_id if job else None

    async def on_variations(self, interaction: discord.Interaction, job_id: str) -> None:
        job = await self.imagine.job_for(interaction, job_id)
        if job is None:
            return
        seeds = job.result.seeds if job.result and job.result.seeds else ()
        base = seeds[0] if seeds else 0
        # Seeds next to the original: the same composition, gently varied.
        seed = (base + job.request.image_count) % (int(rules.SEED.high) + 1)
        await self.imagine.start_job(interaction, replace(job.request, seed=seed), parent=job)

    async def on_upscale(self, interaction: discord.Interaction, job_id: str, index: int) -> None:
        job = await self.imagine.job_for(interaction, job_id)
        if job is None:
            return
        if not job.images_posted or index >= job.request.image_count:
            await interaction.response.send_message(
                "That image is not available to upscale.", ephemeral=True
            )
            return
        await self.imagine.start_job(
            interaction,
            replace(job.request, batch_size=1, n_iter=1),
            parent=job,
            kind=JobKind.UPSCALE,
            upscale_index=index,
        )

    async def remove_post(self, job_id: str) -> None:
        """Called when a job's images are deleted: its gallery post goes too."""
        post = await self.services.gallery.remove(job_id)
        if post is None or post.message_id is None:
            return
        channel = self.bot.get_channel(post.channel_id)
        if isinstance(channel, discord.TextChannel):
            with contextlib.suppress(discord.NotFound):
                await channel.get_partial_message(post.message_id).delete()


def _history_title(job: Job) -> str:
    kind = "Upscale" if job.kind is JobKind.UPSCALE else "Image"
    return embeds.truncate(f"{kind} · <t:{int(job.created_at)}:R> · {job.state.value}", 256)


def _history_line(job: Job) -> str:
    r = job.request
    seeds = embeds.seed_text(job.result.seeds) if job.result else "—"
    line = (
        f"{embeds.truncate(r.prompt, 200)}\n"
        f"{r.sampler_name} · {r.steps} steps · cfg {r.cfg_scale:g} · seed {seeds} · "
        f"{r.width}×{r.height}"
    )
    if job.message_id and job.state is JobState.DONE and job.deleted_at is None:
        line += (
            f"\nhttps://discord.com/channels/{job.origin.guild_id}/"
            f"{job.origin.channel_id}/{job.message_id}"
        )
    return embeds.truncate(line, 1024)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Gallery(bot))
