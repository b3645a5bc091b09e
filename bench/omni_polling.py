"""Adaptive polling against the official SDK's fixed 0.5 s, and 500 concurrent jobs.

    python -m bench.omni_polling [--jobs 20] [--concurrent 500] [--json out.json]
                                 [--compare previous.json]

For tasks of 2, 10 and 30 s on the emulator, both schedules wait for the same kind of jobs
side by side: progress requests per job, and completion lag (the task turning final on the
emulator's clock → the client knowing). Then 500 jobs at once through one client, with the
emulator in its own process so the CPU figures are the client's: CPU seconds per job and
peak memory.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
import tracemalloc
from typing import Any

import aiohttp

from bench.common import cpu_seconds, finish, mean, percentile, table
from omni import OmniClient, PollPolicy, Txt2ImgRequest
from omni.emulator import Emulator
from omni.polling import FIXED_HALF_SECOND

KEY = "sandbox"


async def one_job(client: OmniClient, emulator: Emulator) -> tuple[int, float]:
    submission = await client.txt2img(Txt2ImgRequest(prompt="bench"))
    await client.wait_until_done(submission.task_id)
    known = time.monotonic()  # the emulator's clock
    lag = known - emulator.task_final_time(submission.task_id)
    return emulator.stats.polls_by_task[submission.task_id], lag


async def compare_schedules(duration: float, jobs: int) -> list[list[Any]]:
    rows = []
    async with Emulator(api_key=KEY, duration=duration) as emulator:
        clients = {
            "adaptive": OmniClient(KEY, base_url=emulator.base_url, poll=PollPolicy()),
            "fixed 0.5 s": OmniClient(KEY, base_url=emulator.base_url, poll=FIXED_HALF_SECOND),
        }
        results = await asyncio.gather(
            *(
                asyncio.gather(*(one_job(c, emulator) for _ in range(jobs)))
                for c in clients.values()
            )
        )
        for (name, client), outcome in zip(clients.items(), results, strict=True):
            polls = [p for p, _ in outcome]
            lags = [lag * 1000 for _, lag in outcome]
            rows.append([duration, name, mean(polls), percentile(lags, 50), percentile(lags, 95)])
            await client.close()
    return rows


async def concurrent(jobs: int, duration: float) -> dict[str, float]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "omni.emulator",
        "--port",
        "0",
        "--duration",
        str(duration),
        stdout=asyncio.subprocess.PIPE,
    )
    line = (await process.stdout.readline()).decode()  # type: ignore[union-attr]
    base_url = line.rsplit(" ", 1)[-1].strip()
    tracemalloc.start()
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    async with OmniClient(KEY, base_url=base_url) as client:

        async def job() -> None:
            submission = await client.txt2img(Txt2ImgRequest(prompt="bench"))
            await client.wait_until_done(submission.task_id)

        await asyncio.gather(*(job() for _ in range(jobs)))
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    stats_url = f"{base_url}/_emulator/stats"
    async with aiohttp.ClientSession() as session, session.get(stats_url) as response:
        stats = await response.json()
    process.terminate()
    await process.wait()
    return {
        "jobs": jobs,
        "wall_s": elapsed,
        "cpu_ms_per_job": cpu / jobs * 1000,
        "progress_requests_per_job": sum(stats["polls_by_task"].values()) / jobs,
        "python_heap_peak_mib": traced_peak / 2**20,
        "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


async def main(args: argparse.Namespace) -> None:
    rows = []
    for duration in (2.0, 10.0, 30.0):
        rows += await compare_schedules(duration, args.jobs)
    print(table(["task s", "schedule", "requests/job", "lag p50 ms", "lag p95 ms"], rows))
    load = await concurrent(args.concurrent, 10.0)
    print()
    print(table(list(load), [list(load.values())]))
    figures: dict[str, Any] = {f"{r[1]}@{r[0]:g}s_requests": r[2] for r in rows}
    figures |= {f"{r[1]}@{r[0]:g}s_lag_p50_ms": r[3] for r in rows}
    figures |= {f"concurrent_{k}": v for k, v in load.items()}
    finish(args, figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20, help="jobs per duration and schedule")
    parser.add_argument("--concurrent", type=int, default=500)
    parser.add_argument("--json")
    parser.add_argument("--compare")
    asyncio.run(main(parser.parse_args()))
