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
  is told apart from noise while connecting or tearing down;
- a room served by several processes (``itemrooms-redis2``, ``-postgres2``):
  "server" is the sum of those processes, each also kept apart in
  ``server_cpu_by_process``; the private database (Redis, or PostgreSQL with all
  its backend processes) is counted separately (``db_*``), never in "server",
  and with the servers as "ours" on the server core.
"""

import re
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.children import BenchError, Child, clean_env, free_port
from bench.samples import load_samples, percentiles
from bench.servers import (
    SPECS,
    Database,
    start_database,
    start_server,
    stop_server,
    ws_url,
)
from bench.system import core_times

PROBLEM = re.compile(r"ERROR|CRITICAL|WARNING|Traceback|Exception|slow_consumer|closing c_")
# Redis warns at start about the host (overcommit, THP), PostgreSQL logs its start and
# checkpoints: only what hurts a run counts.
DB_PROBLEM = re.compile(
    r"output buffer limit|OOM|out of memory|Fatal|Guru Meditation|Connection reset|ERR "
    r"|ERROR:|FATAL:|PANIC:|deadlock"
)
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
    redis_server: str = "redis-server"  # binary for the Redis-backed servers
    rate: float = 0.0  # > 0: the latency scenario (messages/s, open loop; see bench/loadgen.py)
    warmup_s: float = 0.0  # latency: messages sent in the first seconds are not recorded


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
    # Several server processes (the Redis scenario): each one's share, by process label.
    server_cpu_by_process: dict[str, float] = field(default_factory=dict)
    by_server: dict[str, dict[str, Any]] = field(default_factory=dict)  # members, deliveries
    # The private database of a Redis or PostgreSQL run (not included in server_*).
    db_cpu_s: float = 0.0
    db_setup_cpu_s: float = 0.0
    db_cpu_pct: float = 0.0
    db_us_per_delivery: float = 0.0
    db_log_problems: list[str] = field(default_factory=list)
    # The latency scenario: percentiles (µs) of publish-to-delivery over every delivery,
    # and the files with the samples (float64 µs), read again for the plot.
    latency_us: dict[str, float] = field(default_factory=dict)
    latency_files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def loadgen_argv(
    cfg: Config, urls: list[str], auth: str, presence: bool, part: int, latency_out: Path | None
) -> list[str]:
    share, extra = divmod(cfg.members, cfg.load_procs)
    first = part * share + min(part, extra)
    count = share + (1 if part < extra else 0)
    argv = [sys.executable, "-m", "bench.loadgen", "--auth", auth]
    for url in urls:  # member i connects to urls[i % len(urls)]
        argv += ["--url", url]
    argv += ["--first", str(first), "--count", str(count), "--total", str(cfg.members)]
    argv += ["--messages", str(cfg.messages), "--window", str(cfg.window)]
    argv += ["--data-bytes", str(cfg.data_bytes), "--setup-timeout", str(cfg.setup_timeout_s)]
    argv += ["--deadline", str(cfg.deadline_s)]
    if presence:
        argv.append("--presence")
    if cfg.rate > 0 and latency_out is not None:
        argv += ["--rate", str(cfg.rate), "--latency-out", str(latency_out)]
        argv += ["--warmup-s", str(cfg.warmup_s)]
    if part == 0:
        argv.append("--publisher")
    return argv


def scan_log(
    lines: list[str], marks: dict[str, int], result: RunResult, tag: str | None = None
) -> None:
    """Problem lines of a server log, by phase (setup, measure, teardown).

    Several server processes add up; ``tag`` (their label) prefixes the samples."""
    bounds = [("setup", 0, marks.get("go", len(lines)))]
    bounds.append(("measure", marks.get("go", len(lines)), marks.get("done", len(lines))))
    bounds.append(("teardown", marks.get("done", len(lines)), len(lines)))
    for phase, start, end in bounds:
        found = [line.rstrip() for line in lines[start:end] if PROBLEM.search(line)]
        if tag is not None:
            found = [f"[{tag}] {line}" for line in found]
        result.log_problem_counts[phase] = result.log_problem_counts.get(phase, 0) + len(found)
        if found:
            samples = result.log_problems.setdefault(phase, [])
            samples.extend(found[: max(SAMPLE_LINES - len(samples), 0)])


def measure(
    result: RunResult,
    cfg: Config,
    servers: list[Child],
    db: Database | None,
    loads: list[Child],
    marks: dict[str, dict[str, int]],
    started: float,
) -> None:
    setup = cfg.setup_timeout_s + 10
    for load in loads:
        load.expect("connected", setup)
    loads[0].send("publisher")  # joins last: see bench/loadgen.py
    for load in loads:
        load.expect("ready", setup)
    # "ready" means every member has received every presence join: the server has
    # nothing of the setup left to write when the clock starts.
    cores = tuple(c for c in (cfg.server_cpu, cfg.load_cpu) if c is not None)
    cores_a, servers_a = core_times(cores), [server.cpu_s() for server in servers]
    db_a = db.child.tree_cpu_s() if db is not None else 0.0
    loads_a, wall_a = [load.cpu_s() for load in loads], time.monotonic()
    for server in servers:
        marks[server.name]["go"] = len(server.lines)
    for load in loads:
        load.send("go")
    t0 = float(loads[0].expect("published", cfg.deadline_s + 30)["t0"])
    done = [load.expect("done", cfg.deadline_s + 30) for load in loads]
    wall_b, servers_b = time.monotonic(), [server.cpu_s() for server in servers]
    db_b = db.child.tree_cpu_s() if db is not None else 0.0
    loads_b, cores_b = [load.cpu_s() for load in loads], core_times(cores)
    for server in servers:
        marks[server.name]["done"] = len(server.lines)

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
    result.server_cpu_s = sum(b - a for a, b in zip(servers_a, servers_b, strict=True))
    result.server_setup_cpu_s = sum(servers_a)
    result.server_cpu_pct = 100 * result.server_cpu_s / window
    result.server_us_per_delivery = 1e6 * result.server_cpu_s / max(result.delivered, 1)
    if len(servers) > 1:
        for server, a, b in zip(servers, servers_a, servers_b, strict=True):
            result.server_cpu_by_process[server.name] = round(b - a, 3)
        by_url = [d.get("by_url", []) for d in done]
        for i, server in enumerate(servers):
            parts = [b[i] for b in by_url if i < len(b)]
            last = max((p["last_delivery"] for p in parts), default=0.0)
            result.by_server[server.name] = {
                "members": sum(p["members"] for p in parts),
                "delivered": sum(p["delivered"] for p in parts),
                "incomplete_members": sum(p["incomplete_members"] for p in parts),
                "last_delivery_after_first_publish_s": round(max(last - t0, 0.0), 3),
            }
    if db is not None:
        result.db_cpu_s = db_b - db_a
        result.db_setup_cpu_s = db_a
        result.db_cpu_pct = 100 * result.db_cpu_s / window
        result.db_us_per_delivery = 1e6 * result.db_cpu_s / max(result.delivered, 1)
    load_cpu = sum(b - a for a, b in zip(loads_a, loads_b, strict=True))
    result.load_cpu_pct = 100 * load_cpu / window
    result.load_us_per_frame = 1e6 * load_cpu / max(result.delivered, 1)
    # Ours on the server core: the servers and the private database (pinned with them).
    ours = {cfg.server_cpu: result.server_cpu_s + result.db_cpu_s, cfg.load_cpu: load_cpu}
    for core in cores:
        total = cores_b[core].total_s - cores_a[core].total_s or 1e-9
        busy = cores_b[core].busy_s - cores_a[core].busy_s
        steal = cores_b[core].steal_s - cores_a[core].steal_s
        result.other_busy_pct[f"cpu{core}"] = round(100 * max(busy - ours[core], 0) / total, 1)
        result.steal_pct[f"cpu{core}"] = round(100 * steal / total, 1)
    result.ok = result.delivered > 0
    if cfg.rate > 0:
        result.latency_us = percentiles(load_samples(result.latency_files))


def run_once(name: str, index: int, cfg: Config, repo: Path, logs: Path | None) -> RunResult:
    """Start ``name`` fresh (its processes, its database), measure one fan-out, stop all."""
    spec = SPECS[name]
    result = RunResult(server=name, run=index)
    secret = secrets.token_urlsafe(48)  # 64 characters
    servers: list[Child] = []
    db: Database | None = None
    loads: list[Child] = []
    marks: dict[str, dict[str, int]] = {}
    started = time.monotonic()
    try:
        if spec.db is not None:
            db = start_database(
                spec.db, cpu=cfg.server_cpu, cwd=repo, redis_server=cfg.redis_server
            )
        ports = []
        for process in range(spec.processes):
            label = name if spec.processes == 1 else f"{name}-{chr(ord('a') + process)}"
            ports.append(free_port())
            servers.append(
                start_server(
                    name,
                    ports[-1],
                    secret=secret,
                    send_queue=cfg.send_queue,
                    cpu=cfg.server_cpu,
                    cwd=repo,
                    backend=db.settings if db is not None else None,
                    label=label,
                )
            )
            marks[label] = {}
        env = clean_env({"BENCH_JWT_SECRET": secret})
        urls = [ws_url(port) for port in ports]
        for part in range(cfg.load_procs):
            latency_out = None
            if cfg.rate > 0 and logs is not None:
                logs.mkdir(parents=True, exist_ok=True)
                latency_out = logs / f"latency-{name}-run{index}-part{part}.f64"
                result.latency_files.append(str(latency_out))
            argv = loadgen_argv(cfg, urls, spec.auth, spec.presence, part, latency_out)
            loads.append(Child(f"loadgen{part}", argv, cpu=cfg.load_cpu, env=env, cwd=str(repo)))
        measure(result, cfg, servers, db, loads, marks, started)
    except BenchError as exc:
        result.error = str(exc)[:2000]
    finally:
        teardown = time.monotonic()
        for load in loads:
            load.send("quit")
        for load in loads:
            load.close_gently(QUIT_TIMEOUT_S)
        exits = [stop_server(server) for server in servers]
        if servers:
            result.server_exit = next((code for code in exits if code), exits[0])
        if db is not None:
            db.stop()
            result.db_log_problems = [
                line.rstrip() for line in db.child.lines if DB_PROBLEM.search(line)
            ][:SAMPLE_LINES]
        for server in servers:
            tag = server.name if len(servers) > 1 else None
            scan_log(server.lines, marks[server.name], result, tag)
        if servers:
            result.teardown_s = time.monotonic() - teardown
        if logs is not None and servers:
            logs.mkdir(parents=True, exist_ok=True)
            for server in servers:
                (logs / f"{server.name}-run{index}.log").write_text("".join(server.lines))
            if db is not None:
                (logs / f"{name}-run{index}-{db.kind}.log").write_text("".join(db.child.lines))
    return result
