"""Community sharing: the gallery channel, Share and votes."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from cogs.utils import embeds, wording
from cogs.utils.buttons import GALLERY_BUTTONS, bind_gallery_buttons, vote_view
from cogs.utils.checks import require_moderator
from cogs.utils.guards import known_guild
from cogs.utils.messages import delete_messages
from cogs.utils.replies import answer
from cogs.utils.uploads import Upload, batches
from jobs.model import Job
from sharing.gallery import Destination, Posted, ShareRefusal
from sharing.store import Post

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
        guild_id = await known_guild(interaction)
        if guild_id is None:
            return
        require_moderator(interaction)
        change = await self.services.gallery.set_channel(guild_id, interaction.user.id, channel.id)
        await interaction.response.send_message(f"✅ {wording.describe(change)}", ephemeral=True)

    @gallery.command(name="top", description="The most voted shared images")
    @app_commands.describe(period="Over which period (default: week)", page="Page number")
    async def gallery_top(
        self,
        interaction: discord.Interaction,
        period: Literal["day", "week", "all"] = "week",
        page: app_commands.Range[int, 1, 1000] = 1,
    ) -> None:
        guild_id = await known_guild(interaction)
        if guild_id is None:
            return
        top = await self.services.gallery.top(guild_id, period, page)
        if not top.posts:
            await interaction.response.send_message(wording.GALLERY_TOP_EMPTY, ephemeral=True)
            return
        entries = [
            await self._top_embed(guild_id, rank, post)
            for rank, post in enumerate(top.posts, start=top.first_rank)
        ]
        await interaction.response.send_message(
            wording.gallery_top_heading(period, top.page, top.pages, top.total),
            embeds=entries,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    async def _top_embed(self, guild_id: int, rank: int, post: Post) -> discord.Embed:
        """One entry of `/gallery top`: its prompt, author, votes, link and first image."""
        job = await self.services.jobs.get(post.job_id)
        prompt = job.request.prompt if job is not None else ""
        shown = embeds.truncate(prompt, 200) if prompt else wording.GALLERY_PROMPT_ERASED
        jump = f"https://discord.com/channels/{guild_id}/{post.channel_id}/{post.message_id}"
        embed = discord.Embed(
            description=wording.gallery_top_entry(rank, post.votes, shown, post.shared_by, jump),
            colour=embeds.COLOUR_DONE,
        )
        if post.image_url:
            embed.set_image(url=post.image_url)
        return embed

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
        gallery = self.services.gallery
        claim = await gallery.claim(job, interaction.user.id, self._find_gallery)
        if isinstance(claim, ShareRefusal):
            await interaction.response.send_message(
                wording.share_refusal_text(claim), ephemeral=True
            )
            return
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
        except discord.HTTPException:
            await gallery.give_back(claim)  # or every later Share would say "already shared"
            raise

        async def post(channel: discord.TextChannel) -> Posted:
            return await self._post_to_gallery(channel, job)

        try:
            outcome = await gallery.publish(claim, post, self._unpost)
        except discord.HTTPException as error:
            log.warning("gallery post for %s failed: %s", job.id, error)
            await answer(interaction, wording.SHARE_POST_FAILED)
            return
        if isinstance(outcome, ShareRefusal):
            await interaction.followup.send(wording.share_refusal_text(outcome), ephemeral=True)
            return
        await interaction.followup.send(wording.shared_to(claim.channel.mention), ephemeral=True)

    def _find_gallery(self, channel_id: int) -> Destination[discord.TextChannel] | None:
        """The gallery channel as Discord has it now (None: deleted, or out of reach)."""
        channel = self.bot.get_channel(channel_id)
        if not isinstance(channel, discord.TextChannel):
            return None
        return Destination(channel, age_restricted=channel.is_nsfw())

    async def _images_of(self, job: Job) -> list[Upload]:
        """Every image the job posted, read from the messages the database says it posted
        (the first and each follow-up, fetched by id; never the clicked message)."""
        source = self.bot.get_partial_messageable(job.origin.channel_id)
        images: list[Upload] = []
        for message_id in (job.message_id, *job.followup_message_ids):
            if message_id is None:
                continue
            try:
                message = await source.fetch_message(message_id)
            except discord.NotFound:
                continue
            for attachment in message.attachments:
                images.append(Upload(attachment.filename, await attachment.read()))
        return images

    async def _post_to_gallery(self, channel: discord.TextChannel, job: Job) -> Posted:
        """Post the job's images: the first message has the embed and the Vote button, and
        images that do not fit it (10 files, the upload limit) follow in more messages. If
        one is refused, those already posted are taken down and the error goes on."""
        images = await self._images_of(job)
        if not images:
            return Posted(())
        embed = discord.Embed(
            description=embeds.truncate(f"**{job.request.prompt}**", 2000),
            colour=embeds.COLOUR_DONE,
        )
        embed.add_field(name=wording.GALLERY_BY, value=f"<@{job.origin.user_id}>")
        if job.message_id is not None:
            original = (
                f"https://discord.com/channels/{job.origin.guild_id}/"
                f"{job.origin.channel_id}/{job.message_id}"
            )
            embed.add_field(
                name=wording.GALLERY_ORIGINAL, value=f"[{wording.GALLERY_JUMP}]({original})"
            )
        embed.set_image(url=f"attachment://{images[0].filename}")
        limit = min(job.origin.upload_limit, channel.guild.filesize_limit)
        posted: list[discord.Message] = []
        try:
            for number, group in enumerate(batches(images, limit)):
                files = [discord.File(io.BytesIO(u.data), filename=u.filename) for u in group]
                if number == 0:
                    message = await channel.send(
                        embed=embed,
                        files=files,
                        view=vote_view(job.id, 0),
                        allowed_mentions=discord.AllowedMentions.none(),
                    )
                else:
                    message = await channel.send(files=files)
                posted.append(message)
        except discord.HTTPException:
            await self._unpost(channel, [m.id for m in posted])
            raise
        first = posted[0].attachments
        return Posted(tuple(m.id for m in posted), first[0].url if first else None)

    async def _unpost(self, channel: discord.TextChannel, message_ids: Sequence[int]) -> None:
        await delete_messages(self.bot, channel.id, message_ids)

    async def on_vote(self, interaction: discord.Interaction, job_id: str) -> None:
        outcome = await self.services.gallery.vote(job_id, interaction.user.id)
        if outcome.refusal is not None:
            await interaction.response.send_message(
                wording.vote_refusal_text(outcome), ephemeral=True
            )
            return
        await interaction.response.edit_message(view=vote_view(job_id, outcome.total))


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Gallery(bot))
