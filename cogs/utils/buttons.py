"""The buttons under a finished job. Their custom ids carry the job id (and image index), and
they are registered as dynamic items, so they keep working after a restart: the click is
routed by matching the id, not by a view held in memory."""

from __future__ import annotations

import logging
import re
from typing import Any

import discord

from cogs import errors
from jobs.model import Job, JobKind

log = logging.getLogger(__name__)

JOB_ID = r"(?P<job_id>[0-9a-f]{32})"


_Dynamic = discord.ui.DynamicItem[discord.ui.Button[Any]]


class JobButton:
    """Mixed into each dynamic button: its click calls `on_<handler>(interaction, job_id,
    *args)` on a cog. (discord.py wants a template on every DynamicItem subclass, so the
    shared behaviour lives in this mixin.)"""

    cog: str = "Imagine"
    handler: str
    label: str
    emoji: str | None = None
    style = discord.ButtonStyle.secondary

    def __init__(self, job_id: str, *, row: int | None = None, custom_id: str = "") -> None:
        self.job_id = job_id
        super().__init__(  # type: ignore[call-arg]
            discord.ui.Button(
                label=self.label,
                emoji=self.emoji,
                style=self.style,
                custom_id=custom_id or f"imagine:{self.handler}:{job_id}",
                row=row,
            )
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> JobButton:
        return cls(match["job_id"])

    def handler_args(self) -> tuple[Any, ...]:
        return ()

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = interaction.client.get_cog(self.cog)  # type: ignore[attr-defined]
        try:
            await getattr(cog, f"on_{self.handler}")(interaction, self.job_id, *self.handler_args())
        except Exception:
            # Button errors never reach the command tree's handler: answer here, as it would.
            log.exception("button %s for job %s failed", self.handler, self.job_id)
            await errors.answer(interaction, errors.UNEXPECTED)


class RerollButton(JobButton, _Dynamic, template=rf"imagine:reroll:{JOB_ID}"):
    handler, label, emoji, style = "reroll", "Reroll", "🎲", discord.ButtonStyle.primary


class VariationsButton(JobButton, _Dynamic, template=rf"imagine:variations:{JOB_ID}"):
    cog, handler, label, emoji = "Gallery", "variations", "Variations", "🔀"


class ShareButton(JobButton, _Dynamic, template=rf"imagine:share:{JOB_ID}"):
    cog, handler, label, emoji = "Gallery", "share", "Share", "📣"
    style = discord.ButtonStyle.success


class DetailsButton(JobButton, _Dynamic, template=rf"imagine:details:{JOB_ID}"):
    handler, label, emoji = "details", "Details", "🔎"


class DeleteButton(JobButton, _Dynamic, template=rf"imagine:delete:{JOB_ID}"):
    handler, label, emoji, style = "delete", "Delete", "🗑️", discord.ButtonStyle.danger


class UpscaleButton(JobButton, _Dynamic, template=rf"imagine:upscale:{JOB_ID}:(?P<index>[0-3])"):
    cog, handler, emoji = "Gallery", "upscale", "⬆️"

    def __init__(self, job_id: str, index: int = 0) -> None:
        self.index = index
        self.label = f"Upscale {index + 1}"
        super().__init__(job_id, row=1, custom_id=f"imagine:upscale:{job_id}:{index}")

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> UpscaleButton:
        return cls(match["job_id"], int(match["index"]))

    def handler_args(self) -> tuple[Any, ...]:
        return (self.index,)


class VoteButton(JobButton, _Dynamic, template=rf"gallery:vote:{JOB_ID}"):
    cog, handler, label, emoji = "Gallery", "vote", "Vote", "⭐"
    style = discord.ButtonStyle.primary

    def __init__(self, job_id: str, votes: int = 0) -> None:
        self.label = f"Vote ({votes})" if votes else "Vote"
        super().__init__(job_id, custom_id=f"gallery:vote:{job_id}")


IMAGINE_BUTTONS = (RerollButton, DetailsButton, DeleteButton)
GALLERY_BUTTONS = (VariationsButton, ShareButton, UpscaleButton, VoteButton)


def result_view(job: Job) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    if job.kind is JobKind.TXT2IMG:
        view.add_item(RerollButton(job.id, row=0))
        view.add_item(VariationsButton(job.id, row=0))
    view.add_item(ShareButton(job.id, row=0))
    view.add_item(DetailsButton(job.id, row=0))
    view.add_item(DeleteButton(job.id, row=0))
    if job.kind is JobKind.TXT2IMG:
        for index in range(job.request.image_count):
            view.add_item(UpscaleButton(job.id, index))
    return view


def vote_view(job_id: str, votes: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(VoteButton(job_id, votes))
    return view
