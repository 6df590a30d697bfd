"""One run of a connection scenario (idle memory, storm): a fresh server, conngen processes.

Why the phases: the server's RSS and CPU are read after the warm-up
connections (opened and closed: lazy imports, first allocations) and once all
the scenario's connections are open and a settle time has passed; the
difference is what the connections cost. ``conngen`` processes split the
connections, all pinned to the load core.
"""

import secrets
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.children import BenchError, Child, clean_env, free_port
from bench.run import RunResult as _FanoutResult
from bench.run import scan_log
from bench.servers import ITEMROOMS, SPECS, start_server, stop_server
from bench.system import process_rss_kib

SETTLE_S = 2.0
QUIT_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class ConnConfig:
    mode: str  # "idle" or "storm"
    connections: int
    load_procs: int
    room_size: int
    concurrency: int
    bad_every: int  # storm: every k-th token is bad (10 = 10%)
    server_cpu: int | None
    load_cpu: int | None
    timeout_s: float = 300.0


@dataclass(slots=True)
class ConnResult:
    server: str
    run: int
    ok: bool = False
    error: str | None = None
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    kib_per_connection: float = 0.0
    open_connections: int = 0
    elapsed_s: float = 0.0
    handshakes_per_s: float = 0.0
    server_cpu_s: float = 0.0
    server_us_per_handshake: float = 0.0
    server_cpu_pct: float = 0.0
    load_cpu_pct: float = 0.0
    good: dict[str, int] = field(default_factory=dict)  # outcome -> count, valid tokens
    bad: dict[str, int] = field(default_factory=dict)  # outcome -> count, bad tokens
    log_problem_counts: dict[str, int] = field(default_factory=dict)
    log_problems: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def conngen_argv(cfg: ConnConfig, template: str, auth: str, part: int) -> list[str]:
    share, extra = divmod(cfg.connections, cfg.load_procs)
    first = part * share + min(part, extra)
    count = share + (1 if part < extra else 0)
    argv = ["-m", "bench.conngen", "--mode", cfg.mode, "--url-template", template]
    argv += ["--auth", auth, "--first", str(first), "--count", str(count)]
    argv += ["--room-size", str(cfg.room_size), "--concurrency", str(cfg.concurrency)]
    argv += ["--bad-every", str(cfg.bad_every), "--room-prefix", cfg.mode]
    if part == 0:
        argv += ["--warmup", "20"]
    return argv


def add(into: dict[str, int], counts: dict[str, int]) -> None:
    for key, n in counts.items():
        into[key] = into.get(key, 0) + n


def measure(result: ConnResult, cfg: ConnConfig, server: Child, loads: list[Child]) -> None:
    loads[0].expect("warm", cfg.timeout_s)
    for load in loads:
        load.expect("ready", cfg.timeout_s)
    time.sleep(0.5)
    rss_a, cpu_a = process_rss_kib(server.pid) or 0, server.cpu_s()
    loads_a, wall_a = [load.cpu_s() for load in loads], time.monotonic()
    for load in loads:
        load.send("go")
    done = [load.expect("done", cfg.timeout_s) for load in loads]
    wall_b, cpu_b = time.monotonic(), server.cpu_s()
    loads_b = [load.cpu_s() for load in loads]
    time.sleep(SETTLE_S)  # queued presence and welcome writes drain; the heap settles
    rss_b = process_rss_kib(server.pid) or 0
    for d in done:
        add(result.good, d["good"])
        add(result.bad, d["bad"])
    result.open_connections = sum(d["open"] for d in done)
    result.elapsed_s = max(d["t1"] for d in done) - min(d["t0"] for d in done)
    attempts = sum(result.good.values()) + sum(result.bad.values())
    result.handshakes_per_s = attempts / max(result.elapsed_s, 1e-9)
    result.server_cpu_s = cpu_b - cpu_a
    result.server_us_per_handshake = 1e6 * result.server_cpu_s / max(attempts, 1)
    window = max(wall_b - wall_a, 1e-9)
    result.server_cpu_pct = 100 * result.server_cpu_s / window
    load_cpu = sum(b - a for a, b in zip(loads_a, loads_b, strict=True))
    result.load_cpu_pct = 100 * load_cpu / window
    result.rss_before_kib, result.rss_after_kib = rss_a, rss_b
    result.kib_per_connection = (rss_b - rss_a) / max(result.open_connections, 1)
    result.ok = result.open_connections > 0


def run_conns(name: str, index: int, cfg: ConnConfig, repo: Path, logs: Path) -> ConnResult:
    """Start ``name`` fresh, open the scenario's connections, read RSS and CPU, stop all."""
    spec = SPECS[name]
    result = ConnResult(server=name, run=index)
    secret = secrets.token_urlsafe(48)
    server: Child | None = None
    loads: list[Child] = []
    marks: dict[str, int] = {}
    try:
        port = free_port()
        # Above the scenario's connections: the cap (10,000 by default) is not measured here.
        extra = {"ITEMROOMS_MAX_CONNECTIONS": str(cfg.connections + 1000)}
        server = start_server(
            name,
            port,
            secret=secret,
            send_queue=1024,
            cpu=cfg.server_cpu,
            cwd=repo,
            extra_env=extra if name == ITEMROOMS else None,
        )
        template = f"ws://127.0.0.1:{port}/items/{{room}}/ws"
        env = clean_env({"BENCH_JWT_SECRET": secret})
        for part in range(cfg.load_procs):
            argv = [sys.executable, *conngen_argv(cfg, template, spec.auth, part)]
            loads.append(Child(f"conngen{part}", argv, cpu=cfg.load_cpu, env=env, cwd=str(repo)))
        marks["go"] = len(server.lines)
        measure(result, cfg, server, loads)
        marks["done"] = len(server.lines)
    except BenchError as exc:
        result.error = str(exc)[:2000]
    finally:
        for load in loads:
            load.close_gently(QUIT_TIMEOUT_S)
        if server is not None:
            stop_server(server)
            scratch = _FanoutResult(server=name, run=index)
            scan_log(server.lines, marks, scratch)
            result.log_problem_counts = scratch.log_problem_counts
            result.log_problems = scratch.log_problems
            logs.mkdir(parents=True, exist_ok=True)
            (logs / f"{name}-run{index}.log").write_text("".join(server.lines))
    return result
