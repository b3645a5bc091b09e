"""Several bot processes (`python bot.py`, each running one shard of two, or of three) on one
PostgreSQL database, against the fake Discord and the Omniinfer emulator.

A process killed with jobs queued and at the backend has every one finished by the other,
each delivered and charged once; a process started beside a working one leaves its jobs
at the backend alone; a process stopped while another lives hands its jobs over without
telling members "restarting"; the cap on jobs at Omniinfer and the fair order hold across
processes; Discord's refusals that reconnecting cannot cure stop the process with one line
and exit code 2. Three processes, one killed or stopped at a seeded random moment, still
deliver every job once and charge it once.

The processes run with a short lease (LEASE_SECONDS), so a takeover comes sooner than with
the default 20 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import discord
import pytest

from omni.emulator import Emulator
from storage import open_database
from tests.fakes.discord import Channel, FakeDiscord, Guild, InteractionRecord, Member
from tests.fakes.run_bot import spawn
from tests.harness import loosen_limits

KEY = "processes-test-key"
TASK_SECONDS = 1.5
LEASE_SECONDS, RENEW_EVERY = 6.0, 1.0


@dataclass
class Side:
    """One process's share of Discord: a server on its shard, a channel, three members."""

    name: str
    shard: int
    guild: Guild
    channel: Channel
    members: list[Member]


@dataclass
class Cluster:
    fake: FakeDiscord
    emulator: Emulator
    database_url: str
    sides: dict[str, Side]
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)

    def env(self, name: str, **extra: str) -> dict[str, str]:
        return {
            "DISCORD_TOKEN": self.fake.bot_token,
            "OMNI_API_KEY": KEY,
            "OMNI_BASE_URL": self.emulator.base_url,
            "OMNI_TIMEOUT": "3",
            "DATABASE_URL": self.database_url,
            "ACCOUNT_CREDIT": "100000",
            "LOG_LEVEL": "WARNING",
            "INSTANCE_ID": name,
            "SHARD_COUNT": str(len(self.sides)),
            "SHARD_IDS": str(self.sides[name].shard),
            "MAX_JOBS_IN_FLIGHT": "2",
            "LEASE_SECONDS": str(LEASE_SECONDS),
            "LEASE_RENEW_SECONDS": str(RENEW_EVERY),
            **extra,
        }

    async def start(self, name: str, **extra: str) -> None:
        self.processes[name] = await spawn(self.fake.base_url, self.env(name, **extra))
        await self.fake.wait_for_shards([self.sides[name].shard], len(self.sides), timeout=30)

    async def kill(self, name: str) -> None:
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        await process.wait()
        await self.fake.wait_until_disconnected(shard_ids=[self.sides[name].shard])

    async def terminate(self, name: str) -> int:
        process = self.processes[name]
        process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(process.wait(), 30)

    async def imagine(self, name: str, count: int) -> list[InteractionRecord]:
        side = self.sides[name]
        return [
            await self.fake.slash(
                side.guild,
                side.channel,
                side.members[n % len(side.members)],
                "imagine",
                {"prompt": f"{name} {n}"},
            )
            for n in range(count)
        ]


def _side(fake: FakeDiscord, name: str, shard: int, shards: int) -> Side:
    guild = fake.add_guild(f"server {name}", shard=(shard, shards))
    channel = fake.add_channel(guild, "general")
    members = [guild.add_member(f"{name}-{who}") for who in ("alice", "bob", "carol")]
    return Side(name, shard, guild, channel, members)


@contextlib.asynccontextmanager
async def cluster(pg_url: str, names: str = "ab") -> AsyncIterator[Cluster]:
    """One process per name, each with its own shard (its index) and a server on it."""
    emulator = Emulator(api_key=KEY, duration=TASK_SECONDS)
    await emulator.start()
    fake = FakeDiscord()
    await fake.start()
    sides = {name: _side(fake, name, shard, len(names)) for shard, name in enumerate(names)}
    await loosen_limits(pg_url, [side.guild.id for side in sides.values()])
    scene = Cluster(fake, emulator, pg_url, sides)
    try:
        yield scene
    finally:
        for process in scene.processes.values():
            if process.returncode is None:
                process.kill()
                await process.wait()
        await fake.stop()
        await emulator.stop()


async def jobs(url: str) -> list[dict]:
    db = await open_database(url)
    try:
        return await db.fetch("SELECT * FROM jobs ORDER BY created_at")
    finally:
        await db.close()


