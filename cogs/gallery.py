"""Community sharing: the gallery channel, Share and votes."""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from cogs.utils import embeds, wording
from cogs.utils.buttons import GALLERY_BUTTONS, bind_gallery_buttons, vote_view
from cogs.utils.checks import require_moderator
from cogs.utils.guards import known_guild
from cogs.utils.replies import answer
from jobs.model import Job
from sharing.gallery import Destination, ShareRefusal

if TYPE_CHECKING:
    from bot import ImagineBot
    from services import Services

log = logging.getLogger(__name__)


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

    async def cog_load(self) -> None:
        bind_gallery_buttons(share=self.on_share, vote=self.on_vote)
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
        await interaction.response.send_message(f"✅ {wording.describe(change)}", ephemeral=True)

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

    # -- buttons ---------------------------------------------------------------------------

    async def job_for(self, interaction: discord.Interaction, job_id: str) -> Job | None:
        """The job a button belongs to, if it belongs to the server it was pressed in."""
        guild_id = await known_guild(interaction)
        if guild_id is None:
            return None
        job = await self.services.jobs.get(job_id)
        if job is None or job.origin.guild_id != guild_id:
            await interaction.response.send_message(wording.JOB_UNKNOWN, ephemeral=True)
            return None
        return job

    async def on_share(self, interaction: discord.Interaction, job_id: str) -> None:
        job = await self.job_for(interaction, job_id)
        if job is None:
            return
        claim = await self.services.gallery.claim(job, interaction.user.id, self._find_gallery)
        if isinstance(claim, ShareRefusal):
            await interaction.response.send_message(
                wording.share_refusal_text(claim), ephemeral=True
            )
            return

        async def post(channel: discord.TextChannel) -> int:
            await interaction.response.defer(ephemeral=True, thinking=True)
            message = await self._post_to_gallery(channel, job, interaction.message)
            return message.id

        try:
            await self.services.gallery.publish(claim, post)
        except discord.HTTPException as error:
            log.warning("gallery post for %s failed: %s", job.id, error)
            await answer(interaction, wording.SHARE_POST_FAILED)
            return
        await interaction.followup.send(f"📣 Shared to {claim.channel.mention}!")

    def _find_gallery(self, channel_id: int) -> Destination[discord.TextChannel] | None:
        """The gallery channel as Discord has it now (None: deleted, or out of reach)."""
        channel = self.bot.get_channel(channel_id)
        if not isinstance(channel, discord.TextChannel):
            return None
        return Destination(channel, age_restricted=channel.is_nsfw())

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


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Gallery(bot))
