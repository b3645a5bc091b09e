"""The pool against three emulators: one job per server, only idle healthy servers, down
servers checked until they answer again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from a1111.emulator import DEFAULT_SAMPLERS, Emulator
from a1111.errors import ConnectionLost, CredentialsRefused, ServerDown
from a1111.models import GenerationRequest
from a1111.pool import A1111Pool, Server
from tests.a1111 import running, within

AUTH = "pool:long-enough-password"
FAST_CHECKS = (0.05, 0.2)
SMALL = GenerationRequest("a lighthouse", sampler_name="Euler a", width=64, height=64)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def emus() -> AsyncIterator[list[Emulator]]:
    async with running(3, duration=0.4, auth=AUTH) as emulators:
        yield emulators


def make_pool(session: aiohttp.ClientSession, emulators: list[Emulator], **options) -> A1111Pool:
    return A1111Pool(
        [e.base_url for e in emulators],
        session=session,
        auth=options.pop("auth", AUTH),
        timeout=5,
        health_backoff=FAST_CHECKS,
        **options,
    )


@pytest.fixture
async def pool(session, emus) -> AsyncIterator[A1111Pool]:
    pool = make_pool(session, emus)
    await pool.start()
    yield pool
    await pool.close()


async def run_job(pool: A1111Pool, request: GenerationRequest = SMALL) -> Server:
    """What the adapter does: wait for an idle server, run the blocking call there, give
    the server back; a lost connection takes the server out of service."""
    await within(pool.wait_until(lambda: any(s.healthy and not s.busy for s in pool.servers)))
    server = pool.acquire()
    assert server is not None
    try:
        await server.client.txt2img(request)
    except (ServerDown, ConnectionLost) as exc:
        pool.mark_down(server, exc.message)
        raise
    finally:
        pool.release(server)
    return server


# -- start ---------------------------------------------------------------------------------


async def test_start_reads_every_servers_lists(pool):
    assert pool.capacity == 3
    for server in pool.servers:
        assert server.healthy and not server.busy
        assert [s.name for s in server.samplers] == list(DEFAULT_SAMPLERS)
        assert server.models and "R-ESRGAN 4x+" in [u.name for u in server.upscalers]
    assert pool.samplers() == DEFAULT_SAMPLERS


async def test_samplers_are_those_every_server_runs_and_jobs_go_where_theirs_is(session):
    without_ddim = tuple(s for s in DEFAULT_SAMPLERS if s != "DDIM")
    async with (
        running(1, samplers=DEFAULT_SAMPLERS) as (full,),
        running(1, samplers=without_ddim) as (partial,),
        running(1, samplers=(*DEFAULT_SAMPLERS, "Restart")) as (extra,),
    ):
        pool = make_pool(session, [full, partial, extra], auth=None)
        await pool.start()
        try:
            assert pool.samplers() == without_ddim  # intersection, in the first one's order
            assert pool.acquire(sampler="DDIM") is not None
            assert pool.acquire(sampler="DDIM") is not None
            assert pool.acquire(sampler="DDIM") is None  # only the one without it is idle
            assert pool.acquire(sampler="Euler a") is pool.servers[1]
        finally:
            await pool.close()


async def test_a_server_down_at_start_joins_when_it_answers(session, emus):
    await emus[1].go_down()
    pool = make_pool(session, emus)
    await pool.start()
    try:
        assert pool.capacity == 2 and not pool.servers[1].healthy
        assert pool.servers[1].samplers is None
        assert pool.samplers() == DEFAULT_SAMPLERS  # from the two that answered
        assert pool.next_check_in() is not None
        held = [pool.acquire(), pool.acquire()]
        assert pool.acquire() is None  # the down one is never handed out
        assert {s.index for s in held if s} == {0, 2}
        await emus[1].come_back()
        await within(pool.wait_until(lambda: pool.servers[1].healthy))
        assert pool.capacity == 3 and pool.servers[1].samplers is not None
        assert pool.acquire() is pool.servers[1]
    finally:
        await pool.close()


async def test_wrong_credentials_everywhere_fail_start(session, emus):
    pool = make_pool(session, emus, auth="pool:not-the-password")
    with pytest.raises(CredentialsRefused) as refused:
        await pool.start()
    assert "not-the-password" not in str(refused.value)
    await pool.close()


async def test_a_server_refusing_the_credentials_is_kept_out(session, emus):
    async with running(1, auth="other:credentials-here") as (odd,):
        pool = make_pool(session, [*emus[:2], odd])
        await pool.start()
        try:
            assert pool.capacity == 2
            assert pool.servers[2].credentials_refused and not pool.servers[2].healthy
        finally:
            await pool.close()


# -- dispatch ------------------------------------------------------------------------------


async def test_acquire_hands_out_idle_healthy_servers_least_recently_used_first(pool):
    first, second, third = pool.acquire(), pool.acquire(), pool.acquire()
    assert {s.index for s in (first, second, third) if s} == {0, 1, 2}
    assert pool.acquire() is None
    pool.release(second)
    assert pool.acquire(exclude={second.index}) is None
    assert pool.acquire() is second
    pool.release(first)
    pool.release(third)
    assert pool.acquire() is first  # used longest ago


async def test_jobs_spread_over_idle_servers_and_never_share_one(pool, emus):
    servers = await within(asyncio.gather(*(run_job(pool) for _ in range(9))))
    assert sorted(s.index for s in servers) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for emu in emus:
        assert emu.stats.jobs_finished == 3
        assert emu.stats.max_concurrent == 1
        assert emu.stats.max_waiting == 0  # never a job queued behind another on a server
    assert all(not s.busy for s in pool.servers)


async def test_a_server_going_down_mid_run_keeps_its_job_and_gets_no_new_ones(pool, emus):
    for emu in emus:
        emu.duration = 30.0
    jobs = [asyncio.ensure_future(run_job(pool)) for _ in range(3)]
    for emu in emus:
        await within(emu.wait_until(lambda e: e.current_task is not None))
    await emus[1].go_down()
    done, _ = await within(asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED))
    (lost,) = done
    assert isinstance(lost.exception(), ConnectionLost)  # not moved: it had started there
    assert pool.capacity == 2 and not pool.servers[1].healthy
    for emu in (emus[0], emus[2]):
        assert emu.stats.jobs_started == 1  # nothing was re-sent to the others
    for emu in emus:
        emu.duration = 0.2
    await pool.servers[0].client.interrupt()  # end the two long jobs
    await pool.servers[2].client.interrupt()
    servers = await within(asyncio.gather(*(j for j in jobs if j is not lost)))
    assert {s.index for s in servers} == {0, 2}
    more = await within(asyncio.gather(*(run_job(pool) for _ in range(4))))
    assert 1 not in {s.index for s in more}  # new jobs avoid the down server
    await emus[1].come_back()
    await within(pool.wait_until(lambda: pool.servers[1].healthy))
    assert pool.capacity == 3
    again = await within(asyncio.gather(*(run_job(pool) for _ in range(3))))
    assert {s.index for s in again} == {0, 1, 2}


async def test_a_restarted_server_is_read_again(pool, emus):
    await emus[2].go_down()
    pool.mark_down(pool.servers[2], "refused")
    emus[2].samplers = ("Euler a", "DDIM")
    await emus[2].come_back()
    await within(pool.wait_until(lambda: pool.servers[2].healthy))
    assert [s.name for s in pool.servers[2].samplers] == ["Euler a", "DDIM"]
    assert pool.samplers() == ("Euler a", "DDIM")


def health_checks() -> int:
    return sum(1 for t in asyncio.all_tasks() if "_check_until_up" in t.get_coro().__qualname__)


async def test_close_stops_the_health_checks(session, emus):
    await emus[0].go_down()
    pool = make_pool(session, emus[:1])
    await pool.start()
    assert pool.capacity == 0
    wait = pool.next_check_in()
    assert wait is not None and wait <= FAST_CHECKS[0]
    assert health_checks() == 1
    await pool.close()
    assert health_checks() == 0
    pool.mark_down(pool.servers[0], "after close")  # ignored once closed
    assert health_checks() == 0
