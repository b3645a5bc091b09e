"""How long a restart takes to resume 100 in-flight jobs, and what the resume costs.

    python -m bench.restart [--jobs 100] [--duration 12] [--json out.json]
                            [--compare previous.json]

Runs the same N jobs twice against the emulator: once straight through, once with the bot
stopped and started again while every job is at Omniinfer. Prints the time from the new
bot starting to every resumed job being polled again (and to all delivered), and the
Omniinfer requests per job in both runs: the difference is what the resume costs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time

from bench.common import finish, table
from omni.emulator import Emulator
from quota.limits import LimitField, Rule, ScopeKind
from quota.store import set_rule
from tests.fakes.discord import FakeDiscord
from tests.harness import Harness, build_world

logging.disable(logging.WARNING)


async def run(jobs: int, duration: float, restart: bool) -> dict[str, float]:
    emulator = Emulator(api_key="bench", duration=duration)
    await emulator.start()
    fake = FakeDiscord()
    await fake.start()
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, fake.patch_discord():
        harness = Harness(fake, emulator, build_world(fake), f"sqlite:///{tmp}/bench.db")
        harness.settings_overrides = {"max_jobs_in_flight": jobs}
        members = [harness.world.guild.add_member(f"m{i}") for i in range(jobs)]
        await harness.start_bot()
        async with harness.bot.services.db.transaction() as conn:
            rule = Rule(ScopeKind.GUILD, harness.world.guild.id, LimitField.COOLDOWN_SECONDS, 0)
            await set_rule(conn, harness.world.guild.id, rule)
        records = await asyncio.gather(*(harness.imagine(member=m) for m in members))
        await fake.wait_for(lambda: emulator.stats.tasks_created == jobs, timeout=60)
        if restart:
            await harness.stop_bot()
            polls_before = dict(emulator.stats.polls_by_task)
            started = time.perf_counter()
            await harness.start_bot()
            await fake.wait_for(
                lambda: all(
                    emulator.stats.polls_by_task[t] > polls_before.get(t, 0) for t in polls_before
                ),
                timeout=60,
            )
            figures["resume_all_polled_s"] = time.perf_counter() - started
        await asyncio.gather(*(harness.finished(r, timeout=120) for r in records))
        if restart:
            figures["restart_to_all_delivered_s"] = time.perf_counter() - started
        await harness.stop_bot()
    polls = sum(emulator.stats.polls_by_task.values())
    figures["submits_per_job"] = emulator.stats.requests["txt2img"] / jobs
    figures["progress_requests_per_job"] = polls / jobs
    await fake.stop()
    await emulator.stop()
    return figures


async def main(args: argparse.Namespace) -> None:
    straight = await run(args.jobs, args.duration, restart=False)
    resumed = await run(args.jobs, args.duration, restart=True)
    extra = resumed["progress_requests_per_job"] - straight["progress_requests_per_job"]
    figures = {
        "jobs": args.jobs,
        "resume_all_polled_s": resumed["resume_all_polled_s"],
        "restart_to_all_delivered_s": resumed["restart_to_all_delivered_s"],
        "progress_requests_per_job_straight": straight["progress_requests_per_job"],
        "progress_requests_per_job_resumed": resumed["progress_requests_per_job"],
        "extra_requests_per_job": extra,
        "extra_submits_per_job": resumed["submits_per_job"] - straight["submits_per_job"],
    }
    print(table(["figure", "value"], [[k, v] for k, v in figures.items()]))
    finish(args, figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--duration", type=float, default=12.0)
    parser.add_argument("--json")
    parser.add_argument("--compare")
    asyncio.run(main(parser.parse_args()))
