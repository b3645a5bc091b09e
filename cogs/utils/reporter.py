"""Shows jobs in Discord: throttled progress edits, the final images, failures.

Answers go to the job's reply through its interaction token while that is valid (15 minutes),
and otherwise to the channel, mentioning the member. The token and message id come from the
stored job, not from a live Interaction, so a restarted bot answers the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import discord
from discord.utils import MISSING

from clock import Clock
from cogs.utils import embeds, wording
from cogs.utils.uploads import Upload, batches, file_stem, fit
from jobs.failures import Failure, FailureKind
from jobs.intake import PendingRequest
from jobs.model import Job
from jobs.reporting import DeliveryFailed, FollowupRecorder, Posted, Update

log = logging.getLogger(__name__)

# Interaction webhooks allow about five edits per two seconds; one a second per job leaves
# room for the final edit and never meets a 429.
MIN_EDIT_INTERVAL = 1.0
ORIGINAL_REPLY = "@original"

ViewFactory = Callable[[Job], discord.ui.View]
ChannelLookup = Callable[[], Awaitable[list[int]]]


@dataclass
class _Progress:
    """The newest update not yet shown for one job, and the task showing updates. The
    webhook addressing the job's reply is built once and used for every edit of it."""

    job: Job
    webhook: discord.Webhook
    latest: Update | None = None
    shown: Update | None = None  # what the reply shows now: an equal update is not re-sent
    last_sent: float = 0.0
    task: asyncio.Task[None] | None = None
    sending: bool = False  # the task is waiting on an edit: it must land before the final one


