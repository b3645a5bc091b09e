"""`/imagine` and every button that launches or acts on a job: Reroll, Variations, Upscale,
Details and Delete.

The cog turns interactions into domain calls and domain answers into messages; the rules
(the backend's options, limits, credit) live in `jobs/`, `quota/` and the backend.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs.utils import attachments, buttons, embeds, wording
from cogs.utils.guards import known_guild
from cogs.utils.messages import delete_messages
from cogs.utils.replies import answer
from jobs.admission import Refused, Ticket
from jobs.backend import RANDOM_SEED, Generation
from jobs.intake import PendingRequest
from jobs.model import TOKEN_LIFETIME, Job, JobKind, Origin
from jobs.requests import (
    DEFAULT_STRENGTH,
    NEGATIVE_PROMPT_LENGTH,
    PROMPT_LENGTH,
    SDXL_SIZES,
    ImagineOptions,
    InvalidOption,
    build_request,
    reroll,
    size_label,
    variation,
    with_channel_rules,
)
from members.defaults import MemberDefaults, fill
from storage import StorageError

if TYPE_CHECKING:
    from bot import ImagineBot
    from services import Services

log = logging.getLogger(__name__)


class Imagine(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @property
    def services(self) -> Services:
        return self.bot.services

    async def cog_load(self) -> None:
        buttons.bind_job_buttons(
            reroll=self.on_reroll,
            variation=self.on_variation,
            upscale=self.on_upscale,
            details=self.on_details,
            delete=self.on_delete,
        )
        self.bot.add_dynamic_items(*buttons.JOB_BUTTONS)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*buttons.JOB_BUTTONS)

    @app_commands.command(name="imagine", description="Generate images with SDXL 1.0")
    @app_commands.guild_only()
    @app_commands.describe(
        prompt="What to draw",
        negative_prompt="What to keep out of the image",
        sampler="Sampling method (the list follows the bot's image server)",
        steps="Denoising steps (default 20)",
        cfg_scale="CFG scale: how closely to follow the prompt (default 7)",
        seed="A seed to repeat an image; -1 or empty for random",
        size="Width×height (SDXL's native one-megapixel sizes)",
        images="How many images (default 1)",
        image="Start from this picture (image-to-image)",
        strength=f"With image: denoising strength, 0 keeps it, 1 ignores it "
        f"(default {DEFAULT_STRENGTH:g})",
    )
    @app_commands.choices(
        size=[app_commands.Choice(name=f"{w}×{h}", value=size_label(w, h)) for w, h in SDXL_SIZES]
    )
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, PROMPT_LENGTH],
        negative_prompt: app_commands.Range[str, 0, NEGATIVE_PROMPT_LENGTH] | None = None,
        sampler: app_commands.Range[str, 1, 100] | None = None,
        steps: app_commands.Range[int, 1, 150] | None = None,
        cfg_scale: app_commands.Range[float, 1.0, 30.0] | None = None,
        seed: app_commands.Range[int, -1, 2**32 - 1] | None = None,
        size: app_commands.Range[str, 1, 20] | None = None,
        images: app_commands.Range[int, 1, 4] | None = None,
        image: discord.Attachment | None = None,
        strength: app_commands.Range[float, 0.0, 1.0] | None = None,
    ) -> None:
        guild_id = await known_guild(interaction)
        if guild_id is None:
            return
        options = ImagineOptions(
            prompt=prompt,
            negative_prompt=negative_prompt,
            sampler=sampler,
            steps=steps,
            cfg_scale=cfg_scale,
            seed=seed,
            size=size,
            images=images,
            strength=strength,
        )
        # Options left out take the member's own defaults here (`/settings`).
        defaults = MemberDefaults(self.services.db, self.services.clock)
        try:
            options = fill(options, await defaults.get(guild_id, interaction.user.id))
        except StorageError as error:
            log.error("storage unavailable for a new job: %s", error)
            await answer(interaction, wording.STORAGE_UNAVAILABLE)
            return
        capabilities = self.services.backend.capabilities
        restricted, safety = self._channel_rules(interaction)
        try:
            # Cheap checks first: a bad option is refused before the attachment is read.
            build_request(
                options, capabilities, age_restricted=restricted, safety_negative_prompt=safety
            )
            init_image = None
            if image is not None:
                # Reading and fitting a picture can take longer than Discord's 3 seconds:
                # acknowledge first (refusals then replace the "thinking" reply).
                await interaction.response.defer(thinking=True)
                init_image, fitted = await attachments.read_init_image(image, capabilities.sizes)
                options = replace(options, size=size_label(*fitted))
            request = build_request(
                options,
                capabilities,
                age_restricted=restricted,
                safety_negative_prompt=safety,
                init_image=init_image,
            )
        except InvalidOption as error:
            await answer(interaction, wording.option_error(error))
            return
        except attachments.UnusableAttachment as error:
            await answer(interaction, wording.attachment_error(error.reason))
            return
        await self.start_job(interaction, request)

    @imagine.autocomplete("sampler")
    async def sampler_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        typed = current.lower()
        offered = self.services.backend.capabilities.samplers
        matches = [s for s in offered if typed in s.lower()]
        return [app_commands.Choice(name=s, value=s) for s in matches[:25]]

    def _channel_rules(self, interaction: discord.Interaction) -> tuple[bool, str]:
        """Whether the channel is age-restricted, and the server's safety terms."""
        return _age_restricted(interaction), self.services.settings.safety_negative_prompt

    def _under_channel_rules(
        self, interaction: discord.Interaction, request: Generation
    ) -> Generation:
        restricted, safety = self._channel_rules(interaction)
        return with_channel_rules(request, age_restricted=restricted, safety_negative_prompt=safety)

    async def start_job(
        self,
        interaction: discord.Interaction,
        request: Generation,
        *,
        parent: Job | None = None,
        kind: JobKind = JobKind.TXT2IMG,
        source_index: int | None = None,
    ) -> None:
        """Acknowledge at once, then admit (limits, credit) and queue the job."""
        services = self.services
        if not services.runner.accepting:
            await interaction.response.send_message(wording.RESTARTING_REFUSAL, ephemeral=True)
            return
        answered = False  # admission forgets the noted request in its own transaction
        try:
            callback = await self._defer_and_note(interaction)
            await self._admit(interaction, request, callback, parent, kind, source_index)
            answered = True
        except StorageError as error:
            log.error("storage unavailable for a new job: %s", error)
            await answer(interaction, wording.STORAGE_UNAVAILABLE)
        finally:
            if not answered:
                try:
                    await services.intake.forget(interaction.id)
                except StorageError as error:
                    log.warning("could not forget request %s: %s", interaction.id, error)

    async def _defer_and_note(
        self, interaction: discord.Interaction
    ) -> discord.InteractionCallbackResponse | None:
        """Defer, and note the request while the deferral is on its way: Discord times the
        deferral, and the note lets the next start answer a request the bot died holding."""
        services = self.services
        if interaction.response.is_done():  # deferred already (an attachment was read first)
            deferral: asyncio.Future[discord.InteractionCallbackResponse | None]
            deferral = asyncio.get_running_loop().create_future()
            deferral.set_result(None)
        else:
            deferral = asyncio.ensure_future(interaction.response.defer(thinking=True))
        try:
            await asyncio.sleep(0)  # the deferral starts first (on a warm connection, is sent)
            await services.intake.note(
                PendingRequest(
                    interaction_id=interaction.id,
                    application_id=interaction.application_id,
                    token=interaction.token,
                    token_expires_at=services.clock() + TOKEN_LIFETIME,
                )
            )
        finally:
            callback = await deferral  # even if the note failed: the error is shown in it
        return callback

    async def _admit(
        self,
        interaction: discord.Interaction,
        request: Generation,
        callback: discord.InteractionCallbackResponse | None,
        parent: Job | None,
        kind: JobKind,
        source_index: int | None,
    ) -> None:
        services = self.services
        message_id = callback.message_id if callback else None
        if message_id is None:
            message_id = (await interaction.original_response()).id
        origin = Origin(
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id or 0,
            user_id=interaction.user.id,
            application_id=interaction.application_id,
            interaction_token=interaction.token,
            token_expires_at=services.clock() + TOKEN_LIFETIME,
            age_restricted=_age_restricted(interaction),
            upload_limit=interaction.filesize_limit,
        )
        outcome = await services.runner.admit(
            Ticket(
                origin=origin,
                request=request,
                role_ids=frozenset(role.id for role in getattr(interaction.user, "roles", ())),
                sandbox=services.settings.sandbox,
                parent_job_id=parent.id if parent else None,
                message_id=message_id,
                kind=kind,
                upscale_index=source_index,
                interaction_id=interaction.id,
            )
        )
        if isinstance(outcome, Refused):
            await interaction.delete_original_response()
            await interaction.followup.send(wording.refusal_text(outcome.refusal), ephemeral=True)

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

    async def on_reroll(self, interaction: discord.Interaction, job_id: str) -> None:
        job = await self.job_for(interaction, job_id)
        if job is not None and not job.request.prompt:  # its texts were erased (privacy)
            await interaction.response.send_message(wording.IMAGE_UNAVAILABLE, ephemeral=True)
        elif job is not None:
            request = self._under_channel_rules(interaction, reroll(job.request))
            await self.start_job(interaction, request, parent=job)

    async def on_variation(
        self, interaction: discord.Interaction, job_id: str, index: int, strong: bool
    ) -> None:
        """A variation of one image: the backend's own variation seed when it has one
        (same composition, new detail), else image-to-image of that picture."""
        job = await self.job_for(interaction, job_id)
        if job is None:
            return
        erased = not job.request.prompt  # /privacy forget or the retention sweep
        if erased or not job.images_posted or index >= job.request.images:
            await interaction.response.send_message(wording.IMAGE_UNAVAILABLE, ephemeral=True)
            return
        capabilities = self.services.backend.capabilities
        seeds = job.result.seeds if job.result else ()
        seed = seeds[index] if index < len(seeds) else RANDOM_SEED
        request = self._under_channel_rules(
            interaction,
            variation(job.request, seed=seed, strong=strong, by_subseed=capabilities.subseed),
        )
        if capabilities.subseed:
            await self.start_job(interaction, request, parent=job)
        else:
            await self.start_job(
                interaction, request, parent=job, kind=JobKind.VARIATION, source_index=index
            )

    async def on_upscale(self, interaction: discord.Interaction, job_id: str, index: int) -> None:
        job = await self.job_for(interaction, job_id)
        if job is None:
            return
        if not job.images_posted or index >= job.request.images:
            await interaction.response.send_message(wording.IMAGE_UNAVAILABLE, ephemeral=True)
            return
        await self.start_job(
            interaction,
            replace(job.request, images=1),
            parent=job,
            kind=JobKind.UPSCALE,
            source_index=index,
        )

    async def on_details(self, interaction: discord.Interaction, job_id: str) -> None:
        job = await self.job_for(interaction, job_id)
        if job is not None:
            await interaction.response.send_message(embed=embeds.details_embed(job), ephemeral=True)

    async def on_delete(self, interaction: discord.Interaction, job_id: str) -> None:
        """Delete what the database says the job posted (never trusting the clicked
        message), erase the job's texts, and take its gallery post down; once."""
        job = await self.job_for(interaction, job_id)
        if job is None:
            return
        if not can_delete(interaction, job):
            await interaction.response.send_message(wording.DELETE_NOT_YOURS, ephemeral=True)
            return
        if not await self.services.jobs.mark_deleted(job):
            await interaction.response.send_message(wording.ALREADY_DELETED, ephemeral=True)
            return
        await interaction.response.send_message(wording.DELETED, ephemeral=True)
        posted = [i for i in (job.message_id, *job.followup_message_ids) if i is not None]
        await delete_messages(self.bot, job.origin.channel_id, posted)
        post = await self.services.gallery.remove(job.id)
        if post is not None:  # every message of a post split over several
            await delete_messages(self.bot, post.channel_id, post.message_ids)


def can_delete(interaction: discord.Interaction, job: Job) -> bool:
    return interaction.user.id == job.origin.user_id or interaction.permissions.manage_messages


def _age_restricted(interaction: discord.Interaction) -> bool:
    channel = interaction.channel
    return bool(getattr(channel, "nsfw", False))


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Imagine(bot))
