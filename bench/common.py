"""Helpers shared by the benchmarks: percentiles, tables, JSON figures and comparisons."""

from __future__ import annotations

import json
import resource
import statistics
from pathlib import Path
from typing import Any


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def save(path: str | None, figures: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(figures, indent=2))


def finish(args: Any, figures: dict[str, Any]) -> None:
    """Save the figures (`--json`) and print the change against a saved run (`--compare`)."""
    save(args.json, figures)
    report = compare(args.compare, figures)
    if report:
        print("\n" + report)


def compare(path: str | None, figures: dict[str, Any]) -> str:
    """Each figure beside the one in a previous run's JSON, with the change in percent."""
    if not path:
        return ""
    previous = json.loads(Path(path).read_text())
    rows = []
    for key, value in figures.items():
        before = previous.get(key)
        if isinstance(value, int | float) and isinstance(before, int | float) and before:
            rows.append([key, before, value, f"{(value - before) / before:+.1%}"])
    return table(["figure", "before", "now", "change"], rows)
