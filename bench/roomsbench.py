"""What bench/smallrooms.py and bench/slowconsumer.py share: arguments, logs, the run's frame.

Kept apart from the fan-out's run and summary (bench/run.py, bench/report.py's
verdicts) on purpose: these two scenarios have their own load generator
(bench/roomsgen.py) and must not break when the fan-out's internals change.
What every scenario does alike comes from the modules that own it: pinning
and provenance from bench/system.py, the JSON layout from bench/report.py,
figures from bench/plot.py, latency samples from bench/samples.py.
"""

import argparse
import re
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any

from bench.plot import write_png
from bench.report import write_report
from bench.system import RESULTS, CoreTimes, environment, finish_environment

PROBLEM = re.compile(r"ERROR|CRITICAL|WARNING|Traceback|Exception|slow_consumer|closing c_")
SAMPLE_LINES = 5
QUIT_TIMEOUT_S = 15.0


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--no-pin", action="store_true", help="do not pin (a one-core machine)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG next to the JSON")
    p.add_argument("--out", type=Path, default=None, help="JSON path (bench/results/...)")


def log_problems(lines: Sequence[str], start: int, end: int) -> tuple[int, list[str]]:
    """How many problem lines a server logged between two marks, and the first few."""
    found = [line.rstrip() for line in lines[start:end] if PROBLEM.search(line)]
    return len(found), found[:SAMPLE_LINES]


def others_busy(
    before: dict[int, CoreTimes], after: dict[int, CoreTimes], ours: dict[int, float]
) -> dict[str, float]:
    """Per core: % of it that something other than our processes used meanwhile."""
    result = {}
    for core, ours_s in ours.items():
        if core not in before or core not in after:
            continue
        total = after[core].total_s - before[core].total_s or 1e-9
        busy = after[core].busy_s - before[core].busy_s
        result[f"cpu{core}"] = round(100 * max(busy - ours_s, 0) / total, 1)
    return result


def scrape_metric(port: int, name: str, labels: str = "") -> float | None:
    """One sample of itemrooms' ``/metrics`` (e.g. ``itemrooms_server_closes_total``,
    ``reason="slow_consumer"``); None when unreachable, 0 when not there yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    key = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return 0.0


def med(values: Sequence[float]) -> float:
    return float(median(values)) if values else 0.0


def ratio(mine: float, theirs: float) -> float:
    return mine / theirs if theirs else 0.0


@dataclass(frozen=True, slots=True)
class Invocation:
    """One invocation of a scenario: its title, where its JSON and server logs go,
    what it ran on (``env``, completed at the end) and when it started."""

    title: str
    out: Path
    logs: Path
    env: dict[str, Any]
    started: float


def begin(args: argparse.Namespace, kind: str, title: str) -> Invocation:
    """Name the JSON (``--out``, or ``bench/results/<kind>-<UTC stamp>.json``) and its
    logs folder, record the environment, print the title, start the clock."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS / f"{kind}-{stamp}.json"
    env = environment()
    print(title, flush=True)
    return Invocation(title, out, out.with_name(out.stem + "-logs"), env, time.monotonic())


def finish(
    run: Invocation,
    args: argparse.Namespace,
    cfg: Any,
    results: Mapping[Any, Sequence[Any]],
    summary: Mapping[str, Any],
    sections: Sequence[Sequence[str]],
    fields: Mapping[str, Any],
    found: list[str],
    draw: Callable[[Sequence[Any]], None],
) -> int:
    """What both scenarios do once every run is over; the exit status (1: a problem).

    Prints each non-empty section (table, ratios, notes) after a blank line,
    every problem, a warning when the server code changed meanwhile; writes the
    JSON (``fields`` after the summary) and the PNG of ``draw``'s four panels;
    ends with the time taken and where everything went."""
    for lines in sections:
        if lines:
            print()
            print("\n".join(lines))
    for problem in found:
        print(f"PROBLEM: {problem}")
    warning = finish_environment(run.env)
    if warning:
        print(warning)
    total = time.monotonic() - run.started
    fields = {**fields, "problems": found}
    write_report(run.out, run.title, cfg, args, run.env, results, summary, fields, total)
    plot = "" if args.no_plot else write_png(run.out, 4, draw)
    print(f"\n{total:.0f}s in all; results: {run.out}; server logs: {run.logs}/{plot}")
    return 1 if found else 0
