"""One measured run: a fresh server, its members, one publisher, the numbers.

Why the phases are what they are:
- setup (connect, publisher joins last, everybody told about everybody) is
  not measured: it is a different workload (handshakes, JWT checks, presence);
- the CPU counters of the server and the load generators are read just before
  ``go`` and just after the last ``done``, so server CPU per delivery counts the
  fan-out only (the server does nothing else meanwhile);
- the rate uses the generators' own clocks (CLOCK_MONOTONIC, shared by every
  process): first publish to last delivery, with no orchestration latency;
- the server's log is split at the same points, so an error while measuring
  is told apart from noise while connecting or tearing down.
"""

import re
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.children import BenchError, Child, clean_env, free_port
from bench.servers import SPECS, start_server, stop_server, ws_url
from bench.system import core_times

PROBLEM = re.compile(r"ERROR|CRITICAL|WARNING|Traceback|Exception|slow_consumer|closing c_")
SAMPLE_LINES = 5
QUIT_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class Config:
    members: int
    messages: int
    window: int
    data_bytes: int
    load_procs: int
    send_queue: int
    server_cpu: int | None
    load_cpu: int | None
    setup_timeout_s: float
    deadline_s: float


@dataclass(slots=True)
class RunResult:
    server: str
    run: int
    ok: bool = False
    error: str | None = None
    delivered: int = 0
    expected: int = 0
    lost: int = 0
    gaps: int = 0
    disorder: int = 0
    incomplete_members: int = 0
    other_frames: int = 0
    closes: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    deliveries_per_s: float = 0.0
    window_s: float = 0.0  # wall time between the two CPU readings
    server_cpu_s: float = 0.0
    server_setup_cpu_s: float = 0.0  # handshakes, JWT checks, welcomes, presence
    server_cpu_pct: float = 0.0
    server_us_per_delivery: float = 0.0
    load_cpu_pct: float = 0.0
    load_us_per_frame: float = 0.0  # the generator's CPU per frame it received
    other_busy_pct: dict[str, float] = field(default_factory=dict)  # others on our cores
    steal_pct: dict[str, float] = field(default_factory=dict)
    server_exit: int | None = None
    setup_s: float = 0.0  # start server, connect, presence settles
    teardown_s: float = 0.0  # members close, server stops
    log_problems: dict[str, list[str]] = field(default_factory=dict)
    log_problem_counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def loadgen_argv(cfg: Config, url: str, auth: str, presence: bool, part: int) -> list[str]:
    share, extra = divmod(cfg.members, cfg.load_procs)
    first = part * share + min(part, extra)
    count = share + (1 if part < extra else 0)
    argv = [sys.executable, "-m", "bench.loadgen", "--url", url, "--auth", auth]
    argv += ["--first", str(first), "--count", str(count), "--total", str(cfg.members)]
    argv += ["--messages", str(cfg.messages), "--window", str(cfg.window)]
    argv += ["--data-bytes", str(cfg.data_bytes), "--setup-timeout", str(cfg.setup_timeout_s)]
    argv += ["--deadline", str(cfg.deadline_s)]
    if presence:
        argv.append("--presence")
    if part == 0:
        argv.append("--publisher")
    return argv


def scan_log(lines: list[str], marks: dict[str, int], result: RunResult) -> None:
    """Problem lines of the server log, by phase (setup, measure, teardown)."""
    bounds = [("setup", 0, marks.get("go", len(lines)))]
    bounds.append(("measure", marks.get("go", len(lines)), marks.get("done", len(lines))))
    bounds.append(("teardown", marks.get("done", len(lines)), len(lines)))
    for phase, start, end in bounds:
        found = [line.rstrip() for line in lines[start:end] if PROBLEM.search(line)]
        result.log_problem_counts[phase] = len(found)
        if found:
            result.log_problems[phase] = found[:SAMPLE_LINES]


