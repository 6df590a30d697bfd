"""Smoke runs of the benchmark's quick variants: they start, finish and write their JSON.

Never timings: the machine is shared and these runs last a second or two. The
scenarios that compare itemrooms with the baselines run it against the plain server
only (``BASELINE``), and those that assert nothing of a baseline run itemrooms alone:
the baselines' harness is the same code, and the suite's time is counted; the full
runs (``make bench``) have all three servers. A
quick run exits non-zero when a member missed a message, a server failed, or
(the storm) a bad token was not refused as the protocol says; that, the JSON
and the plot next to it (when matplotlib, the ``bench`` extra, is installed)
are what is asserted. Each scenario is a subprocess with its own bounded
timeout; the ten together take about two minutes on a two-core machine.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")
# The benchmark pins servers to core 0 and load to core 1; with fewer cores it cannot.
PIN = [] if {0, 1} <= os.sched_getaffinity(0) else ["--no-pin"]
PLOTS = importlib.util.find_spec("matplotlib") is not None
BASELINE = ("--servers", "itemrooms,plain")
ITEMROOMS_ONLY = ("--servers", "itemrooms")  # where the smoke asserts nothing of a baseline


def run_quick(module: str, out: Path, *extra: str, timeout: float = 45.0) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", module, "--quick", "--out", str(out), *PIN, *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    output = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, output
    assert out.is_file(), output
    if PLOTS:
        assert out.with_suffix(".png").is_file(), output
    report: dict[str, Any] = json.loads(out.read_text())
    return report


@pytest.mark.timeout(60)
def test_fanout_quick(tmp_path: Path) -> None:
    report = run_quick("bench.fanout", tmp_path / "fanout.json")
    assert set(report["summary"]) == {"itemrooms", "plain", "tutorial"}
    assert set(report["ratio_itemrooms_over_plain"]) == {
        "deliveries_per_s",
        "server_us_per_delivery",
    }


@pytest.mark.timeout(60)
def test_latency_quick(tmp_path: Path) -> None:
    # A fixed rate: the calibration run is the fan-out's, tested above.
    report = run_quick("bench.latency", tmp_path / "latency.json", "--rate", "200", *BASELINE)
    for name in ("itemrooms", "plain"):
        assert report["summary"][name]["p99"] > 0
    assert set(report["ratios_itemrooms_over"]) == {"plain"}


@pytest.mark.timeout(60)
def test_memory_quick(tmp_path: Path) -> None:
    report = run_quick(
        "bench.memory",
        tmp_path / "memory.json",
        *("--connections", "200", "--load-procs", "2", *ITEMROOMS_ONLY),
    )
    assert all(run["open_connections"] == 200 for run in report["runs"])
    assert report["problems"] == []


@pytest.mark.timeout(60)
def test_storm_quick_refuses_every_bad_token(tmp_path: Path) -> None:
    report = run_quick(
        "bench.storm", tmp_path / "storm.json", "--connections", "200", *ITEMROOMS_ONLY
    )
    itemrooms = [run for run in report["runs"] if run["server"] == "itemrooms"]
    assert itemrooms and all(run["bad"] == {"close 1008 invalid_token": 20} for run in itemrooms)
    assert report["problems"] == []


@pytest.mark.timeout(60)
def test_smallrooms_quick(tmp_path: Path) -> None:
    report = run_quick("bench.smallrooms", tmp_path / "smallrooms.json", *BASELINE)
    assert set(report["summary"]) == {"itemrooms", "plain"}
    for summary in report["summary"].values():
        assert summary["dlv/s"] > 0 and summary["p99 ms"] > 0
        assert summary["lost"] == summary["disorder"] == 0
    assert set(report["ratios_itemrooms_over"]) == {"plain"}
    assert all(run["rooms"] == 50 and run["load_cpu_pct"] > 0 for run in report["runs"])
    assert report["problems"] == []


@pytest.mark.timeout(60)
def test_slowconsumer_quick(tmp_path: Path) -> None:
    # One second is enough for the slow member's buffers to fill at the quick rate.
    report = run_quick(
        "bench.slowconsumer",
        tmp_path / "slowconsumer.json",
        *("--seconds", "1", "--idle", "1", *ITEMROOMS_ONLY),
    )
    assert set(report["summary"]) == {
        f"{server}/{variant}" for server in ("itemrooms",) for variant in ("reading", "slow")
    }
    runs = {(run["server"], run["variant"]): run for run in report["runs"]}
    for (_, variant), run in runs.items():
        assert run["rss_kib"] and run["latency_us"]["p99"] > 0
        # What the slow member saw when it read again: frames, and a close or none.
        assert ("outcome" in run["slow"]) == (variant == "slow")
    assert runs[("itemrooms", "slow")]["lost"] == 0
    assert runs[("itemrooms", "reading")]["lost"] == 0
    assert "itemrooms slow/reading" in report["ratios"]
    assert report["problems"] == []


@pytest.mark.timeout(60)
def test_flood_quick_closes_the_flooder_only_with_the_budget(tmp_path: Path) -> None:
    report = run_quick("bench.flood", tmp_path / "flood.json")
    summary = report["summary"]
    assert set(summary) == {"quiet", "budget", "unlimited"}
    assert all(row["samples"] > 0 for row in summary.values())
    assert summary["budget"]["flooder_closed"] >= 1  # 1008 rate_limited, again and again
    assert summary["unlimited"]["flooder_closed"] == 0
    assert summary["quiet"]["flood_frames_per_s"] == 0


@pytest.mark.timeout(60)
def test_shared_room_quick_on_redis_and_postgres(tmp_path: Path) -> None:
    report = run_quick(
        "bench.fanout", tmp_path / "shared.json", "--scenario", "shared", "--no-ceiling"
    )
    shared = ("itemrooms-redis2", "itemrooms-postgres2")
    assert set(report["summary"]) == {*shared, "itemrooms"}
    for name in shared:
        assert report["summary"][name]["lost"] == 0
        # The database's CPU has its own columns (too short a run to count ticks of it).
        assert report["summary"][name]["db"] == name.removeprefix("itemrooms-")[:-1]
        assert report[f"ratio_{name}_over_itemrooms_per_core"]["deliveries_per_cpu_s"] > 0


@pytest.mark.timeout(60)
def test_publishes_quick(tmp_path: Path) -> None:
    report = run_quick(
        "bench.publishes",
        tmp_path / "publishes.json",
        *("--servers", "itemrooms-postgres1", "--rooms", "20", "--duration", "0.5"),
    )
    assert set(report["summary"]) == {"one room", "many rooms"}
    for shape in report["summary"].values():
        assert set(shape) == {"itemrooms-postgres1"}
        assert all(s["publishes/s"] > 0 and s["faults"] == 0 for s in shape.values())
    assert all(run["rooms"] in (1, 20) for run in report["runs"])
    assert report["problems"] == []


@pytest.mark.timeout(90)
def test_bigroom_quick_against_its_baseline(tmp_path: Path) -> None:
    report = run_quick(
        "bench.bigroom",
        tmp_path / "bigroom.json",
        *("--backends", "memory", "--members", "200", "--baseline-members", "200"),
        timeout=80,
    )
    runs = {(r["code"], r["members"]): r for r in report["results"]}
    assert set(runs) == {("baseline", 200), ("today", 200)}
    assert report["problems"] == []
    assert all(r["settled"] and r["samples"][0] > 0 for r in runs.values())
    # The baseline tells every member of every join; above 100 users today counts them.
    assert runs[("today", 200)]["presence_frames"] < runs[("baseline", 200)]["presence_frames"]
