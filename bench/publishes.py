"""Publish throughput per backend: how many publishes a second one itemrooms process
gets stored, sequenced and answered, into one room and into 500 rooms.

    python -m bench.publishes            # both shapes, 4 servers, 3 interleaved runs each
    python -m bench.publishes --quick    # smoke run: small shapes, 1 s

The servers, each fresh per run with the server (and its database, with every
process of it) pinned to the server core and bench/pubgen.py to the load core:

- ``itemrooms``: one process, memory backend (no database: the reference);
- ``itemrooms-redis1``: one process on a private redis-server;
- ``itemrooms-postgres1``: one process on a private PostgreSQL cluster (fsync and
  synchronous commit on: every answered publish is on disk);
- ``plain``: the ``websockets`` library's own server with a counter per room and no
  storage at all, run to show the load generator's own ceiling for each shape.

The shapes: **one room**, ``--one-room-publishers`` connections (4) each keeping
``--one-room-window`` (64) publishes in flight, so every seq is taken on one room's
counter (a Lua script, a row lock); **many rooms**, ``--rooms`` (500) rooms of one
publisher keeping ``--rooms-window`` (4) in flight. Each publisher waits for an
answer (its own copy, or an error frame) before sending the next beyond its window:
the rate is what the server and its backend sustain.

Reported, medians of the interleaved runs: publishes answered per second in the
measured window, p50/p99 from publish to its own copy, the server's and the
database's CPU per publish (and both: the whole core's cost), the generator's CPU
(if its core was full, the rate is its ceiling, not the server's), and what must be
zero: errors, members left behind their room's last seq, seq gaps or repeats.
"""

import argparse
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.children import BenchError, Child, clean_env, free_port
from bench.plot import bar_panel
from bench.roomsbench import (
    QUIT_TIMEOUT_S,
    add_common_args,
    begin,
    finish,
    log_problems,
    med,
    others_busy,
    ratio,
)
from bench.servers import (
    ITEMROOMS,
    ITEMROOMS_POSTGRES1,
    ITEMROOMS_REDIS1,
    PLAIN,
    SPECS,
    Database,
    start_database,
    start_server,
    stop_server,
)
from bench.system import REPO, core_times, pin_self, raise_nofile_limit

SERVERS = (ITEMROOMS, ITEMROOMS_REDIS1, ITEMROOMS_POSTGRES1, PLAIN)
SHAPES = ("one room", "many rooms")
FULL_PCT = 85.0  # a core this busy is the bottleneck


@dataclass(frozen=True, slots=True)
class Shape:
    name: str
    rooms: int
    per_room: int
    window: int


@dataclass(frozen=True, slots=True)
class Config:
    shapes: tuple[Shape, ...]
    duration_s: float
    warmup_s: float
    data_bytes: int
    server_cpu: int | None
    load_cpu: int | None
    redis_server: str = "redis-server"
    setup_timeout_s: float = 120.0
    deadline_s: float = 30.0


