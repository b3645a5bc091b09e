"""`/imagine` and the buttons on its replies (Reroll, Details, Delete).

The cog turns interactions into domain calls and domain answers into messages; the rules
(SDXL bounds, limits, credit) live in `omni/`, `jobs/` and `quota/`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs.utils import embeds
from cogs.utils.buttons import IMAGINE_BUTTONS
from jobs.admission import Refused, Ticket
from jobs.intake import PendingRequest
from jobs.model import TOKEN_LIFETIME, Job, JobKind, Origin
from jobs.requests import IMAGES_PER_JOB, ImagineOptions, build_request, reroll
from omni import InvalidRequest, Txt2ImgRequest, rules

if TYPE_CHECKING:
    from bot import ImagineBot
    from services import Services

log = logging.getLogger(__name__)

# The omni field a validation error names → the option the member typed.
OPTION_NAMES = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "sampler_name": "sampler",
    "steps": "steps",
    "cfg_scale": "cfg_scale",
    "seed": "seed",
    "size": "size",
    "batch_size": "images",
    "images": "images",
}


def option_error(error: InvalidRequest) -> str:
    """`❌ steps: must be ...` with the option's name as the member sees it."""
    text = error.message
    if error.field:
        name = OPTION_NAMES.get(error.field, error.field)
        text = re.sub(rf"^{re.escape(error.field)}:", f"**{name}**:", text)
    return f"❌ {text}"


def refusal_text(refused: Refused) -> str:
    refusal = refused.refusal
    text = f"⛔ Not started: {refusal.message}."
    if refusal.resets_at is not None:
        text += f" You can try again <t:{int(refusal.resets_at) + 1}:R>."
    return text + " Nothing was charged."


