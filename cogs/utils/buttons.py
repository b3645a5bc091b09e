"""The buttons under a finished job and under a gallery post.

Their custom ids carry the job id (and image index), and they are registered as dynamic
items, so they keep working after a restart: a click is routed by matching the id, not by a
view held in memory. Each kind of button is bound, when its cog loads, to the cog's handler
(a typed reference, checked: a click on a button no cog has bound is answered, not lost).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Self

import discord

from cogs.utils import wording
from cogs.utils.replies import answer
from jobs.backend import Capabilities
from jobs.model import Job, JobKind

log = logging.getLogger(__name__)

JOB_ID = r"(?P<job_id>[0-9a-f]{32})"

JobHandler = Callable[[discord.Interaction, str], Awaitable[None]]
ImageHandler = Callable[[discord.Interaction, str, int], Awaitable[None]]
VariationHandler = Callable[[discord.Interaction, str, int, bool], Awaitable[None]]

_Dynamic = discord.ui.DynamicItem[discord.ui.Button[Any]]


class JobButton:
    """Mixed into each dynamic button: the click calls the bound handler with the job id
    (and `handler_args()`). discord.py wants a template on every DynamicItem subclass, so
    the shared behaviour lives in this mixin."""

    name: ClassVar[str]
    label: str
    emoji: str | None = None
    style = discord.ButtonStyle.secondary
    prefix: ClassVar[str] = "imagine"
    handler: ClassVar[Callable[..., Awaitable[None]] | None] = None

    def __init__(self, job_id: str, *, row: int | None = None, custom_id: str = "") -> None:
        self.job_id = job_id
        super().__init__(  # type: ignore[call-arg]  # DynamicItem.__init__ takes the item
            discord.ui.Button(
                label=self.label,
                emoji=self.emoji,
                style=self.style,
                custom_id=custom_id or f"{self.prefix}:{self.name}:{job_id}",
                row=row,
            )
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Self:
        return cls(match["job_id"])

    def handler_args(self) -> tuple[Any, ...]:
        return ()

    async def callback(self, interaction: discord.Interaction) -> None:
        handler = type(self).handler
        if handler is None:
            log.error("button %s pressed but no cog handles it", self.name)
            await answer(interaction, wording.UNEXPECTED)
            return
        try:
            await handler(interaction, self.job_id, *self.handler_args())
        except Exception:
            # Button errors never reach the command tree's handler: answer here, as it would.
            log.exception("button %s for job %s failed", self.name, self.job_id)
            await answer(interaction, wording.UNEXPECTED)


class RerollButton(JobButton, _Dynamic, template=rf"imagine:reroll:{JOB_ID}"):
    name, label, emoji, style = "reroll", "Reroll", "🎲", discord.ButtonStyle.primary


class ShareButton(JobButton, _Dynamic, template=rf"imagine:share:{JOB_ID}"):
    name, label, emoji = "share", "Share", "📣"
    style = discord.ButtonStyle.success


class DetailsButton(JobButton, _Dynamic, template=rf"imagine:details:{JOB_ID}"):
    name, label, emoji = "details", "Details", "🔎"


class DeleteButton(JobButton, _Dynamic, template=rf"imagine:delete:{JOB_ID}"):
    name, label, emoji, style = "delete", "Delete", "🗑️", discord.ButtonStyle.danger


class UpscaleButton(JobButton, _Dynamic, template=rf"imagine:upscale:{JOB_ID}:(?P<index>[0-3])"):
    name, emoji = "upscale", "⬆️"

    def __init__(self, job_id: str, index: int = 0) -> None:
        self.index = index
        self.label = f"Upscale {index + 1}"
        super().__init__(job_id, row=1, custom_id=f"imagine:upscale:{job_id}:{index}")

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Self:
        return cls(match["job_id"], int(match["index"]))

    def handler_args(self) -> tuple[Any, ...]:
        return (self.index,)


class VariationButton(
    JobButton,
    _Dynamic,
    template=rf"imagine:variation:{JOB_ID}:(?P<index>[0-3]):(?P<how>subtle|strong)",
):
    """🔀 a variation of one image, subtle or strong (rows 2 and 3)."""

    name, emoji = "variation", "🔀"

    def __init__(self, job_id: str, index: int = 0, strong: bool = False) -> None:
        self.index, self.strong = index, strong
        how = "strong" if strong else "subtle"
        self.label = f"{index + 1} {how}"
        super().__init__(
            job_id, row=3 if strong else 2, custom_id=f"imagine:variation:{job_id}:{index}:{how}"
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Self:
        return cls(match["job_id"], int(match["index"]), match["how"] == "strong")

    def handler_args(self) -> tuple[Any, ...]:
        return (self.index, self.strong)


class VoteButton(JobButton, _Dynamic, template=rf"gallery:vote:{JOB_ID}"):
    name, label, emoji, prefix = "vote", "Vote", "⭐", "gallery"
    style = discord.ButtonStyle.primary

    def __init__(self, job_id: str, votes: int = 0) -> None:
        self.label = f"Vote ({votes})" if votes else "Vote"
        super().__init__(job_id, custom_id=f"gallery:vote:{job_id}")


JOB_BUTTONS = (RerollButton, VariationButton, UpscaleButton, DetailsButton, DeleteButton)
GALLERY_BUTTONS = (ShareButton, VoteButton)


def bind_job_buttons(
    *,
    reroll: JobHandler,
    variation: VariationHandler,
    upscale: ImageHandler,
    details: JobHandler,
    delete: JobHandler,
) -> None:
    """Route the job buttons' clicks to the Imagine cog's handlers."""
    RerollButton.handler = reroll
    VariationButton.handler = variation
    UpscaleButton.handler = upscale
    DetailsButton.handler = details
    DeleteButton.handler = delete


def bind_gallery_buttons(*, share: JobHandler, vote: JobHandler) -> None:
    """Route Share and Vote to the Gallery cog's handlers."""
    ShareButton.handler = share
    VoteButton.handler = vote


