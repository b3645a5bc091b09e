"""Progress edits and the job's end: an edit on its way when the job ends lands before the
final one (so it can never overwrite it), a delivery waiting for it can still be stopped (a
shutdown), and no progress is shown after the end."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from discord.utils import MISSING

from cogs.utils.buttons import result_view
from cogs.utils.reporter import DiscordReporter
from jobs.backend import Generation
from jobs.model import Charge, Job, JobKind, JobState, Origin
from jobs.reporting import Stage, Update
from tests.harness import plain_capabilities

PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)
CAPABILITIES = plain_capabilities()
JOB = Job(
    id="0123456789abcdef0123456789abcdef",
    kind=JobKind.TXT2IMG,
    state=JobState.DELIVERING,
    charge=Charge.RESERVED,
    cost=1,
    origin=Origin(1, 2, 3, application_id=4, interaction_token="token", token_expires_at=1e9),
    request=Generation(prompt="a heron"),
    message_id=5,
)


class Reply:
    """The job's reply as its webhook sees it: what each edit showed, in the order the edits
    landed. Progress edits (those leaving the buttons as they are) wait for `release`."""

    def __init__(self) -> None:
        self.shown: list[str] = []
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def edit_message(self, message_id: int, *, embeds: Any, view: Any, **_: Any) -> Any:
        if view is MISSING:
            self.held.set()
            await self.release.wait()
        self.shown.append(embeds[0].title or embeds[0].fields[0].value.split("\n")[0])
        return SimpleNamespace(id=message_id)


@pytest.fixture
def reply() -> Reply:
    return Reply()


@pytest.fixture
def reporter(reply: Reply) -> DiscordReporter:
    reporter = DiscordReporter(
        None,  # never used: every edit goes through `reply`
        result_view=lambda job: result_view(job, CAPABILITIES),
        moderator_channels=None,
        clock=lambda: 0.0,
        min_edit_interval=10.0,
    )
    reporter._webhook = lambda job: reply
    return reporter


async def test_a_progress_edit_on_its_way_lands_before_the_final_edit(reporter, reply):
    reporter.update(JOB, Update(Stage.RUNNING, 0.5))
    await reply.held.wait()
    delivery = asyncio.create_task(reporter.deliver(JOB, [PNG]))
    await asyncio.sleep(0.05)
    assert reply.shown == []  # the final edit waits for the one on its way

    reply.release.set()
    posted = await delivery

    assert reply.shown == ["🎨 Generating", "Images ready"]
    assert posted.message_id == JOB.message_id


async def test_a_delivery_waiting_for_a_progress_edit_can_be_stopped(reporter, reply):
    reporter.update(JOB, Update(Stage.RUNNING, 0.5))
    await reply.held.wait()
    delivery = asyncio.create_task(reporter.deliver(JOB, [PNG]))
    await asyncio.sleep(0.05)

    delivery.cancel()

    with pytest.raises(asyncio.CancelledError):
        await delivery
    assert reply.shown == []


async def test_no_progress_is_shown_after_the_job_ends(reporter, reply):
    reply.release.set()
    reporter.update(JOB, Update(Stage.WAITING, queue_position=2))
    await reply.held.wait()
    reporter.update(JOB, Update(Stage.RUNNING, 0.5))  # due in 10 s: the job ends first

    await reporter.deliver(JOB, [PNG])
    await reporter.drain(timeout=0.1)

    assert reply.shown == ["⏳ Waiting in line: position 2", "Images ready"]
