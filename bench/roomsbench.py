"""What bench/smallrooms.py and bench/slowconsumer.py share: pinning, provenance, logs, plots.

Kept apart from the fan-out's modules (bench/run.py, report.py, plot.py) on
purpose: these two scenarios have their own load generator (bench/roomsgen.py)
and must not break when the fan-out's internals change.
"""

import argparse
import array
import hashlib
import os
import platform
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from statistics import median
from typing import Any

from bench.system import CoreTimes

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
PROBLEM = re.compile(r"ERROR|CRITICAL|WARNING|Traceback|Exception|slow_consumer|closing c_")
SAMPLE_LINES = 5
QUIT_TIMEOUT_S = 15.0


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--no-pin", action="store_true", help="do not pin (a one-core machine)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG next to the JSON")
    p.add_argument("--out", type=Path, default=None, help="JSON path (bench/results/...)")


def pin_self(args: argparse.Namespace, prog: str) -> None:
    """Keep the orchestrator (mostly idle while measuring) off the server's core."""
    if args.no_pin:
        return
    allowed = os.sched_getaffinity(0)
    if allowed == {args.load_cpu} and args.server_cpu != args.load_cpu:
        return  # pinned already (python -m bench runs every scenario in one process)
    if {args.server_cpu, args.load_cpu} - allowed or args.server_cpu == args.load_cpu:
        sys.exit(
            f"{prog}: cannot pin to cores {args.server_cpu} and {args.load_cpu} "
            f"(allowed: {sorted(allowed)}); use --server-cpu/--load-cpu or --no-pin"
        )
    os.sched_setaffinity(0, {args.load_cpu})


def git(*cmd: str) -> str:
    done = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, timeout=10)
    return done.stdout.strip()


def code_hash() -> str:
    """A short hash of the server code on disk (api/, auth/): equal at start and end =
    nobody edited it while the benchmark ran."""
    digest = hashlib.sha1()
    for package in ("api", "auth"):
        for path in sorted((REPO / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(REPO)).encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def environment() -> dict[str, Any]:
    packages = ["fastapi", "starlette", "uvicorn", "uvloop", "websockets", "python-jose"]
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--", "api", "auth")),
        "api_auth_sha1": code_hash(),
        "python": platform.python_version(),
        "packages": {name: version(name) for name in packages},
        "cpus": os.cpu_count(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def finish_environment(env: dict[str, Any]) -> str | None:
    """Record the server code's hash at the end; a warning line if it changed."""
    env["api_auth_sha1_at_end"] = code_hash()
    env["commit_at_end"] = git("rev-parse", "HEAD")
    if env["api_auth_sha1_at_end"] != env["api_auth_sha1"]:
        return "WARNING: the server code (api/, auth/) changed while the benchmark ran"
    return None


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


def load_samples(files: Sequence[str]) -> list[float]:
    """Every latency sample (µs) in these float64 files, sorted."""
    samples: array.array[float] = array.array("d")
    for name in files:
        path = Path(name)
        if path.is_file():
            samples.frombytes(path.read_bytes())
    return sorted(samples)


def med(values: Sequence[float]) -> float:
    return float(median(values)) if values else 0.0


def ratio(mine: float, theirs: float) -> float:
    return mine / theirs if theirs else 0.0


def write_png(out_json: Path, panels: int, draw: Callable[[Sequence[Any]], None]) -> str:
    """``<out_json stem>.png`` with ``panels`` side by side, drawn by ``draw(axes)``;
    the suffix of the run's last line ("; plot: …" or "; no plot …")."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "; no plot (matplotlib missing: pip install -e '.[bench]')"
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False)
    draw(list(axes[0]))
    fig.suptitle(out_json.stem, fontsize=9)
    fig.tight_layout()
    png = out_json.with_suffix(".png")
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return f"; plot: {png}"


def bar_panel(ax: Any, title: str, values: Mapping[str, Sequence[float]]) -> None:
    """One bar per server: the median of its runs, min-max as the error bar."""
    names = list(values)
    meds = [med(values[n]) for n in names]
    low = [m - min(values[n], default=m) for n, m in zip(names, meds, strict=True)]
    high = [max(values[n], default=m) - m for n, m in zip(names, meds, strict=True)]
    ax.bar(names, meds, yerr=[low, high], capsize=4, color="C0")
    for x, m in enumerate(meds):
        label = f"{m:,.0f}" if m >= 100 else f"{m:.1f}"
        ax.annotate(label, (x, m), ha="center", va="bottom", fontsize=8)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)


def ccdf_panel(
    ax: Any, title: str, curves: dict[str, list[float]], max_points: int = 20_000
) -> None:
    """Latency distributions (µs samples, sorted) as complementary CDFs on log axes."""
    for label, ordered in curves.items():
        if not ordered:
            continue
        step = max(1, len(ordered) // max_points)
        xs = [v / 1e3 for v in ordered[::step]]
        n = len(xs)
        ax.plot(xs, [1 - i / n for i in range(n)], label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("publish to delivery, ms")
    ax.set_ylabel("fraction of deliveries slower")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
