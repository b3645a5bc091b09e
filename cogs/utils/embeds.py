"""Embeds for a job's reply: progress, result, failure and details, within Discord's limits."""

from __future__ import annotations

import functools

import discord

from cogs.utils import wording
from jobs.failures import Failure
from jobs.model import Job
from jobs.reporting import Stage, Update

COLOUR_WORKING = discord.Colour.blurple()
COLOUR_DONE = discord.Colour.green()
COLOUR_FAILED = discord.Colour.red()
BAR_WIDTH = 20
PREVIEW_FILENAME = "preview.png"

# Discord's embed limits (the total across a message's embeds is 6000 characters).
TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
FIELD_LIMIT = 1024
FOOTER_LIMIT = 2048


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def member_text(text: str, limit: int) -> str:
    """What a member typed, shown as typed: no markdown, and no masked links (`[text](url)`
    would otherwise render as a link whose target the reader cannot see)."""
    return truncate(discord.utils.escape_markdown(text), limit)


def progress_bar(fraction: float) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * BAR_WIDTH)
    return "█" * filled + "░" * (BAR_WIDTH - filled)


@functools.lru_cache(maxsize=512)  # more than the jobs showing progress at once
def _description(prompt: str) -> str:
    """The prompt as every embed of its job shows it. Escaping it is most of the cost of a
    progress embed, and each progress edit of a job shows the same prompt."""
    return f"**{member_text(prompt, DESCRIPTION_LIMIT - 200)}**"


def _base(job: Job, colour: discord.Colour) -> discord.Embed:
    embed = discord.Embed(description=_description(job.request.prompt), colour=colour)
    footer = f"job {job.id}"
    if job.sandbox:
        footer += f" · {wording.SANDBOX_NOTE}"
    embed.set_footer(text=truncate(footer, FOOTER_LIMIT))
    return embed


def progress_embed(job: Job, update: Update) -> discord.Embed:
    embed = _base(job, COLOUR_WORKING)
    if update.stage is Stage.WAITING:
        status = f"⏳ Waiting in line: position {update.queue_position}"
    elif update.stage is Stage.ACCEPTED:
        status = "⏳ Queued at the image server"
    elif update.stage is Stage.RESTARTING:
        status = f"🔁 {wording.RESTARTING_NOTE}"
    else:
        status = "🎨 Generating"
    lines = [status]
    if update.stage in (Stage.RUNNING, Stage.ACCEPTED):
        eta = f" · about {update.eta:.0f}s left" if update.eta else ""
        lines.append(f"`{progress_bar(update.progress)}` {update.progress:.0%}{eta}")
    embed.add_field(name="Status", value="\n".join(lines), inline=False)
    if update.preview_image is not None:
        embed.set_image(url=f"attachment://{PREVIEW_FILENAME}")
    elif update.preview_url:
        embed.set_image(url=update.preview_url)
    return embed


def result_embeds(job: Job, filenames: list[str], requester: str) -> list[discord.Embed]:
    """One embed with the parameters, plus one per further image so Discord shows a grid."""
    request = job.request
    result = job.result
    embed = _base(job, COLOUR_DONE)
    if request.negative_prompt:
        embed.add_field(
            name="Negative prompt", value=member_text(request.negative_prompt, 300), inline=False
        )
    embed.add_field(name="Sampler", value=request.sampler)
    embed.add_field(name="Steps", value=str(request.steps))
    embed.add_field(name="CFG scale", value=f"{request.cfg_scale:g}")
    seeds = result.seeds if result and result.seeds else ()
    embed.add_field(name="Seed" if len(seeds) <= 1 else "Seeds", value=seed_text(seeds))
    width, height = job.output_size
    embed.add_field(name="Size", value=f"{width}×{height}")
    if result:
        embed.add_field(name="Time", value=f"{result.duration:.1f}s")
    embed.add_field(name="Requested by", value=truncate(requester, FIELD_LIMIT), inline=False)
    # Embeds sharing a url are shown by Discord as one post with an image grid.
    grid_url = f"https://omniinfer.io/#job-{job.id}"
    embed.url = grid_url
    embed.title = "Images ready"
    embeds = [embed]
    for index, name in enumerate(filenames[:4]):
        target = embed if index == 0 else discord.Embed(url=grid_url)
        target.set_image(url=f"attachment://{name}")
        if index:
            embeds.append(target)
    return embeds


def seed_text(seeds: tuple[int, ...]) -> str:
    return ", ".join(str(s) for s in seeds) if seeds else "random"


def failure_embed(job: Job, failure: Failure) -> discord.Embed:
    title, body = wording.failure_text(failure)
    embed = _base(job, COLOUR_FAILED)
    embed.title = truncate(f"❌ {title}", TITLE_LIMIT)
    embed.add_field(name="What now", value=truncate(body, FIELD_LIMIT), inline=False)
    return embed


def lost_request_embed() -> discord.Embed:
    """For a request that died with the previous process: there is no job to describe."""
    embed = discord.Embed(title=f"🔁 {wording.LOST_TITLE}", colour=COLOUR_FAILED)
    embed.add_field(name="What now", value=wording.LOST_BODY, inline=False)
    return embed


def details_embed(job: Job) -> discord.Embed:
    """Every parameter, for the member who wants to recreate an image elsewhere."""
    request = job.request
    seeds = job.result.seeds if job.result else ()
    embed = discord.Embed(title="Generation details", colour=COLOUR_WORKING)
    embed.add_field(name="Prompt", value=member_text(request.prompt, FIELD_LIMIT), inline=False)
    embed.add_field(
        name="Negative prompt",
        value=member_text(request.negative_prompt, FIELD_LIMIT) or "(none)",
        inline=False,
    )
    width, height = job.output_size
    fields = [
        ("Model", job.result.model if job.result and job.result.model else "—"),
        ("Sampler", request.sampler),
        ("Steps", str(request.steps)),
        ("CFG scale", f"{request.cfg_scale:g}"),
        ("Seeds", seed_text(seeds)),
        ("Size", f"{width}×{height}"),
        ("Images", str(request.images)),
    ]
    if request.subseed_strength:
        fields.append(("Variation strength", f"{request.subseed_strength:g}"))
    if request.denoising_strength is not None:
        fields.append(("Denoising strength", f"{request.denoising_strength:g}"))
    fields.append(("Job", job.id))
    for name, value in fields:
        embed.add_field(name=name, value=value)
    if request.safety_negative_prompt:
        embed.add_field(name="Safety", value=wording.SAFETY_APPLIED, inline=False)
    return embed