class Imagine(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @property
    def services(self) -> Services:
        return self.bot.services

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*IMAGINE_BUTTONS)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*IMAGINE_BUTTONS)

    @app_commands.command(name="imagine", description="Generate images with SDXL 1.0")
    @app_commands.guild_only()
    @app_commands.describe(
        prompt="What to draw",
        negative_prompt="What to keep out of the image",
        sampler="Sampling method (default DPM++ SDE Karras)",
        steps=f"Denoising steps, {rules.STEPS.describe()} (default {rules.DEFAULT_STEPS})",
        cfg_scale=f"How closely to follow the prompt, {rules.CFG_SCALE.describe()} "
        f"(default {rules.DEFAULT_CFG_SCALE:g})",
        seed="A seed to repeat an image; -1 or empty for random",
        size="Width×height (SDXL's native one-megapixel sizes)",
        images=f"How many images, {IMAGES_PER_JOB.describe()} (default 1)",
    )
    @app_commands.choices(
        size=[
            app_commands.Choice(name=f"{w}×{h}", value=rules.size_label(w, h))
            for w, h in rules.SDXL_SIZES
        ]
    )
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, int(rules.PROMPT_LENGTH.high)],
        negative_prompt: app_commands.Range[str, 0, int(rules.NEGATIVE_PROMPT_LENGTH.high)]
        | None = None,
        sampler: str | None = None,
        steps: app_commands.Range[int, int(rules.STEPS.low), int(rules.STEPS.high)] | None = None,
        cfg_scale: app_commands.Range[float, rules.CFG_SCALE.low, rules.CFG_SCALE.high]
        | None = None,
        seed: app_commands.Range[int, -1, int(rules.SEED.high)] | None = None,
        size: str | None = None,
        images: app_commands.Range[int, int(IMAGES_PER_JOB.low), int(IMAGES_PER_JOB.high)]
        | None = None,
    ) -> None:
        options = ImagineOptions(
            prompt=prompt,
            negative_prompt=negative_prompt,
            sampler=sampler,
            steps=steps,
            cfg_scale=cfg_scale,
            seed=seed,
            size=size,
            images=images,
        )
        try:
            request = build_request(
                options,
                age_restricted=_age_restricted(interaction),
                safety_negative_prompt=self.services.settings.safety_negative_prompt,
            )
        except InvalidRequest as error:
            await interaction.response.send_message(option_error(error), ephemeral=True)
            return
        await self.start_job(interaction, request)

    @imagine.autocomplete("sampler")
    async def sampler_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        typed = current.lower()
        matches = [s for s in rules.SDXL_SAMPLERS if typed in s.lower()]
        return [app_commands.Choice(name=s, value=s) for s in matches[:25]]

    async def start_job(
        self,
        interaction: discord.Interaction,
        request: Txt2ImgRequest,
        *,
        parent: Job | None = None,
        kind: JobKind = JobKind.TXT2IMG,
        upscale_index: int | None = None,
    ) -> None:
        """Acknowledge at once, then admit (limits, credit) and queue the job."""
        services = self.services
        if not services.runner.accepting:
            await interaction.response.send_message(
                "🔁 The bot is restarting; try again in a minute.", ephemeral=True
            )
            return
        try:
            callback = await self._defer_and_note(interaction)
            await self._admit(interaction, request, callback, parent, kind, upscale_index)
        finally:
            await services.intake.forget(interaction.id)

    async def _defer_and_note(
        self, interaction: discord.Interaction
    ) -> discord.InteractionCallbackResponse | None:
        """Defer, and note the request while the deferral is on its way: Discord times the
        deferral, and the note lets the next start answer a request the bot died holding."""
        services = self.services
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
        request: Txt2ImgRequest,
        callback: discord.InteractionCallbackResponse | None,
        parent: Job | None,
        kind: JobKind,
        upscale_index: int | None,
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
        outcome = await services.admission.admit(
            Ticket(
                origin=origin,
                request=request,
                role_ids=frozenset(role.id for role in getattr(interaction.user, "roles", ())),
                sandbox=services.settings.sandbox,
                parent_job_id=parent.id if parent else None,
                message_id=message_id,
                kind=kind,
                upscale_index=upscale_index,
            )
        )
        if isinstance(outcome, Refused):
            await interaction.delete_original_response()
            await interaction.followup.send(refusal_text(outcome), ephemeral=True)
            return
        services.runner.enqueue(outcome.job)

    async def job_for(self, interaction: discord.Interaction, job_id: str) -> Job | None:
        job = await self.services.jobs.get(job_id)
        if job is None:
            await interaction.response.send_message(
                "This image's job is no longer known to the bot.", ephemeral=True
            )
        return job

    async def on_reroll(self, interaction: discord.Interaction, job_id: str) -> None:
        job = await self.job_for(interaction, job_id)
        if job is not None:
            await self.start_job(interaction, reroll(job.request), parent=job)

    async def on_details(self, interaction: discord.Interaction, job_id: str) -> None:
        job = await self.job_for(interaction, job_id)
        if job is not None:
            await interaction.response.send_message(embed=embeds.details_embed(job), ephemeral=True)

    async def on_delete(self, interaction: discord.Interaction, job_id: str) -> None:
        job = await self.job_for(interaction, job_id)
        if job is None:
            return
        if not can_delete(interaction, job):
            await interaction.response.send_message(
                "Only the member who asked for these images, or a moderator, can delete them.",
                ephemeral=True,
            )
            return
        await interaction.response.send_message("🗑️ Deleted.", ephemeral=True)
        if interaction.message is not None:
            await interaction.message.delete()
        channel = self.bot.get_partial_messageable(job.origin.channel_id)
        for message_id in job.more_message_ids:  # the images that did not fit in the first
            try:
                await channel.get_partial_message(message_id).delete()
            except discord.HTTPException as error:  # gone already, or out of the bot's reach
                log.info("could not delete message %s of job %s: %s", message_id, job.id, error)
        if await self.services.jobs.mark_deleted(job):
            gallery = self.bot.get_cog("Gallery")
            if gallery is not None:
                await gallery.remove_post(job.id)  # type: ignore[attr-defined]


def can_delete(interaction: discord.Interaction, job: Job) -> bool:
    return interaction.user.id == job.origin.user_id or interaction.permissions.manage_messages


def _age_restricted(interaction: discord.Interaction) -> bool:
    channel = interaction.channel
    return bool(getattr(channel, "nsfw", False))


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Imagine(bot))
