"""Several A1111 servers used as one: one job per server at a time, down servers left alone
until a health check finds them answering again.

A server runs one generation at a time and queues the rest behind a lock, so sending it a
second job gains nothing and hides the wait from us; the pool therefore hands a job only to
an idle, healthy server (`acquire`) and the caller gives it back when the blocking call
returns (`release`). A server that refuses connections is marked down (`mark_down`); a
background check asks it for its samplers with exponential back-off and puts it back in
service once it answers (it may have been restarted with other samplers, so the lists are
read again).

Samplers: `samplers()` is the **intersection** over the servers whose lists are known, so
whatever a member picks can run on any idle server; a server that joins later with fewer
samplers still gets only the jobs it can run (`acquire(sampler=...)`). The union would offer
samplers that some servers refuse, forcing jobs to wait for particular servers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import aiohttp

from a1111.client import DEFAULT_GENERATION_TIMEOUT, DEFAULT_TIMEOUT, A1111Client
from a1111.errors import A1111Error, CredentialsRefused
from a1111.models import Sampler, SDModel, Upscaler

log = logging.getLogger(__name__)

DEFAULT_HEALTH_BACKOFF = (1.0, 30.0)  # seconds: first wait, longest wait between checks
# Suffixes A1111 1.9+ reads as a scheduler ("DPM++ 2M Karras" = "DPM++ 2M" + Karras).
_SCHEDULER_SUFFIXES = (" Karras", " Exponential", " SGM Uniform", " Polyexponential")


@dataclass(eq=False)
class Server:
    """One server's state in the pool. `healthy` False: it refused connections and is being
    health-checked; `busy`: one of our jobs is running (or queued) there."""

    index: int
    client: A1111Client
    healthy: bool = True
    busy: bool = False
    samplers: tuple[Sampler, ...] | None = None  # None: not read yet
    models: tuple[SDModel, ...] = ()
    upscalers: tuple[Upscaler, ...] = ()
    credentials_refused: bool = False
    next_check: float | None = None  # loop time of the next health check while down
    last_used: float = field(default=float("-inf"))

    @property
    def url(self) -> str:
        return self.client.base_url

    def knows_sampler(self, name: str) -> bool:
        """Whether this server runs `name` (unknown lists: assume it does)."""
        if self.samplers is None:
            return True
        known = {n for s in self.samplers for n in (s.name, *s.aliases)}
        if name in known:
            return True
        return any(name.endswith(sfx) and name[: -len(sfx)] in known for sfx in _SCHEDULER_SUFFIXES)

    def __repr__(self) -> str:
        state = "up" if self.healthy else "down"
        return f"<Server {self.index} {self.url} {state}{' busy' if self.busy else ''}>"


class A1111Pool:
    """The servers of `A1111_URLS`, with one `user:password` (`auth`) for all of them.

    `timeout` bounds short calls and connects (seconds); `generation_timeout` one blocking
    generation; `health_backoff` is (first, longest) wait between checks of a down server.
    The aiohttp session belongs to the caller.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        session: aiohttp.ClientSession,
        auth: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        generation_timeout: float = DEFAULT_GENERATION_TIMEOUT,
        health_backoff: tuple[float, float] = DEFAULT_HEALTH_BACKOFF,
    ) -> None:
        if not urls:
            raise ValueError("at least one server URL is needed")
        first, longest = health_backoff
        if not 0 < first <= longest:
            raise ValueError("health_backoff must be (first, longest) with 0 < first <= longest")
        self.servers: tuple[Server, ...] = tuple(
            Server(
                index,
                A1111Client(
                    url,
                    session=session,
                    auth=auth,
                    timeout=timeout,
                    generation_timeout=generation_timeout,
                ),
            )
            for index, url in enumerate(urls)
        )
        self._backoff = health_backoff
        self._checks: dict[int, asyncio.Task[None]] = {}
        self._changed = asyncio.Event()
        self._closed = False

    def __repr__(self) -> str:
        return f"A1111Pool({[s.url for s in self.servers]!r})"

    # -- life --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Read every server's samplers, models and upscalers at once. A server that does not
        answer is marked down (and checked again later); raises `CredentialsRefused` only
        when every server refused the credentials (a wrong A1111_AUTH)."""
        outcomes = await asyncio.gather(
            *(self._learn(server) for server in self.servers), return_exceptions=True
        )
        for server, outcome in zip(self.servers, outcomes, strict=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, A1111Error):
                raise outcome
            if isinstance(outcome, CredentialsRefused):
                server.credentials_refused = True
                log.error("A1111 server %s refused the credentials: fix A1111_AUTH", server.url)
            if isinstance(outcome, A1111Error):
                self.mark_down(server, outcome.message)
        if all(server.credentials_refused for server in self.servers):
            raise CredentialsRefused("every A1111 server refused the credentials (A1111_AUTH)")
        up = [s.url for s in self.servers if s.healthy]
        log.info("A1111 pool: %d of %d servers up %s", len(up), len(self.servers), up)

    async def close(self) -> None:
        """Stop the health checks (the session is the caller's)."""
        self._closed = True
        checks = list(self._checks.values())
        for check in checks:
            check.cancel()
        await asyncio.gather(*checks, return_exceptions=True)
        self._checks.clear()

    # -- dispatch ----------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """How many jobs can run at once now: the healthy servers."""
        return sum(1 for server in self.servers if server.healthy)

    def acquire(
        self, *, sampler: str | None = None, exclude: Collection[int] = ()
    ) -> Server | None:
        """An idle healthy server (that runs `sampler`, not in `exclude`), now busy; the one
        used longest ago first, so work spreads evenly. None when there is none."""
        idle = [
            server
            for server in self.servers
            if server.healthy
            and not server.busy
            and server.index not in exclude
            and (sampler is None or server.knows_sampler(sampler))
        ]
        if not idle:
            return None
        server = min(idle, key=lambda s: (s.last_used, s.index))
        server.busy = True
        server.last_used = asyncio.get_running_loop().time()
        self._notify()
        return server

    def release(self, server: Server) -> None:
        """The job on `server` is over (its blocking call returned or failed)."""
        server.busy = False
        self._notify()

    def mark_down(self, server: Server, reason: str) -> None:
        """`server` refused a connection (or dropped one): take it out of service and check
        it with back-off until it answers."""
        if self._closed:
            return
        if server.healthy:
            log.warning("A1111 server %s is down (%s); checking it again later", server.url, reason)
        server.healthy = False
        if server.index not in self._checks:
            server.next_check = asyncio.get_running_loop().time() + self._backoff[0]
            check = asyncio.ensure_future(self._check_until_up(server))
            self._checks[server.index] = check
            check.add_done_callback(lambda _: self._checks.pop(server.index, None))
        self._notify()

    def server(self, index: int) -> Server | None:
        return self.servers[index] if 0 <= index < len(self.servers) else None

    def samplers(self) -> tuple[str, ...]:
        """Sampler names every server that has answered runs, in the first one's order."""
        known = [s.samplers for s in self.servers if s.samplers is not None]
        if not known:
            return ()
        names = [sampler.name for sampler in known[0]]
        rest = [self.servers[i] for i, s in enumerate(self.servers) if s.samplers is not None][1:]
        return tuple(name for name in names if all(server.knows_sampler(name) for server in rest))

    def next_check_in(self) -> float | None:
        """Seconds until the soonest health check of a down server (None: none is down)."""
        now = asyncio.get_running_loop().time()
        times = [s.next_check for s in self.servers if not s.healthy and s.next_check is not None]
        return max(0.0, min(times) - now) if times else None

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds, re-checked on every change of a server's state
        (acquired, released, down, up). Bound it with `asyncio.timeout`."""
        while not predicate():
            changed = self._changed
            await changed.wait()

    # -- health ------------------------------------------------------------------------------

    async def _learn(self, server: Server) -> None:
        """Read the lists; an error leaves the previous ones in place."""
        answers = await asyncio.gather(
            server.client.samplers(),
            server.client.sd_models(),
            server.client.upscalers(),
            return_exceptions=True,
        )
        samplers, models, upscalers = answers
        if isinstance(samplers, BaseException):
            raise samplers
        if isinstance(models, BaseException):
            raise models
        if isinstance(upscalers, BaseException):
            raise upscalers
        server.samplers = tuple(samplers)
        server.models = tuple(models)
        server.upscalers = tuple(upscalers)
        server.credentials_refused = False

    async def _check_until_up(self, server: Server) -> None:
        loop = asyncio.get_running_loop()
        first, longest = self._backoff
        delay = first
        while not self._closed:
            server.next_check = loop.time() + delay
            await asyncio.sleep(delay)
            try:
                await self._learn(server)
            except CredentialsRefused:
                server.credentials_refused = True
                log.error("A1111 server %s refuses the credentials: fix A1111_AUTH", server.url)
            except A1111Error as exc:
                log.debug("A1111 server %s still down: %s", server.url, exc.message)
            else:
                server.healthy = True
                server.next_check = None
                server.client.has_task_progress = None  # it may be another version now
                log.warning("A1111 server %s is back in service", server.url)
                self._notify()
                return
            delay = min(delay * 2, longest)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