async def wait_for_jobs(url: str, predicate, timeout: float, what: str) -> list[dict]:
    """Poll the database until `predicate(jobs)` holds (the processes write it, not us)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        rows = await jobs(url)
        if predicate(rows):
            return rows
        assert loop.time() < deadline, (what, Counter((r["owner"], r["state"]) for r in rows))
        await asyncio.sleep(0.1)


def all_ended(rows: list[dict]) -> bool:
    return bool(rows) and all(r["state"] in ("done", "failed") for r in rows)


async def account(url: str) -> dict:
    db = await open_database(url)
    try:
        row = await db.fetchrow("SELECT * FROM account")
        assert row is not None
        return row
    finally:
        await db.close()


def has_images(record: InteractionRecord) -> bool:
    return record.latest is not None and bool(record.latest.attachments)


def told_its_fate(record: InteractionRecord) -> bool:
    """The member sees their images, or that the job's submit was not confirmed."""
    return has_images(record) or (
        record.latest is not None and "did not confirm" in record.latest.text
    )


def assert_delivered_once(records: list[InteractionRecord], fake: FakeDiscord) -> None:
    """Every member saw their images exactly once, in their reply, and nothing else."""
    for record in records:
        assert record.latest is not None and record.latest.attachments, record.latest
        with_images = [snap for snap in record.history if snap.attachments]
        assert len({tuple(name for name, _ in s.attachments) for s in with_images}) == 1
        assert record.followups == []
        assert not any("restart" in snap.content.lower() for snap in record.history)
        assert not any(
            "restart" in str(embed).lower() for snap in record.history for embed in snap.embeds
        )
    for side_channel in {record.channel.id: record.channel for record in records}.values():
        reposts = [m for m in fake.channel_messages(side_channel) if m.webhook_id is None]
        assert [m for m in reposts if m.attachments] == []


