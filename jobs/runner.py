"""Runs admitted jobs to their one ending: a fair queue, a cap on jobs at Omniinfer, and
resumption of whatever a previous process left unfinished.

Every state change goes through the store's compare-and-set, and every ending settles the
job's credit in the same transaction, so a job is delivered once and charged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from clock import Clock
from jobs.failures import Failure, FailureKind, classify
from jobs.fair_queue import FairQueue
from jobs.intake import ABANDONED_AFTER, Intake
from jobs.model import UPSCALE_FACTOR, Charge, Job, JobKind, JobResult, JobState
from jobs.reporting import (
    DeliveryFailed,
    Reporter,
    SourceImageMissing,
    SourceImages,
    Stage,
    Update,
)
from jobs.store import JobStore
from omni import (
    InsufficientCredit,
    OmniClient,
    OmniError,
    Progress,
    Submission,
    TaskStatus,
    UpscaleRequest,
)
from quota import ledger
from quota.store import add_grant
from storage import Database

log = logging.getLogger(__name__)

DEFAULT_MAX_WAIT = 600.0


class JobRunner:
    def __init__(
        self,
        db: Database,
        store: JobStore,
        client: OmniClient,
        reporter: Reporter,
        clock: Clock,
        *,
        sources: SourceImages,
        intake: Intake,
        max_in_flight: int,
        max_wait: float = DEFAULT_MAX_WAIT,
    ) -> None:
        self._db = db
        self._store = store
        self._client = client
        self._reporter = reporter
        self._sources = sources
        self._intake = intake
        self._clock = clock
        self._max_in_flight = max_in_flight
        self._max_wait = max_wait
        self._queue = FairQueue()
        self._in_flight = 0
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._submitting: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._accepting = False

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    async def start(self) -> None:
        """Resume what the last process left, then start taking jobs."""
        started_at = self._clock()
        await self._resume()
        self._accepting = True
        self._dispatcher = asyncio.create_task(self._dispatch(), name="job-dispatcher")
        self._sweeper = asyncio.create_task(self._tell_lost(started_at), name="lost-requests")

    def enqueue(self, job: Job) -> None:
        self._queue.push(job)
        self._report_positions()
        self._changed.set()

    async def stop(self) -> None:
        """Stop taking jobs; queued jobs wait in the database for the next start, and jobs
        at Omniinfer are left to be resumed (their task ids are stored)."""
        self._accepting = False
        for task in (self._dispatcher, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for job in self._queue.drain():
            self._reporter.update(job, Update(Stage.RESTARTING))
        await self._reporter.drain()
        # A submit under way is allowed to finish, so its task id is stored, not lost.
        if self._submitting:
            await asyncio.wait(self._submitting, timeout=15)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait_idle(self) -> None:
        """For tests and benchmarks: wait until no job is queued or running here."""
        while self._queue or self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await asyncio.sleep(0)

    # -- scheduling ------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            while not self._queue or self._in_flight >= self._max_in_flight:
                self._changed.clear()
                await self._changed.wait()
            job = self._queue.pop()
            assert job is not None
            self._spawn(self._run(job))
            self._report_positions()

    def _spawn(self, coro: object) -> None:
        self._in_flight += 1
        task = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight -= 1
        self._changed.set()
        if not task.cancelled() and task.exception():
            log.error("job task crashed", exc_info=task.exception())

    def _report_positions(self) -> None:
        for position, job in enumerate(self._queue.in_order(), start=1):
            self._reporter.update(job, Update(Stage.WAITING, queue_position=position))

    # -- one job ---------------------------------------------------------------------------

    async def _run(self, job: Job) -> None:
        async with self._ending_badly(job):
            if (await ledger.balance(self._db)).paused_reason:
                await self._fail(job, Failure(FailureKind.OUT_OF_CREDIT, "generation paused"))
                return
            # Read before SUBMITTING (a crash here is not an uncertain submit) and outside the
            # shield (a shutdown need not wait for a download from Discord).
            try:
                source = await self._sources.fetch(job) if job.kind is JobKind.UPSCALE else None
            except SourceImageMissing as error:
                await self._fail_as_seen(job, Failure(FailureKind.SOURCE_MISSING, str(error)))
                return
            submitting = asyncio.ensure_future(self._submit(job, source))
            self._submitting.add(submitting)
            try:
                job = await asyncio.shield(submitting)
            finally:
                self._submitting.discard(submitting)
            if job.state is JobState.SUBMITTED:
                await self._follow(job)

    @contextlib.asynccontextmanager
    async def _ending_badly(self, job: Job) -> AsyncIterator[None]:
        """Whatever escapes a job's run ends the job with a message, never silently."""
        try:
            yield
        except OmniError as error:
            await self._fail(job, classify(error))
        except Exception as error:
            log.exception("job %s crashed", job.id)
            await self._fail(job, Failure(FailureKind.INTERNAL, type(error).__name__))

    async def _submit(self, job: Job, source: bytes | None) -> Job:
        moved = await self._store.advance(job, JobState.SUBMITTING)
        if moved is None:
            return job  # another process took it
        job = moved
        try:
            submission = await self._send(job, source)
        except InsufficientCredit as error:
            await self._pause(str(error))
            await self._fail(job, classify(error))
            return job.with_(state=JobState.FAILED)
        except OmniError as error:
            await self._fail(job, classify(error))
            return job.with_(state=JobState.FAILED)
        submitted = await self._store.advance(job, JobState.SUBMITTED, task_id=submission.task_id)
        return submitted or job

    async def _send(self, job: Job, source: bytes | None) -> Submission:
        if source is not None:
            return await self._client.upscale(UpscaleRequest(image=source, factor=UPSCALE_FACTOR))
        return await self._client.txt2img(job.request)

    async def _follow(self, job: Job) -> None:
        """Poll a job Omniinfer has, fetch its images, deliver them, settle the credit."""
        assert job.task_id is not None
        final: Progress | None = None
        async for progress in self._client.wait(job.task_id, max_wait=self._max_wait):
            final = progress
            if progress.status is not TaskStatus.SUCCEEDED:
                self._reporter.update(job, _update_for(progress))
        assert final is not None
        images = await self._client.download(final.images)
        if job.state is JobState.SUBMITTED:
            moved = await self._store.advance(job, JobState.DELIVERING)
            if moved is None:
                return
            job = moved
        info = final.info
        result = JobResult(
            seeds=info.all_seeds or ((info.seed,) if info.seed is not None else ()) if info else (),
            width=job.output_size[0],
            height=job.output_size[1],
            duration=self._clock() - job.created_at,
        )
        job = job.with_(result=result)
        try:
            posted = await self._reporter.deliver(job, images)
        except DeliveryFailed as error:
            await self._fail(job, Failure(FailureKind.DELIVERY_FAILED, str(error)))
            return
        await self._settle(
            job,
            JobState.DONE,
            spent=True,
            result=result,
            message_id=posted.message_id,
            more_message_ids=posted.more_message_ids,
        )

    async def _fail(self, job: Job, failure: Failure) -> None:
        """End `job` badly from whatever state it has reached meanwhile."""
        fresh = await self._store.get(job.id)
        if fresh is not None and not fresh.state.is_final:
            await self._fail_as_seen(fresh, failure)

    async def _fail_as_seen(self, job: Job, failure: Failure) -> None:
        """End `job` badly only if it is still in the state this process saw (another
        process may have taken it on), and tell the member."""
        settled = await self._settle(
            job,
            JobState.FAILED,
            spent=failure.spent,
            failure=failure.kind.value,
            failure_detail=failure.detail[:500],
        )
        if settled is not None:
            await self._reporter.fail(settled, failure)

    async def _settle(
        self, job: Job, state: JobState, *, spent: bool, **fields: object
    ) -> Job | None:
        """End the job and its reservation together; None if it had already ended."""
        now = self._clock()
        async with self._db.transaction() as conn:
            moved = await self._store.advance(
                job,
                state,
                conn=conn,
                charge=Charge.COMMITTED if spent else Charge.RELEASED,
                finished_at=now,
                **fields,
            )
            if moved is not None:
                await ledger.settle(conn, job.cost, spent=spent, now=now)
                if job.grant_used and not spent:
                    origin = job.origin
                    await add_grant(conn, origin.guild_id or 0, origin.user_id, job.grant_used)
        return moved

    async def _pause(self, reason: str) -> None:
        async with self._db.transaction() as conn:
            paused = await ledger.pause(conn, reason, self._clock())
        if paused:
            await self._reporter.account_paused(reason)

    # -- restart ---------------------------------------------------------------------------

    async def _resume(self) -> None:
        now = self._clock()
        for job in await self._store.unfinished():
            match job.state:
                case JobState.SUBMITTED | JobState.DELIVERING:
                    log.info("resuming job %s (task %s)", job.id, job.task_id)
                    self._spawn(self._resume_follow(job))
                case JobState.QUEUED if job.origin.can_use_token(now):
                    self._queue.push(job)
                case JobState.QUEUED:
                    await self._fail(job, Failure(FailureKind.EXPIRED))
                case JobState.SUBMITTING:
                    # The POST may or may not have reached Omniinfer, and there is no way to
                    # ask it about a task without its id: count it as spent, never resubmit.
                    await self._fail(job, Failure(FailureKind.UNCERTAIN, "interrupted submit"))
        self._report_positions()

    async def _tell_lost(self, started_at: float) -> None:
        """Once any live process has had time to admit its own requests, tell the members
        whose requests an earlier process acknowledged and never admitted."""
        await asyncio.sleep(ABANDONED_AFTER)
        try:
            lost = await self._intake.abandoned(noted_before=started_at)
        except Exception:
            log.exception("could not look for requests lost by the previous process")
            return
        for request in lost:
            if request.token_expires_at > self._clock():
                await self._reporter.lost(request)

    async def _resume_follow(self, job: Job) -> None:
        async with self._ending_badly(job):
            await self._follow(job)


def _update_for(progress: Progress) -> Update:
    stage = Stage.QUEUED if progress.status is TaskStatus.QUEUED else Stage.RUNNING
    return Update(
        stage,
        progress=progress.progress,
        eta=progress.eta_relative or None,
        preview_url=progress.preview_images[0] if progress.preview_images else None,
    )
