"""Runs admitted jobs to their one ending: one fair queue, a cap on jobs at the backend, and
resumption of whatever a previous process left unfinished.

Every state change goes through the store's compare-and-set, and every ending settles the
job's credit in the same transaction, so a job is delivered once and charged once.

The queue is the database's: admitted jobs wait there, and whenever there is room at the
backend a process claims the next ones in the fair order (`JobStore.claim_next`: members in
turn, across every process sharing the database), counting the cap on jobs at the backend in
the same statement. Admission claims in its own transaction, so on a bot with room a new job
starts without a second write; the dispatcher claims when room is made. A claimed job belongs
to the process that claimed it (jobs.leases); only that process moves it. A process that
restarts under the same identity resumes its own jobs at once; the jobs of a process whose
lease has expired are taken over by a live one at its next sweep. Members are shown their
place in line by the process that admitted their job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import replace
from functools import partial
from typing import Any

from clock import Clock
from jobs.admission import Admission, Admitted, Refused, Ticket
from jobs.backend import (
    Backend,
    BackendError,
    BadOutput,
    NotAccepted,
    OutOfCredit,
    Reading,
    TaskLost,
    TaskState,
    TaskTimedOut,
    Unavailable,
)
from jobs.endings import SETTLE_RETRY, Endings
from jobs.failures import Failure, FailureKind, classify
from jobs.intake import ABANDONED_AFTER, Intake
from jobs.leases import Lease
from jobs.model import UPSCALE_FACTOR, Job, JobKind, JobResult, JobState
from jobs.positions import PlacesInLine
from jobs.reporting import (
    DeliveryFailed,
    Reporter,
    SourceImageMissing,
    SourceImages,
    Stage,
    Update,
)
from jobs.store import Claimed, JobStore
from storage import Connection, Database, StorageError

log = logging.getLogger(__name__)

DEFAULT_MAX_WAIT = 600.0
# After the bot stops waiting, a task may still finish (and be billed): look again slowly
# for this long and deliver late if it does.
LATE_WAIT = 30 * 60.0
# A submit the backend certainly refused (rate limit, no server up) is tried again this many
# times before the member is told it is unavailable.
MAX_NOT_ACCEPTED = 30
# At most this many jobs are claimed in one statement (a burst of arrivals).
CLAIM_BATCH = 16
# Room made by another process, or its jobs in line, are seen at the next look: this often
# while this process has jobs in line, else this often.
CLAIM_POLL_WAITING, CLAIM_POLL_IDLE = 0.25, 1.0


class JobRunner:
    def __init__(
        self,
        db: Database,
        store: JobStore,
        admission: Admission,
        backend: Backend,
        reporter: Reporter,
        clock: Clock,
        *,
        sources: SourceImages,
        intake: Intake,
        max_in_flight: int,
        max_wait: float = DEFAULT_MAX_WAIT,
        lease: Lease | None = None,
    ) -> None:
        self._db = db
        self._store = store
        self._admission = admission
        self._backend = backend
        self._reporter = reporter
        self._endings = Endings(db, store, reporter, clock)
        self._sources = sources
        self._intake = intake
        self._clock = clock
        self._max_in_flight = max_in_flight
        self._max_wait = max_wait
        # This process's jobs in line (admitted or taken over here), for their places.
        self._waiting: dict[str, Job] = {}
        self._changed = asyncio.Event()  # room or a job in line, maybe: claim again
        # Held from a claim until its jobs run here, so none looks orphaned meanwhile.
        self._claiming = asyncio.Lock()
        self._claims_cut_short = False  # a claim may have taken jobs no task runs
        # Jobs being taken over from a dead process: theirs to end, never put back in line.
        self._adopting: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, asyncio.Task[None]] = {}  # job id → the task running it
        self._places = PlacesInLine(store, reporter, self._waiting, self._running)
        self._submitting: set[asyncio.Future[Job]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._accepting = False
        self._lease = lease or Lease(db, clock, store.owner)

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def owner(self) -> str:
        return self._store.owner

    async def start(self) -> None:
        """Take the lease, resume what this process left last time, then start taking jobs
        (and, every few seconds, the work of processes that died)."""
        started_at = self._clock()
        await self._lease.renew()
        await self._resume()
        self._accepting = True
        self._background = [
            asyncio.create_task(self._dispatch(), name="job-dispatcher"),
            asyncio.create_task(self._sweep(started_at), name="lease-sweeper"),
            asyncio.create_task(self._places.show(), name="queue-positions"),
        ]

    async def admit(self, ticket: Ticket) -> Admitted | Refused:
        """Admit a member's job (jobs.admission: the rules, the credit) and, in the same
        transaction, claim the next jobs in line if there is room: the new one among them
        unless others wait before it. A job left waiting is shown its place. Once the runner
        is stopping, a job is admitted but not claimed: it waits for the next start."""
        try:
            async with self._claiming:
                claim = self._claim_in if self._accepting else None
                try:
                    outcome = await self._admission.admit(ticket, claim=claim)
                except _ClaimFailed as failed:
                    # Rolled back whole: admitted again without it, the dispatcher claims.
                    log.error("could not claim the next jobs (%r); trying again", failed.error)
                    outcome = await self._admission.admit(ticket)
                if isinstance(outcome, Admitted):
                    self._waiting[outcome.job.id] = outcome.job
                    self._start(outcome.claimed)
                    if outcome.job.id in self._waiting:
                        self._changed.set()  # the dispatcher now looks as often as jobs wait
        except BaseException:
            # A commit whose answer was lost may have claimed jobs: the dispatcher looks.
            self._claims_cut_short = True
            self._changed.set()
            raise
        return outcome

    async def _claim_in(self, conn: Connection) -> Claimed:
        try:
            return await self._store.claim_next(self._cap(), limit=CLAIM_BATCH, conn=conn)
        except StorageError:
            raise
        except Exception as error:  # a row this version cannot read: not the admission's fault
            raise _ClaimFailed(error) from error

    async def stop(self) -> None:
        """Stop taking jobs. With another process alive, this one's jobs are handed to it
        (the ones in line at once, the rest when the lease is given up at the end); alone,
        the jobs in line wait in the database for the next start and jobs at the backend are
        resumed then (their handles are stored)."""
        self._accepting = False
        for task in self._background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(StorageError):
            await self._unclaim_orphans()  # a claim cut short by the cancel
        hand_over = await self._others_alive()
        self._waiting.clear()
        if hand_over:
            released = await self._store.release_queued()
            log.info("handing %d queued job(s) to the other processes", released)
        else:
            with contextlib.suppress(StorageError):  # they keep the last place they were shown
                for job in await self._store.unfinished(own=True):
                    if job.state is JobState.QUEUED:
                        self._reporter.update(job, Update(Stage.RESTARTING))
        await self._reporter.drain()
        # A submit under way is allowed to finish, so its task id is stored, not lost.
        if self._submitting:
            await asyncio.wait(self._submitting, timeout=15)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if hand_over:
            with contextlib.suppress(StorageError):
                await self._store.release_queued()  # jobs a cancelled task had not submitted
                await self._lease.give_up()

    async def _others_alive(self) -> bool:
        try:
            return await self._lease.others_alive()
        except StorageError:
            return False

    async def wait_idle(self) -> None:
        """For tests and benchmarks: wait until no job of this process is in line or running."""
        while self._waiting or self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await asyncio.sleep(0.01)

    # -- scheduling ------------------------------------------------------------------------

    def _cap(self) -> int:
        capacity = getattr(self._backend, "capacity", None)
        return self._max_in_flight if capacity is None else min(self._max_in_flight, capacity)

    async def _dispatch(self) -> None:
        """Claim the next jobs whenever there may be room and jobs in line: at once when one
        of ours leaves the backend, else at the next look (another process's, or a backend
        whose capacity changed without telling us: a server came back)."""
        while True:
            self._changed.clear()
            if self._claims_cut_short:
                try:
                    await self._unclaim_orphans()
                except Exception as error:
                    log.error("could not look for jobs claimed but not started (%r)", error)
            try:
                async with self._claiming:
                    claimed = await self._store.claim_next(self._cap(), limit=CLAIM_BATCH)
                    self._start(claimed)
            except Exception as error:
                # Whatever went wrong, the claim may have been written: jobs it took and no
                # task runs go back in line at the next look, and the dispatcher carries on.
                log.error("could not claim the next jobs (%r); trying again", error)
                self._claims_cut_short = True
            else:
                if len(claimed.jobs) == CLAIM_BATCH:
                    continue  # a full batch: more may fit (fewer: the line or the cap ended it)
            poll = CLAIM_POLL_WAITING if self._waiting else CLAIM_POLL_IDLE
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll):
                    await self._changed.wait()

    def _start(self, claimed: Claimed | None) -> None:
        """Run the jobs just claimed here; the places of ours still in line have changed."""
        if claimed is not None:
            for job in claimed.jobs:
                self._waiting.pop(job.id, None)
                self._spawn(self._run(job, claimed.paused_reason), job.id)
        if self._waiting:
            self._places.changed()

    def _spawn(self, coro: Coroutine[Any, Any, None], job_id: str) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        self._running[job_id] = task
        task.add_done_callback(partial(self._finished, job_id))

    def _finished(self, job_id: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._running.get(job_id) is task:
            del self._running[job_id]
        self._made_room()
        if not task.cancelled() and task.exception():
            log.error("job task crashed", exc_info=task.exception())

    def _made_room(self) -> None:
        """A job of ours left the backend: claim the next at once if ours are waiting (with
        nothing of ours in line, the next look finds others' jobs)."""
        if self._waiting:
            self._changed.set()

    async def _unclaim_orphans(self) -> None:
        """Put back in line this process's claimed jobs that no task here runs: a claim
        whose commit was cut short (a lost connection, a shutdown's cancel) may have taken
        them. None was sent (only a job's task sends it), so none is lost or charged."""
        async with self._claiming:  # no claim is between its commit and its tasks
            for job in await self._store.unfinished(own=True):
                starting = job.state in (JobState.STARTING, JobState.SUBMITTING)
                unclaimed = job.id not in self._running and job.id not in self._adopting
                if starting and unclaimed:
                    back = await self._store.advance(job, JobState.QUEUED)
                    if back is not None:
                        log.warning("job %s was claimed but not started; back in line", job.id)
                        self._waiting[back.id] = back
            self._claims_cut_short = False

    # -- one job ---------------------------------------------------------------------------

    async def _run(self, job: Job, paused_reason: str | None) -> None:
        """Run a job just claimed (STARTING or SUBMITTING), with the account's pause as read
        in the same statement."""
        async with self._ending_badly(job):
            if paused_reason:
                await self._endings.fail_as_seen(
                    job, Failure(FailureKind.OUT_OF_CREDIT, paused_reason)
                )
                return
            source = None
            if job.state is JobState.STARTING:
                # Read before SUBMITTING (a crash here is not an uncertain submit) and outside
                # the shield (a shutdown need not wait for a download from Discord).
                try:
                    source = await self._sources.fetch(job)
                except SourceImageMissing as error:
                    await self._endings.fail_as_seen(
                        job, Failure(FailureKind.SOURCE_MISSING, str(error))
                    )
                    return
                moved = await self._store.advance(job, JobState.SUBMITTING)
                if moved is None:
                    return
                job = moved
            submitting = asyncio.ensure_future(self._submit(job, source))
            self._submitting.add(submitting)
            try:
                outcome = await asyncio.shield(submitting)
            finally:
                self._submitting.discard(submitting)
            if outcome.state is JobState.SUBMITTED:
                await self._follow(outcome)

    @contextlib.asynccontextmanager
    async def _ending_badly(self, job: Job) -> AsyncIterator[None]:
        """Whatever escapes a job's run ends the job with a message, never silently."""
        try:
            yield
        except TaskTimedOut as error:
            await self._endings.fail(job, classify(error))
            stored = await self._endings.stored(job.id)  # with its handle, stored at submit
            if not error.by_server and stored is not None and stored.task_id is not None:
                self._spawn_late(stored)
        except BackendError as error:
            stored = await self._endings.stored(job.id)
            delivering = stored is not None and stored.state is JobState.DELIVERING
            if delivering and not isinstance(error, TaskLost):
                # The images were made (and billed) and perhaps partly posted; what failed is
                # the posting. (A task the backend lost says itself whether it was billed.)
                await self._endings.fail(job, Failure(FailureKind.DELIVERY_FAILED, error.message))
            else:
                await self._endings.fail(job, classify(error))
        except StorageError as error:
            # The database failed mid-job (a full disk, a restart): nothing is lost by
            # waiting. Once it answers, the job carries on from the state it has stored.
            log.error("storage fault during job %s (%s); waiting for the database", job.id, error)
            stored = await self._endings.stored(job.id)
            if stored is not None and not stored.state.is_final:
                await self._adopt(stored)
        except Exception as error:
            log.exception("job %s crashed", job.id)
            stored = await self._endings.stored(job.id)
            if stored is not None and stored.state is JobState.DELIVERING:
                # The backend made (and billed) the images; posting them is what failed.
                await self._endings.fail(
                    job, Failure(FailureKind.DELIVERY_FAILED, type(error).__name__)
                )
            else:
                await self._endings.fail(job, Failure(FailureKind.INTERNAL, type(error).__name__))

    async def _submit(self, job: Job, source: bytes | None) -> Job:
        """Send a SUBMITTING job to the backend and store the handle it answers with."""
        try:
            handle = await self._send(job, source)
        except NotAccepted as error:
            return await self._not_accepted(job, error)
        except OutOfCredit as error:
            await self._endings.pause(error.message)
            await self._endings.fail(job, classify(error))
            return job.with_(state=JobState.FAILED)
        except BackendError as error:
            await self._endings.fail(job, classify(error))
            return job.with_(state=JobState.FAILED)
        # The backend has the task now: its handle must not be lost to a storage fault, or a
        # billed task would never be followed. Storing it is retried until it lands.
        delay, longest = SETTLE_RETRY
        while True:
            try:
                submitted = await self._store.advance(job, JobState.SUBMITTED, task_id=handle)
                return submitted or job
            except StorageError as error:
                log.error("could not store task %s of job %s (%s); retrying", handle, job.id, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)

    async def _send(self, job: Job, source: bytes | None) -> str:
        if job.kind is JobKind.UPSCALE and source is not None:
            return await self._backend.upscale(source, UPSCALE_FACTOR)
        request = job.request.for_backend()
        if job.kind is JobKind.VARIATION:
            request = replace(request, init_image=source)
        return await self._backend.submit(request)

    async def _not_accepted(self, job: Job, error: NotAccepted) -> Job:
        """The backend certainly did not take the job: it goes back in line, keeping its
        turn, and is claimed again after the backend's wait, until it has been refused too
        often."""
        if job.refusals >= MAX_NOT_ACCEPTED or not job.origin.can_use_token(self._clock()):
            await self._endings.fail(
                job, Failure(FailureKind.UNAVAILABLE, error.message, billed=False)
            )
            return job.with_(state=JobState.FAILED)
        wait = max(0.2, error.retry_after or 1.0)
        back = await self._store.requeue(job, not_before=self._clock() + wait)
        if back is None:
            return job
        log.info("job %s not accepted (%s); again in %.1fs", job.id, error, wait)
        self._waiting[back.id] = back
        asyncio.get_running_loop().call_later(wait, self._changed.set)
        return back

    async def _follow(self, job: Job) -> None:
        """Follow a job the backend has, fetch its images, deliver them, settle the credit."""
        assert job.task_id is not None
        async for reading in self._backend.follow(job.task_id, max_wait=self._max_wait):
            if reading.state is not TaskState.SUCCEEDED:
                self._reporter.update(job, _update_for(reading))
        await self._deliver(job, job.task_id)

    async def _deliver(self, job: Job, handle: str) -> None:
        expected = 1 if job.kind is JobKind.UPSCALE else job.request.images
        try:
            output = await self._backend.result(handle, expected=expected)
        except Unavailable as error:
            # The task succeeded, so it was billed: images that cannot be fetched are spent.
            raise BadOutput(error.message) from error
        if not output.images:
            raise BadOutput("the backend reported success with no image")
        if job.state is JobState.SUBMITTED:
            moved = await self._store.advance(job, JobState.DELIVERING)
            if moved is None:
                return
            job = moved
            self._made_room()  # the job has left the backend: the next one may start now
        width, height = output.size or job.output_size
        result = JobResult(
            seeds=output.seeds,
            width=width,
            height=height,
            duration=self._clock() - job.created_at,
            model=self._backend.capabilities.model,
        )
        job = job.with_(result=result)
        try:
            posted = await self._reporter.deliver(
                job, list(output.images), record=partial(self._store.record_followups, job)
            )
        except DeliveryFailed as error:
            await self._endings.fail(job, Failure(FailureKind.DELIVERY_FAILED, str(error)))
            return
        await self._endings.settle(
            job,
            JobState.DONE,
            spent=True,
            result=result,
            message_id=posted.message_id,
            followup_message_ids=posted.followup_message_ids,
        )

    def _spawn_late(self, job: Job) -> None:
        """The bot stopped waiting, but the task may still finish: it has been counted as
        spent, and is looked at again, slowly, so the images are delivered late if it does."""
        # The job has ended, so the cap no longer counts it: its place is free for others.
        task = asyncio.create_task(self._late(job), name=f"late-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _late(self, job: Job) -> None:
        assert job.task_id is not None
        try:
            async for _reading in self._backend.follow(job.task_id, max_wait=LATE_WAIT):
                pass
            output = await self._backend.result(job.task_id, expected=job.request.images)
        except BackendError as error:
            log.info("late look at job %s (task %s) ended: %s", job.id, job.task_id, error)
            return
        ended = await self._store.get(job.id)
        if ended is None or ended.state is not JobState.FAILED or not output.images:
            return
        width, height = output.size or job.output_size
        result = JobResult(
            output.seeds,
            width,
            height,
            self._clock() - job.created_at,
            model=self._backend.capabilities.model,
        )
        try:
            posted = await self._reporter.deliver(ended.with_(result=result), list(output.images))
        except DeliveryFailed as error:
            log.warning("late images of job %s could not be posted: %s", job.id, error)
            return
        await self._store.advance(
            ended,
            JobState.DONE,
            result=result,
            message_id=posted.message_id,
            followup_message_ids=posted.followup_message_ids,
        )
        log.info("job %s delivered late (task %s)", job.id, job.task_id)

    # -- restart ---------------------------------------------------------------------------

    async def _resume(self) -> None:
        """Take up this process's own unfinished jobs (from its last life)."""
        for job in await self._store.unfinished(own=True):
            await self._adopt(job)
        self._places.changed()

    async def _take_over(self) -> None:
        """Claim the jobs of processes whose lease has expired, each with a compare-and-set
        on its owner and state, so two live processes never both take one."""
        taken = 0
        for owner, job in await self._store.orphaned():
            if not self._accepting:
                break
            # Marked from before the claim until adopted (kept if that is cut short): a
            # submit the dead process may have sent must end as uncertain, never run again.
            self._adopting.add(job.id)
            if await self._store.claim(job, owner):
                log.info("taking over job %s (%s) from %s", job.id, job.state.value, owner or "-")
                await self._adopt(job)
                taken += 1
            self._adopting.discard(job.id)
        if taken:
            self._places.changed()
            self._changed.set()

    async def _adopt(self, job: Job) -> None:
        """Carry on with a job this process now owns, from the state it was left in."""
        match job.state:
            case JobState.SUBMITTED | JobState.DELIVERING:
                log.info("resuming job %s (task %s)", job.id, job.task_id)
                self._spawn(self._resume_follow(job), job.id)
            case JobState.QUEUED if job.origin.can_use_token(self._clock()):
                self._waiting[job.id] = job  # claimed in its turn, by whichever process
            case JobState.QUEUED:
                # Left in line by a bot that was down until its member can no longer be
                # answered in the reply: refunded, and explained in the channel.
                await self._endings.fail(job, Failure(FailureKind.EXPIRED))
            case JobState.STARTING:
                # Claimed, but never sent: back in line, in its turn.
                back = await self._store.advance(job, JobState.QUEUED)
                if back is not None:
                    self._waiting[back.id] = back
            case JobState.SUBMITTING:
                # The submit may or may not have reached the backend, and there is no way
                # to ask about a task without its handle: count it as spent, never resubmit.
                await self._endings.fail(job, Failure(FailureKind.UNCERTAIN, "interrupted submit"))

    async def _sweep(self, started_at: float) -> None:
        """Every few seconds: renew the lease, take over the jobs of dead processes, and
        answer the requests they (or this process's last life) acknowledged and never
        admitted."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        while True:
            swept_at = loop.time()
            try:
                await self._lease.renew()
                await self._take_over()
                if loop.time() - began >= ABANDONED_AFTER:
                    await self._tell_lost(started_at)
            except Exception:
                log.exception("the lease sweep failed; trying again")
            # Renewals keep their rhythm however long the sweep took (a takeover of many).
            await asyncio.sleep(max(0.0, self._lease.renew_every - (loop.time() - swept_at)))

    async def _tell_lost(self, started_at: float) -> None:
        lost = await self._intake.abandoned(
            noted_before=self._clock() - ABANDONED_AFTER, started_at=started_at
        )
        for request in lost:
            if request.token_expires_at > self._clock():
                await self._reporter.lost(request)

    async def _resume_follow(self, job: Job) -> None:
        async with self._ending_badly(job):
            await self._follow(job)


class _ClaimFailed(Exception):
    """Claiming in admission's transaction failed for a reason of its own (not storage)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(repr(error))
        self.error = error


def _update_for(reading: Reading) -> Update:
    stage = Stage.ACCEPTED if reading.state is TaskState.QUEUED else Stage.RUNNING
    return Update(
        stage,
        progress=reading.progress,
        eta=reading.eta or None,
        preview_url=reading.preview_url,
        preview_image=reading.preview_image,
    )