def measure(
    result: RunResult,
    cfg: Config,
    server: Child,
    loads: list[Child],
    marks: dict[str, int],
    started: float,
) -> None:
    setup = cfg.setup_timeout_s + 10
    for load in loads:
        load.expect("connected", setup)
    loads[0].send("publisher")  # joins last: see bench/loadgen.py
    for load in loads:
        load.expect("ready", setup)
    time.sleep(0.5)  # let the last presence writes settle before the clock starts
    cores = tuple(c for c in (cfg.server_cpu, cfg.load_cpu) if c is not None)
    cores_a, server_a = core_times(cores), server.cpu_s()
    loads_a, wall_a = [load.cpu_s() for load in loads], time.monotonic()
    marks["go"] = len(server.lines)
    for load in loads:
        load.send("go")
    t0 = float(loads[0].expect("published", cfg.deadline_s + 30)["t0"])
    done = [load.expect("done", cfg.deadline_s + 30) for load in loads]
    wall_b, server_b = time.monotonic(), server.cpu_s()
    loads_b, cores_b = [load.cpu_s() for load in loads], core_times(cores)
    marks["done"] = len(server.lines)

    window = wall_b - wall_a
    result.window_s = window
    result.setup_s = wall_a - started
    result.delivered = sum(d["delivered"] for d in done)
    result.expected = sum(d["expected"] for d in done)
    result.gaps = sum(d["gaps"] for d in done)
    result.disorder = sum(d["disorder"] for d in done)
    result.lost = result.expected - (result.delivered - result.disorder)
    result.incomplete_members = sum(d["incomplete_members"] for d in done)
    result.other_frames = sum(d["other_frames"] for d in done)
    for d in done:
        for key, n in d["closes"].items():
            result.closes[key] = result.closes.get(key, 0) + n
    last = max(d["last_delivery"] for d in done)
    result.elapsed_s = max(last - t0, 1e-9)
    result.deliveries_per_s = result.delivered / result.elapsed_s
    result.server_cpu_s = server_b - server_a
    result.server_setup_cpu_s = server_a
    result.server_cpu_pct = 100 * result.server_cpu_s / window
    result.server_us_per_delivery = 1e6 * result.server_cpu_s / max(result.delivered, 1)
    load_cpu = sum(b - a for a, b in zip(loads_a, loads_b, strict=True))
    result.load_cpu_pct = 100 * load_cpu / window
    result.load_us_per_frame = 1e6 * load_cpu / max(result.delivered, 1)
    ours = {cfg.server_cpu: result.server_cpu_s, cfg.load_cpu: load_cpu}
    for core in cores:
        total = cores_b[core].total_s - cores_a[core].total_s or 1e-9
        busy = cores_b[core].busy_s - cores_a[core].busy_s
        steal = cores_b[core].steal_s - cores_a[core].steal_s
        result.other_busy_pct[f"cpu{core}"] = round(100 * max(busy - ours[core], 0) / total, 1)
        result.steal_pct[f"cpu{core}"] = round(100 * steal / total, 1)
    result.ok = result.delivered > 0


def run_once(name: str, index: int, cfg: Config, repo: Path, logs: Path | None) -> RunResult:
    """Start ``name`` fresh, measure one fan-out, always stop everything."""
    spec = SPECS[name]
    result = RunResult(server=name, run=index)
    secret = secrets.token_urlsafe(48)  # 64 characters
    port = free_port()
    server: Child | None = None
    loads: list[Child] = []
    marks: dict[str, int] = {}
    started = time.monotonic()
    try:
        server = start_server(
            name, port, secret=secret, send_queue=cfg.send_queue, cpu=cfg.server_cpu, cwd=repo
        )
        env = clean_env({"BENCH_JWT_SECRET": secret})
        for part in range(cfg.load_procs):
            argv = loadgen_argv(cfg, ws_url(port), spec.auth, spec.presence, part)
            loads.append(Child(f"loadgen{part}", argv, cpu=cfg.load_cpu, env=env, cwd=str(repo)))
        measure(result, cfg, server, loads, marks, started)
    except BenchError as exc:
        result.error = str(exc)[:2000]
    finally:
        teardown = time.monotonic()
        for load in loads:
            load.send("quit")
        for load in loads:
            load.close_gently(QUIT_TIMEOUT_S)
        if server is not None:
            result.server_exit = stop_server(server)
            scan_log(server.lines, marks, result)
            result.teardown_s = time.monotonic() - teardown
            if logs is not None:
                logs.mkdir(parents=True, exist_ok=True)
                (logs / f"{name}-run{index}.log").write_text("".join(server.lines))
    return result