class DiscordReporter:
    def __init__(
        self,
        bot: discord.Client,
        *,
        result_view: ViewFactory,
        moderator_channels: ChannelLookup,
        clock: Clock,
        min_edit_interval: float = MIN_EDIT_INTERVAL,
    ) -> None:
        self._bot = bot
        self._result_view = result_view
        self._moderator_channels = moderator_channels
        self._clock = clock
        self._interval = min_edit_interval
        self._progress: dict[str, _Progress] = {}

    # -- progress --------------------------------------------------------------------------

    def update(self, job: Job, update: Update) -> None:
        if job.message_id is None or not job.origin.can_use_token(self._clock()):
            return
        entry = self._progress.get(job.id)
        if entry is None:
            entry = self._progress[job.id] = _Progress(job, self._webhook(job))
        if update == (entry.latest or entry.shown):
            return  # already shown or about to be
        entry.job, entry.latest = job, update
        if entry.task is None or entry.task.done():
            entry.task = asyncio.create_task(self._show_progress(entry))

    async def _show_progress(self, entry: _Progress) -> None:
        loop = asyncio.get_running_loop()
        while entry.latest is not None:
            wait = entry.last_sent + self._interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            update, entry.latest = entry.latest, None
            if update is None:
                return
            if update == entry.shown:
                continue
            preview: list[discord.File] = MISSING
            if update.preview_image is not None:
                data = io.BytesIO(update.preview_image)
                preview = [discord.File(data, filename=embeds.PREVIEW_FILENAME)]
            entry.sending = True
            try:
                await self._edit_reply(
                    entry.webhook,
                    entry.job,
                    embeds=[embeds.progress_embed(entry.job, update)],
                    attachments=preview,
                )
            except (discord.HTTPException, _TokenGone) as error:
                log.info("progress edit for job %s failed: %r", entry.job.id, error)
            else:
                entry.shown = update
            finally:
                entry.sending = False
            entry.last_sent = loop.time()

    async def drain(self, timeout: float = 10.0) -> None:
        tasks = [e.task for e in self._progress.values() if e.task and not e.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    def forget(self, job_id: str) -> None:
        entry = self._progress.pop(job_id, None)
        if entry is None:
            return
        entry.latest = None  # an edit already on its way lands; nothing after it
        if entry.task is not None and not entry.sending:
            entry.task.cancel()

    async def _quiesce(self, job_id: str) -> discord.Webhook | None:
        """Stop progress edits for a job; an edit already sent is allowed to land first, so
        it can never overwrite the final state. Returns the webhook the edits used."""
        entry = self._progress.pop(job_id, None)
        if entry is None:
            return None
        if entry.task is not None and entry.sending:
            entry.latest = None  # the task ends once its edit has landed
            # `wait` neither raises the task's own error nor swallows a cancel of this task
            # (a shutdown must be able to stop a delivery waiting here).
            await asyncio.wait([entry.task])
        elif entry.task is not None:
            entry.task.cancel()
        return entry.webhook

    # -- endings ---------------------------------------------------------------------------

    async def deliver(
        self, job: Job, images: list[bytes], *, record: FollowupRecorder | None = None
    ) -> Posted:
        webhook = await self._quiesce(job.id)
        limit = job.origin.upload_limit
        groups = batches(await fit(images, limit, stem=file_stem(job.id)), limit)
        first = groups[0]
        mention = f"<@{job.origin.user_id}>"
        result = embeds.result_embeds(job, [u.filename for u in first], mention)
        view = self._result_view(job)
        # A delivery taken up again posts only the follow-ups the earlier one did not.
        done = list(job.followup_message_ids)
        missing = groups[1 + len(done) :]

        async def posted(message_id: int) -> None:
            done.append(message_id)
            if record is not None:
                await record(tuple(done))

        try:
            if self._token_usable(job):
                webhook = webhook or self._webhook(job)
                with contextlib.suppress(_TokenGone):
                    message = await self._edit_reply(
                        webhook, job, embeds=result, attachments=_files(first), view=view
                    )
                    for group in missing:
                        await posted((await webhook.send(files=_files(group), wait=True)).id)
                    return Posted(message.id, tuple(done))
            channel = await self._channel(job)
            sent = await channel.send(
                content=f"{mention}, your images are ready.",
                embeds=result,
                files=_files(first),
                view=view,
                nonce=job.id[:25],
                allowed_mentions=discord.AllowedMentions(users=True),
            )
            for group in missing:
                await posted((await channel.send(files=_files(group))).id)
            return Posted(sent.id, tuple(done))
        except discord.HTTPException as error:
            raise DeliveryFailed(f"Discord refused the upload: {error}") from error

    async def fail(self, job: Job, failure: Failure) -> None:
        webhook = await self._quiesce(job.id)
        embed = embeds.failure_embed(job, failure)
        # Images already shown stay when it is their posting that failed (they were made).
        attachments: list[discord.File] = (
            MISSING if failure.kind is FailureKind.DELIVERY_FAILED else []
        )
        try:
            if self._token_usable(job):
                try:
                    await self._edit_reply(
                        webhook or self._webhook(job),
                        job,
                        embeds=[embed],
                        attachments=attachments,
                        view=None,
                    )
                    return
                except (_TokenGone, discord.HTTPException) as error:
                    # Whatever keeps the reply from being edited, the member is told in
                    # the channel rather than left looking at the last progress state.
                    log.info("could not edit the reply of failed job %s: %r", job.id, error)
            channel = await self._channel(job)
            await channel.send(
                content=f"<@{job.origin.user_id}>",
                embed=embed,
                nonce=f"f{job.id[:24]}",
                allowed_mentions=discord.AllowedMentions(users=True),
            )
        except discord.HTTPException as error:
            log.warning("could not tell the member about failed job %s: %s", job.id, error)

    async def account_paused(self, reason: str) -> None:
        log.warning("generation paused: %s", reason)
        for channel_id in await self._moderator_channels():
            try:
                channel = self._bot.get_channel(channel_id) or await self._bot.fetch_channel(
                    channel_id
                )
                await channel.send(wording.PAUSED_NOTICE)  # type: ignore[union-attr]
            except discord.HTTPException as error:
                log.warning("could not warn moderators in %s: %s", channel_id, error)

    async def lost(self, request: PendingRequest) -> None:
        webhook = discord.Webhook.partial(request.application_id, request.token, client=self._bot)
        try:
            # The reply is still "thinking…": its id was never stored, so it is addressed by
            # Discord's alias for an interaction's first reply.
            # discord.py types message ids as int; Discord's API takes "@original" too.
            await webhook.edit_message(ORIGINAL_REPLY, embed=embeds.lost_request_embed())  # type: ignore[call-overload]
        except Exception as error:  # best effort: a shutdown must not trip over it
            log.info("could not tell the member about lost request: %r", error)

    # -- plumbing --------------------------------------------------------------------------

    def _token_usable(self, job: Job) -> bool:
        return job.message_id is not None and job.origin.can_use_token(self._clock())

    def _webhook(self, job: Job) -> discord.Webhook:
        assert job.origin.application_id and job.origin.interaction_token
        return discord.Webhook.partial(
            job.origin.application_id, job.origin.interaction_token, client=self._bot
        )

    async def _edit_reply(
        self,
        webhook: discord.Webhook,
        job: Job,
        *,
        embeds: Sequence[discord.Embed],
        attachments: Sequence[discord.File] = MISSING,
        view: discord.ui.View | None = MISSING,
    ) -> discord.WebhookMessage:
        """Edit the job's reply through `webhook` (its interaction token's); `MISSING` leaves
        a part as it is. Raises `_TokenGone` when the token or the reply is gone."""
        assert job.message_id is not None
        try:
            message = await webhook.edit_message(
                job.message_id, embeds=embeds, attachments=attachments, view=view
            )
        except (discord.NotFound, discord.Forbidden) as error:
            raise _TokenGone from error
        except discord.HTTPException as error:
            if error.status == 401:
                raise _TokenGone from error
            raise
        return message

    async def _channel(self, job: Job) -> discord.abc.Messageable:
        channel = self._bot.get_channel(job.origin.channel_id)
        if channel is None:
            channel = await self._bot.fetch_channel(job.origin.channel_id)
        return channel  # type: ignore[return-value]


class _TokenGone(Exception):
    """The interaction token or its reply is gone: answer in the channel instead."""


def _files(uploads: list[Upload]) -> list[discord.File]:
    return [discord.File(io.BytesIO(u.data), filename=u.filename) for u in uploads]