def most_at_once(emulator: Emulator) -> int:
    """The most Omniinfer tasks that were running at the same moment."""
    events = sorted(
        [(task.created, 1) for task in emulator._tasks.values()]
        + [(task.final_at, -1) for task in emulator._tasks.values()]
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


async def test_a_killed_processs_jobs_are_finished_by_the_survivor_once_each(pg_url):
    async with cluster(pg_url) as scene:
        await scene.start("a")
        await scene.start("b")
        records = await scene.imagine("a", 5)
        # Two at Omniinfer (the cap), three waiting in a's queue; none mid-submit.
        await wait_for_jobs(
            pg_url,
            lambda rows: (
                len(rows) == 5
                and Counter(r["state"] for r in rows) == {"submitted": 2, "queued": 3}
            ),
            timeout=20,
            what="a's jobs to be at the backend and queued",
        )
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        await scene.kill("a")
        rows = await wait_for_jobs(
            pg_url, all_ended, timeout=LEASE_SECONDS + 10, what="b to finish a's jobs"
        )
        took = loop.time() - killed_at
        await scene.fake.wait_for(lambda: all(map(has_images, records)), 10)
        assert await scene.terminate("b") == 0

    assert [r["state"] for r in rows] == ["done"] * 5, [r["failure"] for r in rows]
    assert {r["owner"] for r in rows} == {"b"}
    assert scene.emulator.stats.tasks_created == 5  # the two at Omniinfer were not resubmitted
    assert len({r["task_id"] for r in rows}) == 5
    ledger = await account(pg_url)
    assert ledger["reserved"] == 0 and ledger["spent"] == 5
    assert_delivered_once(records, scene.fake)
    assert took < LEASE_SECONDS + 10
    print(f"takeover and finish after SIGKILL: {took:.1f}s")


async def test_starting_a_second_process_leaves_the_first_ones_jobs_alone(pg_url):
    async with cluster(pg_url) as scene:
        scene.emulator.duration = 3.0  # a works for 12s: longer than b takes to start
        await scene.start("a")
        records = await scene.imagine("a", 8)
        rows = await wait_for_jobs(
            pg_url,
            lambda rows: Counter(r["state"] for r in rows) == {"submitted": 2, "queued": 6},
            timeout=20,
            what="a's jobs to be at the backend and queued",
        )
        at_backend = {r["id"] for r in rows if r["state"] == "submitted"}
        await scene.start("b")
        await wait_for_lease_renewals(pg_url, "b", 2)  # b has swept at least once since
        rows = await jobs(pg_url)
        assert {r["owner"] for r in rows if r["id"] in at_backend} == {"a"}
        assert Counter(r["state"] for r in rows)["queued"] > 0  # b looked while a had work
        rows = await wait_for_jobs(pg_url, all_ended, timeout=30, what="every job to end")
        assert await scene.terminate("b") == 0
        assert await scene.terminate("a") == 0
    # The jobs a had sent are a's to the end; the ones in line went to whichever process
    # had room when their turn came.
    assert {r["owner"] for r in rows if r["id"] in at_backend} == {"a"}
    assert [r["state"] for r in rows] == ["done"] * 8
    assert scene.emulator.stats.tasks_created == 8
    assert_delivered_once(records, scene.fake)


async def wait_for_lease_renewals(url: str, owner: str, renewals: int) -> None:
    """Wait until `owner`'s lease has been renewed `renewals` times from now (each renewal
    comes with a sweep)."""
    seen: set[float] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RENEW_EVERY * (renewals + 3)
    while len(seen) <= renewals:
        db = await open_database(url)
        expires = await db.fetchval("SELECT expires_at FROM leases WHERE owner = $1", owner)
        await db.close()
        if expires is not None:
            seen.add(expires)
        assert loop.time() < deadline, seen
        await asyncio.sleep(0.1)


async def test_a_process_stopped_beside_another_hands_its_jobs_over(pg_url):
    async with cluster(pg_url) as scene:
        # The default lease: the hand-over must not wait for it to expire.
        for name in "ab":
            await scene.start(name, LEASE_SECONDS="20", LEASE_RENEW_SECONDS="2")
        records = await scene.imagine("a", 5)
        await wait_for_jobs(
            pg_url,
            lambda rows: Counter(r["state"] for r in rows) == {"submitted": 2, "queued": 3},
            timeout=20,
            what="a's jobs to be at the backend and queued",
        )
        loop = asyncio.get_running_loop()
        stopped_at = loop.time()
        assert await scene.terminate("a") == 0
        rows = await wait_for_jobs(pg_url, all_ended, timeout=10, what="b to finish a's jobs")
        took = loop.time() - stopped_at
        await scene.fake.wait_for(lambda: all(map(has_images, records)), 10)
        assert await scene.terminate("b") == 0
    assert [(r["state"], r["owner"]) for r in rows] == [("done", "b")] * 5
    assert scene.emulator.stats.tasks_created == 5
    ledger = await account(pg_url)
    assert ledger["reserved"] == 0 and ledger["spent"] == 5
    assert_delivered_once(records, scene.fake)  # nobody was told "restarting"
    print(f"hand-over after SIGTERM, all finished: {took:.1f}s")


async def test_the_cap_on_jobs_at_omniinfer_holds_across_processes(pg_url):
    async with cluster(pg_url) as scene:
        await scene.start("a")
        await scene.start("b")
        records = await scene.imagine("a", 4) + await scene.imagine("b", 4)
        rows = await wait_for_jobs(pg_url, all_ended, timeout=40, what="every job to end")
        await scene.fake.wait_for(lambda: all(map(has_images, records)), 10)
        assert await scene.terminate("a") == 0
        assert await scene.terminate("b") == 0
    assert [r["state"] for r in rows] == ["done"] * 8
    assert {r["owner"] for r in rows} == {"a", "b"}
    assert scene.emulator.stats.tasks_created == 8
    assert most_at_once(scene.emulator) == 2  # MAX_JOBS_IN_FLIGHT, not 2 per process


async def test_members_are_served_in_turn_whichever_process_admitted_their_jobs(pg_url):
    async with cluster(pg_url) as scene:
        scene.emulator.duration = 1.5
        await scene.start("a", MAX_JOBS_IN_FLIGHT="1")
        await scene.start("b", MAX_JOBS_IN_FLIGHT="1")
        side_a, side_b = scene.sides["a"], scene.sides["b"]
        burst = [
            await scene.fake.slash(
                side_a.guild, side_a.channel, side_a.members[0], "imagine", {"prompt": f"a {n}"}
            )
            for n in range(4)
        ]
        await wait_for_jobs(pg_url, lambda rows: len(rows) == 4, timeout=10, what="a's burst")
        others = [
            await scene.fake.slash(
                side_b.guild, side_b.channel, member, "imagine", {"prompt": f"b {n}"}
            )
            for n, member in enumerate(side_b.members[:2])
        ]
        rows = await wait_for_jobs(pg_url, all_ended, timeout=40, what="every job to end")
        await scene.fake.wait_for(lambda: all(map(has_images, burst + others)), 10)
        assert await scene.terminate("a") == 0
        assert await scene.terminate("b") == 0
    started = sorted(scene.emulator._tasks.values(), key=lambda task: task.created)
    sides = [task.job.prompt.split()[0] for task in started]
    # a's member sent four at once, through a; one ran at once. b's two members, through b,
    # came while it ran: each goes before her third, as members take turns.
    assert sides == ["a", "a", "b", "b", "a", "a"], [task.job.prompt for task in started]
    assert [r["state"] for r in rows] == ["done"] * 6
    assert most_at_once(scene.emulator) == 1


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_three_processes_survive_one_killed_or_stopped_at_a_random_moment(pg_url, seed):
    chance = random.Random(seed)
    victim = chance.choice("ab")  # c always lives
    how = chance.choice([signal.SIGKILL, signal.SIGTERM])
    async with cluster(pg_url, "abc") as scene:
        scene.emulator.duration = 1.0
        for name in "abc":
            await scene.start(name, MAX_JOBS_IN_FLIGHT="3")
        records = [record for name in "abc" for record in await scene.imagine(name, 4)]
        await wait_for_jobs(
            pg_url, lambda rows: len(rows) == 12, timeout=20, what="every request admitted"
        )
        await asyncio.sleep(chance.uniform(0, 2.5))
        process = scene.processes[victim]
        process.send_signal(how)
        await asyncio.wait_for(process.wait(), 30)
        rows = await wait_for_jobs(
            pg_url, all_ended, timeout=LEASE_SECONDS + 30, what="the others to end every job"
        )
        await scene.fake.wait_for(lambda: all(map(told_its_fate, records)), timeout=10)
        for name in "abc":
            if name != victim:
                assert await scene.terminate(name) == 0

    done = [r for r in rows if r["state"] == "done"]
    # Only a SIGKILL in the middle of a submit can leave a job whose fate is unknown: it is
    # counted as spent and never sent again.
    uncertain = [r for r in rows if r["state"] == "failed"]
    assert all(r["failure"] == "uncertain" for r in uncertain), [r["failure"] for r in rows]
    assert how == signal.SIGKILL or not uncertain
    assert len(done) + len(uncertain) == 12
    assert scene.emulator.stats.tasks_created <= 12
    assert len({r["task_id"] for r in done}) == len(done) <= scene.emulator.stats.tasks_created
    ledger = await account(pg_url)
    assert (ledger["reserved"], ledger["spent"]) == (0, 12)
    for record in records:  # each shown its images once, or told the job's fate
        with_images = {tuple(name for name, _ in s.attachments) for s in record.history}
        assert len(with_images - {()}) <= 1
        assert not any("restart" in snap.text.lower() for snap in record.history), [
            (how, victim, snap.text) for snap in record.history
        ]
    assert sum(map(has_images, records)) == len(done)
    print(f"seed {seed}: {how.name} {victim}: {len(done)} done, {len(uncertain)} uncertain")


async def test_with_no_shard_settings_the_bot_runs_the_shards_discord_recommends(pg_url):
    async with cluster(pg_url) as scene:
        scene.fake.recommended_shards = 2
        env = scene.env("a")
        del env["SHARD_COUNT"], env["SHARD_IDS"]
        scene.processes["a"] = await spawn(scene.fake.base_url, env)
        sessions = await scene.fake.wait_for_shards(range(2), 2, timeout=30)
        assert len({session.id for session in sessions.values()}) == 2
        # Each server's command reaches the one process, on its own shard.
        for name in ("a", "b"):
            (record,) = await scene.imagine(name, 1)
            assert record.shard == (scene.sides[name].shard, 2)
            await scene.fake.wait_for(lambda r=record: has_images(r), 20)
        assert await scene.terminate("a") == 0


def _too_few_shards(fake: FakeDiscord) -> dict[str, str]:
    fake.max_guilds_per_shard = 1  # two servers, and one shard asked for
    return {"SHARD_COUNT": "1", "SHARD_IDS": "0"}


def _unknown_intents(fake: FakeDiscord) -> dict[str, str]:
    fake.valid_intents = discord.Intents.default().value & ~discord.Intents(dm_typing=True).value
    return {}


def _token_reset_at_identify(fake: FakeDiscord) -> dict[str, str]:
    fake.app.session_start_limit.remaining = 0  # Discord resets the token: close 4004
    return {}


FATAL = {
    "4011 too few shards": (_too_few_shards, "raise SHARD_COUNT"),
    "4013 intents": (_unknown_intents, "intents Discord does not know"),
    "4004 token": (_token_reset_at_identify, "DISCORD_TOKEN was refused"),
}


@pytest.mark.parametrize(("configure", "wording"), FATAL.values(), ids=FATAL.keys())
async def test_a_refusal_reconnecting_cannot_cure_is_one_line_and_exit_2(
    pg_url: str, configure: Callable[[FakeDiscord], dict[str, str]], wording: str
) -> None:
    async with cluster(pg_url) as scene:
        env = {**scene.env("a"), **configure(scene.fake)}
        process = await spawn(scene.fake.base_url, env, stderr=asyncio.subprocess.PIPE)
        scene.processes["a"] = process
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    text = stderr.decode()
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert process.returncode == 2, text[-2000:]
    assert len(lines) == 1 and wording in lines[0], text[-2000:]