@dataclass(slots=True)
class Result:
    server: str
    shape: str
    run: int
    ok: bool = False
    error: str | None = None
    publishers: int = 0
    rooms: int = 0
    sent: int = 0
    acked: int = 0
    in_window: int = 0
    publishes_per_s: float = 0.0
    unanswered: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    closes: dict[str, int] = field(default_factory=dict)
    gaps: int = 0
    disorder: int = 0
    behind: int = 0  # seqs members had not reached when the run ended
    latency_us: dict[str, float] = field(default_factory=dict)
    window_s: float = 0.0
    server_us_per_publish: float = 0.0
    server_cpu_pct: float = 0.0
    db_us_per_publish: float = 0.0
    db_cpu_pct: float = 0.0
    load_cpu_pct: float = 0.0
    other_busy_pct: dict[str, float] = field(default_factory=dict)
    setup_s: float = 0.0
    log_problem_count: int = 0
    log_problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def faults(self) -> int:
        """What must be zero: errors, lost or repeated seqs, members left behind."""
        return (
            sum(self.errors.values())
            + sum(self.closes.values())
            + self.gaps
            + self.disorder
            + self.behind
            + self.unanswered
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    about = __doc__.splitlines()[0]
    p = argparse.ArgumentParser(prog="python -m bench.publishes", description=about)
    p.add_argument("--quick", action="store_true", help="smoke run: 50 rooms, 1 s")
    p.add_argument("--runs", type=int, default=None, help="runs per server and shape (3; quick 1)")
    p.add_argument("--servers", default=",".join(SERVERS), help="comma list, in run order")
    p.add_argument("--duration", type=float, default=None, help="measured seconds (5; quick 1)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    p.add_argument("--data-bytes", type=int, default=64)
    p.add_argument("--one-room-publishers", type=int, default=4)
    p.add_argument("--one-room-window", type=int, default=64)
    p.add_argument("--rooms", type=int, default=None, help="rooms of the many-rooms shape (500)")
    p.add_argument("--rooms-window", type=int, default=4)
    p.add_argument("--redis-server", default="redis-server", help="redis-server binary")
    add_common_args(p)
    args = p.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    args.duration = args.duration or (1.0 if args.quick else 5.0)
    args.rooms = args.rooms or (50 if args.quick else 500)
    if args.quick:
        args.warmup = min(args.warmup, 0.5)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in args.servers if s not in SERVERS]
    if unknown or not args.servers:
        p.error(f"--servers: choose from {', '.join(SERVERS)}")
    return args


def run_once(name: str, shape: Shape, index: int, cfg: Config, logs: Path) -> Result:
    """A fresh ``name`` (and its database), its publishers, one measured run, all stopped."""
    result = Result(server=name, shape=shape.name, run=index)
    secret = secrets.token_urlsafe(48)
    db: Database | None = None
    server: Child | None = None
    load: Child | None = None
    started = time.monotonic()
    mark = 0
    try:
        if SPECS[name].db is not None:
            db = start_database(
                SPECS[name].db or "", cpu=cfg.server_cpu, cwd=REPO, redis_server=cfg.redis_server
            )
        port = free_port()
        server = start_server(
            name,
            port,
            secret=secret,
            send_queue=4096,
            cpu=cfg.server_cpu,
            cwd=REPO,
            backend=db.settings if db is not None else None,
        )
        template = f"ws://127.0.0.1:{port}/items/{{room}}/ws"
        argv = [sys.executable, "-m", "bench.pubgen", "--url-template", template]
        argv += ["--rooms", str(shape.rooms), "--per-room", str(shape.per_room)]
        argv += ["--window", str(shape.window), "--duration-s", str(cfg.duration_s)]
        argv += ["--warmup-s", str(cfg.warmup_s), "--data-bytes", str(cfg.data_bytes)]
        argv += ["--setup-timeout", str(cfg.setup_timeout_s), "--deadline", str(cfg.deadline_s)]
        env = clean_env({"BENCH_JWT_SECRET": secret})
        load = Child("pubgen", argv, cpu=cfg.load_cpu, env=env, cwd=str(REPO))
        mark = measure(result, cfg, server, db, load, started)
    except BenchError as exc:
        result.error = str(exc)[:2000]
    finally:
        if load is not None:
            load.close_gently(QUIT_TIMEOUT_S)
        if server is not None:
            stop_server(server)
            count, samples = log_problems(server.lines, mark, len(server.lines))
            result.log_problem_count, result.log_problems = count, samples
            logs.mkdir(parents=True, exist_ok=True)
            tag = shape.name.replace(" ", "-")
            (logs / f"{name}-{tag}-run{index}.log").write_text("".join(server.lines))
        if db is not None:
            db.stop()
    return result


def measure(
    result: Result, cfg: Config, server: Child, db: Database | None, load: Child, started: float
) -> int:
    """connected -> go -> CPU at the measured window's edges -> done; the log mark at go."""
    load.expect("connected", cfg.setup_timeout_s + 10)
    result.setup_s = time.monotonic() - started
    mark = len(server.lines)
    load.send("go")
    window_a = time.monotonic() + cfg.warmup_s
    sleep_until(window_a)
    cores = tuple(c for c in (cfg.server_cpu, cfg.load_cpu) if c is not None)
    cores_a, server_a, load_a = core_times(cores), server.cpu_s(), load.cpu_s()
    db_a = db.child.tree_cpu_s() if db is not None else 0.0
    wall_a = time.monotonic()
    sleep_until(window_a + cfg.duration_s)
    cores_b, server_b, load_b = core_times(cores), server.cpu_s(), load.cpu_s()
    db_b = db.child.tree_cpu_s() if db is not None else 0.0
    wall_b = time.monotonic()
    load.expect("published", cfg.duration_s + cfg.warmup_s + 30)
    done = load.expect("done", cfg.deadline_s + 30)
    for key in ("publishers", "rooms", "sent", "acked", "in_window", "unanswered"):
        setattr(result, key, done[key])
    for key in ("errors", "closes", "gaps", "disorder", "behind", "latency_us"):
        setattr(result, key, done[key])
    window = max(wall_b - wall_a, 1e-9)
    result.window_s = window
    result.publishes_per_s = result.in_window / cfg.duration_s
    per = max(result.in_window, 1)
    result.server_us_per_publish = 1e6 * (server_b - server_a) / per
    result.server_cpu_pct = 100 * (server_b - server_a) / window
    result.db_us_per_publish = 1e6 * (db_b - db_a) / per
    result.db_cpu_pct = 100 * (db_b - db_a) / window
    result.load_cpu_pct = 100 * (load_b - load_a) / window
    ours: dict[int, float] = {}
    if cfg.server_cpu is not None:
        ours[cfg.server_cpu] = server_b - server_a + db_b - db_a
    if cfg.load_cpu is not None:
        ours[cfg.load_cpu] = ours.get(cfg.load_cpu, 0.0) + load_b - load_a
    result.other_busy_pct = others_busy(cores_a, cores_b, ours)
    result.ok = result.in_window > 0
    return mark


def sleep_until(when: float) -> None:
    """Wait for a point of the measurement window (timing, not synchronisation)."""
    delay = when - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def run_line(r: Result) -> str:
    if not r.ok:
        return f"  {r.server:<19} {r.shape:<10} run {r.run}: FAILED: {(r.error or '')[:160]}"
    lat = r.latency_us
    return (
        f"  {r.server:<19} {r.shape:<10} run {r.run}: {r.publishes_per_s:8,.0f} publishes/s | "
        f"p50 {lat.get('p50', 0) / 1e3:6.2f} ms p99 {lat.get('p99', 0) / 1e3:7.2f} ms | "
        f"srv {r.server_us_per_publish:5.1f} µs {r.server_cpu_pct:3.0f}% | db "
        f"{r.db_us_per_publish:5.1f} µs {r.db_cpu_pct:3.0f}% | load {r.load_cpu_pct:3.0f}% | "
        f"errors {r.errors or '-'} gaps {r.gaps} disorder {r.disorder} behind {r.behind} | "
        f"others {r.other_busy_pct} | setup {r.setup_s:.0f}s"
    )


def summarize(runs: Sequence[Result]) -> dict[str, float]:
    ok = [r for r in runs if r.ok]
    return {
        "publishes/s": med([r.publishes_per_s for r in ok]),
        "p50 ms": med([r.latency_us.get("p50", 0.0) / 1e3 for r in ok]),
        "p99 ms": med([r.latency_us.get("p99", 0.0) / 1e3 for r in ok]),
        "srv µs/pub": med([r.server_us_per_publish for r in ok]),
        "db µs/pub": med([r.db_us_per_publish for r in ok]),
        "total µs/pub": med([r.server_us_per_publish + r.db_us_per_publish for r in ok]),
        "srv+db CPU%": med([r.server_cpu_pct + r.db_cpu_pct for r in ok]),
        "load CPU%": med([r.load_cpu_pct for r in ok]),
        "faults": float(sum(r.faults for r in runs)),
        "failed runs": float(sum(1 for r in runs if not r.ok)),
    }


def table(summary: dict[str, dict[str, dict[str, float]]], title: str) -> list[str]:
    keys = ["publishes/s", "p50 ms", "p99 ms", "srv µs/pub", "db µs/pub", "total µs/pub"]
    keys += ["srv+db CPU%", "load CPU%", "faults"]
    head = f"{'shape':<11} {'server':<20} " + " ".join(f"{k:>12}" for k in keys)
    lines = [title, head, "-" * len(head)]
    for shape, by_server in summary.items():
        for name, s in by_server.items():
            cells = " ".join(
                f"{s[k]:>12,.0f}" if k in ("publishes/s", "faults") else f"{s[k]:>12.2f}"
                for k in keys
            )
            lines.append(f"{shape:<11} {name:<20} {cells}")
    return lines


def verdicts(summary: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Who was the limit, per shape and server (the generator's core, or the server's)."""
    lines = []
    for shape, by_server in summary.items():
        for name, s in by_server.items():
            if s["load CPU%"] >= FULL_PCT:
                who = "LOAD GENERATOR BOUND: the rate is the generator's ceiling"
            elif s["srv+db CPU%"] >= FULL_PCT:
                who = "server bound (its core, server and database, was full)"
            else:
                who = "neither core full: latency bound (the database's commits, a lock)"
            lines.append(f"{shape}, {name}: {who}")
    return lines


def ratio_lines(summary: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Each database-backed server against the memory backend, per shape."""
    lines = []
    for shape, by_server in summary.items():
        base = by_server.get(ITEMROOMS)
        if base is None:
            continue
        for name in (ITEMROOMS_REDIS1, ITEMROOMS_POSTGRES1):
            if name in by_server:
                mine = by_server[name]
                lines.append(
                    f"{shape}: {name}/{ITEMROOMS} publishes/s "
                    f"x{ratio(mine['publishes/s'], base['publishes/s']):.2f}, core CPU per "
                    f"publish x{ratio(mine['total µs/pub'], base['total µs/pub']):.2f}, "
                    f"p99 x{ratio(mine['p99 ms'], base['p99 ms']):.2f}"
                )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pin_self(args, "publishes")
    raise_nofile_limit()
    shapes = (
        Shape(SHAPES[0], 1, args.one_room_publishers, args.one_room_window),
        Shape(SHAPES[1], args.rooms, 1, args.rooms_window),
    )
    cfg = Config(
        shapes=shapes,
        duration_s=args.duration,
        warmup_s=args.warmup,
        data_bytes=args.data_bytes,
        server_cpu=None if args.no_pin else args.server_cpu,
        load_cpu=None if args.no_pin else args.load_cpu,
        redis_server=args.redis_server,
    )
    title = (
        f"publishes: one room ({args.one_room_publishers} publishers x {args.one_room_window} "
        f"in flight) and {args.rooms} rooms (1 publisher x {args.rooms_window} in flight each), "
        f"{args.data_bytes} B data, {args.duration:g} s measured after {args.warmup:g} s, "
        f"{args.runs} interleaved run(s); medians"
    )
    run = begin(args, "publishes", title)
    results: dict[str, list[Result]] = {f"{s.name}/{n}": [] for s in shapes for n in args.servers}
    for shape in shapes:
        for index in range(args.runs):
            for name in args.servers:
                result = run_once(name, shape, index, cfg, run.logs)
                results[f"{shape.name}/{name}"].append(result)
                print(run_line(result), flush=True)
    summary = {
        shape.name: {name: summarize(results[f"{shape.name}/{name}"]) for name in args.servers}
        for shape in shapes
    }
    found = [
        f"{r.server} {r.shape} run {r.run}: "
        + (
            r.error
            or f"errors {r.errors}, closes {r.closes}, gaps {r.gaps}, "
            f"disorder {r.disorder}, behind {r.behind}, unanswered {r.unanswered}"
        )
        for runs in results.values()
        for r in runs
        if not r.ok or r.faults
    ]

    def draw(axes: Sequence[Any]) -> None:
        for ax, shape in zip(axes[:2], shapes, strict=True):
            values = {
                n: [r.publishes_per_s for r in results[f"{shape.name}/{n}"] if r.ok]
                for n in args.servers
            }
            bar_panel(ax, f"publishes/s, {shape.name}", values)
        for ax, shape in zip(axes[2:], shapes, strict=True):
            values = {
                n: [
                    r.server_us_per_publish + r.db_us_per_publish
                    for r in results[f"{shape.name}/{n}"]
                    if r.ok
                ]
                for n in args.servers
            }
            bar_panel(ax, f"server + db CPU µs per publish, {shape.name}", values)

    return finish(
        run,
        args,
        cfg,
        results,
        summary,
        [table(summary, title), verdicts(summary), ratio_lines(summary)],
        {},
        found,
        draw,
    )


if __name__ == "__main__":
    sys.exit(main())