def result_view(job: Job, capabilities: Capabilities) -> discord.ui.View:
    """The buttons under a finished job: only those whose feature the backend has.

    Built per job, the items would only be rendered: a click is routed by the dynamic items
    the cogs register, never by this view. So each shape's payload is rendered once, and a
    job gets a copy with its id in the custom ids."""
    original = job.kind is not JobKind.UPSCALE
    shape = _result_template(
        images=job.request.images if original else 0,
        upscale=original and capabilities.upscale,
        variations=original and (capabilities.subseed or capabilities.img2img),
    )
    return _RenderedView(
        [
            {**row, "components": [_with_job_id(button, job.id) for button in row["components"]]}
            for row in shape
        ]
    )


# Stands for the job id in a rendered template (it must match JOB_ID).
_TEMPLATE_JOB_ID = "0" * 32


@functools.lru_cache(maxsize=32)  # a shape per number of images (0 to 4) and capabilities
def _result_template(*, images: int, upscale: bool, variations: bool) -> list[dict[str, Any]]:
    """The payload of one shape of result buttons, for `_TEMPLATE_JOB_ID`; `images` is 0 for
    an upscaled job, which has no Reroll and no per-image buttons."""
    job_id = _TEMPLATE_JOB_ID
    view = discord.ui.View(timeout=None)
    if images:
        view.add_item(RerollButton(job_id, row=0))
    view.add_item(ShareButton(job_id, row=0))
    view.add_item(DetailsButton(job_id, row=0))
    view.add_item(DeleteButton(job_id, row=0))
    if upscale:
        for index in range(images):
            view.add_item(UpscaleButton(job_id, index))
    if variations:
        for strong in (False, True):
            for index in range(images):
                view.add_item(VariationButton(job_id, index, strong))
    return view.to_components()


def _with_job_id(button: dict[str, Any], job_id: str) -> dict[str, Any]:
    return {**button, "custom_id": button["custom_id"].replace(_TEMPLATE_JOB_ID, job_id)}


class _RenderedView(discord.ui.View):
    """A view whose payload is already rendered. It holds no items, so discord.py neither
    builds nor stores anything for it: clicks go to the registered dynamic items."""

    def __init__(self, components: list[dict[str, Any]]) -> None:
        super().__init__(timeout=None)
        self._components = components

    def to_components(self) -> list[dict[str, Any]]:
        return self._components


def vote_view(job_id: str, votes: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(VoteButton(job_id, votes))
    return view
