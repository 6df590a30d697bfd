"""Many small rooms: 500 rooms x 4 members, each member publishing once a second.

    python -m bench.smallrooms            # 500 rooms, 20 s after 2 s warm-up, 3 runs each
    python -m bench.smallrooms --quick    # smoke run: 50 rooms, 2 s

Each run starts a fresh server (itemrooms, plain, tutorial, interleaved) on
the server core and one bench/roomsgen.py process per ``--load-procs`` on the
load core. Every member joins its room ``small-<r>`` and, on ``go``, publishes
``--rate`` times a second on its own fixed schedule (open loop, phases spread
over the second), with its ``CLOCK_MONOTONIC`` send time in the data; every
member receives its room's messages (its own copy too) and checks their
``seq``. Reported per server, medians of its runs:

- deliveries/s received in the measured window, against the expected
  members x rate x room size;
- publish-to-delivery latency p50/p99 over every delivery of every member
  (warm-up not recorded);
- server CPU per delivery (its CPU time over the measured window / deliveries
  received in it; the publishes it parsed are part of that cost);
- lost and reordered messages, and rooms that lost any: after publishing
  stops, every member must have every message of its room;
- the generator's CPU% and how late its schedule ran (it must not be the limit).

Ratios are itemrooms / baseline of the medians. The exit status is non-zero
when a run failed, or a member of any server missed a message, saw one out
of order or was closed. See bench/README.md.
"""

import argparse
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.children import BenchError, Child, clean_env, free_port
from bench.plot import bar_panel, ccdf_panel
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
from bench.samples import load_samples
from bench.servers import ITEMROOMS, PLAIN, SPECS, TUTORIAL, start_server, stop_server
from bench.system import REPO, core_times, pin_self, process_rss_kib, raise_nofile_limit

SERVERS = (ITEMROOMS, PLAIN, TUTORIAL)
BASELINES = (PLAIN, TUTORIAL)
ROOM_PREFIX = "small"


@dataclass(frozen=True, slots=True)
class Config:
    rooms: int
    room_size: int
    rate: float  # publishes per second per member
    duration_s: float
    warmup_s: float
    data_bytes: int
    load_procs: int
    server_cpu: int | None
    load_cpu: int | None
    setup_timeout_s: float = 180.0
    idle_s: float = 5.0
    deadline_s: float = 60.0

    @property
    def members(self) -> int:
        return self.rooms * self.room_size

    @property
    def expected_per_s(self) -> float:
        return self.members * self.rate * self.room_size


@dataclass(slots=True)
class Result:
    server: str
    run: int
    ok: bool = False
    error: str | None = None
    members: int = 0
    rooms: int = 0
    sent: int = 0
    expected: int = 0  # deliveries: each publish x its room's members
    delivered: int = 0
    in_window: int = 0
    deliveries_per_s: float = 0.0
    expected_per_s: float = 0.0
    lost: int = 0
    gaps: int = 0
    disorder: int = 0
    rooms_with_loss: int = 0
    rooms_with_disorder: int = 0
    worst_room: dict[str, Any] = field(default_factory=dict)
    closes: dict[str, int] = field(default_factory=dict)
    other_frames: int = 0
    wait: str = ""  # how waiting for the last deliveries ended: complete, idle, deadline
    latency_us: dict[str, float] = field(default_factory=dict)
    schedule_lag_us: dict[str, float] = field(default_factory=dict)  # worst load process
    window_s: float = 0.0
    server_cpu_s: float = 0.0
    server_cpu_pct: float = 0.0
    server_us_per_delivery: float = 0.0
    load_cpu_pct: float = 0.0
    load_us_per_frame: float = 0.0  # generator CPU per frame received or sent
    other_busy_pct: dict[str, float] = field(default_factory=dict)
    setup_s: float = 0.0
    setup_server_cpu_s: float = 0.0
    rss_start_kib: int = 0  # the server's RSS at go
    rss_end_kib: int = 0  # and once every message was delivered
    log_problem_count: int = 0
    log_problems: list[str] = field(default_factory=list)
    latency_files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def roomsgen_argv(cfg: Config, template: str, auth: str, presence: bool, part: int) -> list[str]:
    share, extra = divmod(cfg.rooms, cfg.load_procs)
    first = part * share + min(part, extra)
    count = share + (1 if part < extra else 0)
    argv = [sys.executable, "-m", "bench.roomsgen", "--mode", "smallrooms", "--auth", auth]
    argv += ["--url-template", template, "--room-prefix", ROOM_PREFIX]
    argv += ["--first-room", str(first), "--room-count", str(count)]
    argv += ["--room-size", str(cfg.room_size), "--rate", str(cfg.rate)]
    argv += ["--duration-s", str(cfg.duration_s), "--warmup-s", str(cfg.warmup_s)]
    argv += ["--data-bytes", str(cfg.data_bytes), "--idle-s", str(cfg.idle_s)]
    argv += ["--deadline", str(cfg.deadline_s), "--setup-timeout", str(cfg.setup_timeout_s)]
    if presence:
        argv.append("--presence")
    return argv


def sleep_until(when: float) -> None:
    """Wait for a point of the measurement window (timing, not synchronisation)."""
    delay = when - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def measure(result: Result, cfg: Config, server: Child, loads: list[Child], started: float) -> int:
    """connected -> ready -> go -> CPU at the window's edges -> done; the log mark at go."""
    setup = cfg.setup_timeout_s + 10
    for load in loads:
        load.expect("connected", setup)
    for load in loads:
        load.expect("ready", setup)
    time.sleep(0.5)  # the last presence and welcome writes settle
    result.setup_s = time.monotonic() - started
    result.setup_server_cpu_s = server.cpu_s()
    result.rss_start_kib = process_rss_kib(server.pid) or 0
    mark = len(server.lines)
    for load in loads:
        load.send("go")
    go = time.monotonic()
    # The generators start publishing 50 ms after go; the window opens after the warm-up.
    window_a = go + 0.05 + cfg.warmup_s
    sleep_until(window_a)
    cores = tuple(c for c in (cfg.server_cpu, cfg.load_cpu) if c is not None)
    cores_a, server_a = core_times(cores), server.cpu_s()
    loads_a, wall_a = [load.cpu_s() for load in loads], time.monotonic()
    sleep_until(window_a + cfg.duration_s)
    cores_b, server_b = core_times(cores), server.cpu_s()
    loads_b, wall_b = [load.cpu_s() for load in loads], time.monotonic()
    wait = cfg.duration_s + cfg.deadline_s + 30
    for load in loads:
        load.expect("published", wait)
    done = [load.expect("done", wait) for load in loads]
    result.rss_end_kib = process_rss_kib(server.pid) or 0

    window = max(wall_b - wall_a, 1e-9)
    result.window_s = window
    for key in ("members", "rooms", "sent", "expected", "delivered", "in_window", "lost"):
        setattr(result, key, sum(d[key] for d in done))
    for key in ("gaps", "disorder", "rooms_with_loss", "rooms_with_disorder", "other_frames"):
        setattr(result, key, sum(d[key] for d in done))
    for d in done:
        for close, n in d["closes"].items():
            result.closes[close] = result.closes.get(close, 0) + n
        if d["worst_room"].get("lost", 0) > result.worst_room.get("lost", 0):
            result.worst_room = d["worst_room"]
    outcomes = {d["wait"] for d in done}
    result.wait = "complete" if outcomes == {"complete"} else ",".join(sorted(outcomes))
    lags = [d["schedule_lag_us"] for d in done if d["schedule_lag_us"]]
    result.schedule_lag_us = max(lags, key=lambda lag: lag.get("p99", 0.0), default={})
    result.deliveries_per_s = result.in_window / cfg.duration_s
    result.expected_per_s = cfg.expected_per_s
    result.server_cpu_s = server_b - server_a
    result.server_cpu_pct = 100 * result.server_cpu_s / window
    result.server_us_per_delivery = 1e6 * result.server_cpu_s / max(result.in_window, 1)
    load_cpu = sum(b - a for a, b in zip(loads_a, loads_b, strict=True))
    result.load_cpu_pct = 100 * load_cpu / window
    frames = result.in_window + result.sent * cfg.duration_s / (cfg.duration_s + cfg.warmup_s)
    result.load_us_per_frame = 1e6 * load_cpu / max(frames, 1)
    ours = {}
    if cfg.server_cpu is not None:
        ours[cfg.server_cpu] = result.server_cpu_s
    if cfg.load_cpu is not None:
        ours[cfg.load_cpu] = ours.get(cfg.load_cpu, 0.0) + load_cpu
    result.other_busy_pct = others_busy(cores_a, cores_b, ours)
    samples = load_samples(result.latency_files)
    if samples:
        n = len(samples)
        pick = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "p999": 0.999}
        result.latency_us = {k: round(samples[min(n - 1, int(q * n))], 1) for k, q in pick.items()}
        result.latency_us["max"] = round(samples[-1], 1)
        result.latency_us["samples"] = float(n)
    result.ok = result.delivered > 0
    return mark


def run_once(name: str, index: int, cfg: Config, logs: Path) -> Result:
    """A fresh ``name``, its members in their rooms, one measured run, everything stopped."""
    spec = SPECS[name]
    result = Result(server=name, run=index)
    secret = secrets.token_urlsafe(48)
    server: Child | None = None
    loads: list[Child] = []
    started = time.monotonic()
    mark = 0
    try:
        port = free_port()
        # The default cap (10,000) is above the members; rate limit raised by start_server
        # (one publish a second per member is far below the default 50/s anyway).
        server = start_server(
            name, port, secret=secret, send_queue=1024, cpu=cfg.server_cpu, cwd=REPO
        )
        template = f"ws://127.0.0.1:{port}/items/{{room}}/ws"
        env = clean_env({"BENCH_JWT_SECRET": secret})
        logs.mkdir(parents=True, exist_ok=True)
        for part in range(cfg.load_procs):
            argv = roomsgen_argv(cfg, template, spec.auth, spec.presence, part)
            latency_out = logs / f"smallrooms-{name}-run{index}-part{part}.f64"
            result.latency_files.append(str(latency_out))
            argv += ["--latency-out", str(latency_out)]
            loads.append(Child(f"roomsgen{part}", argv, cpu=cfg.load_cpu, env=env, cwd=str(REPO)))
        mark = measure(result, cfg, server, loads, started)
    except BenchError as exc:
        result.error = str(exc)[:2000]
    finally:
        for load in loads:
            load.close_gently(QUIT_TIMEOUT_S)
        if server is not None:
            stop_server(server)
            count, samples = log_problems(server.lines, mark, len(server.lines))
            result.log_problem_count, result.log_problems = count, samples
            (logs / f"{name}-run{index}.log").write_text("".join(server.lines))
    return result


def run_line(r: Result) -> str:
    if not r.ok:
        return f"  {r.server:<10} run {r.run}: FAILED: {(r.error or '').splitlines()[0][:160]}"
    lat = r.latency_us
    lag = r.schedule_lag_us
    return (
        f"  {r.server:<10} run {r.run}: {r.deliveries_per_s:7,.0f} dlv/s of "
        f"{r.expected_per_s:,.0f} | p50 {lat.get('p50', 0) / 1e3:6.2f} ms "
        f"p99 {lat.get('p99', 0) / 1e3:7.2f} ms | srv {r.server_us_per_delivery:5.1f} µs/dlv "
        f"{r.server_cpu_pct:3.0f}% | load {r.load_cpu_pct:3.0f}% "
        f"{r.load_us_per_frame:4.1f} µs/frame, lag p99 {lag.get('p99', 0) / 1e3:5.1f} ms | "
        f"lost {r.lost} disorder {r.disorder} closes {r.closes or '-'} | RSS "
        f"{r.rss_start_kib / 1024:.0f}+{(r.rss_end_kib - r.rss_start_kib) / 1024:.0f} MiB | "
        f"others {r.other_busy_pct} | setup {r.setup_s:.0f}s"
    )


METRICS: dict[str, Callable[[Result], float]] = {
    "dlv/s": lambda r: r.deliveries_per_s,
    "p50 ms": lambda r: r.latency_us.get("p50", 0.0) / 1e3,
    "p99 ms": lambda r: r.latency_us.get("p99", 0.0) / 1e3,
    "srv µs/dlv": lambda r: r.server_us_per_delivery,
    "srv CPU%": lambda r: r.server_cpu_pct,
    "load CPU%": lambda r: r.load_cpu_pct,
    "lag p99 ms": lambda r: r.schedule_lag_us.get("p99", 0.0) / 1e3,
    "+RSS MiB": lambda r: (r.rss_end_kib - r.rss_start_kib) / 1024,
}
RATIO_KEYS = ("dlv/s", "p50 ms", "p99 ms", "srv µs/dlv", "+RSS MiB")
INTEGERS = ("dlv/s", "lost", "disorder", "rooms with loss", "closed")


def summarize(results: dict[str, list[Result]]) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        ok = [r for r in runs if r.ok]
        s = {key: med([f(r) for r in ok]) for key, f in METRICS.items()}
        s["expected dlv/s"] = ok[0].expected_per_s if ok else 0.0
        s["lost"] = float(sum(r.lost for r in runs))
        s["disorder"] = float(sum(r.disorder for r in runs))
        s["rooms with loss"] = float(sum(r.rooms_with_loss for r in runs))
        s["closed"] = float(sum(sum(r.closes.values()) for r in runs))
        s["failed runs"] = float(sum(1 for r in runs if not r.ok))
        summary[name] = s
    return summary


def table(summary: dict[str, dict[str, float]], title: str) -> list[str]:
    keys = [*METRICS, "lost", "disorder", "rooms with loss", "closed"]
    head = f"{'server':<10} {'expected':>9} " + " ".join(f"{k:>11}" for k in keys)
    lines = [title, head, "-" * len(head)]
    for name, s in summary.items():
        cells = " ".join(f"{s[k]:>11,.0f}" if k in INTEGERS else f"{s[k]:>11.2f}" for k in keys)
        lines.append(f"{name:<10} {s['expected dlv/s']:>9,.0f} {cells}")
    return lines


def ratios(summary: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    if ITEMROOMS not in summary:
        return {}
    mine = summary[ITEMROOMS]
    return {
        base: {k: round(ratio(mine[k], summary[base][k]), 3) for k in RATIO_KEYS}
        for base in BASELINES
        if base in summary
    }


def ratio_lines(all_ratios: dict[str, dict[str, float]]) -> list[str]:
    head = f"{'ratio':<20} " + " ".join(f"{k:>11}" for k in RATIO_KEYS)
    lines = [head]
    for base, r in all_ratios.items():
        lines.append(
            f"{'itemrooms/' + base:<20} " + " ".join(f"{r[k]:>10.2f}x" for k in RATIO_KEYS)
        )
    lines.append(
        "(dlv/s above 1 = itemrooms delivers more; latency and µs/dlv below 1 = itemrooms "
        "faster/cheaper)"
    )
    return lines


def verdicts(results: dict[str, list[Result]], cfg: Config) -> list[str]:
    """Whether the generator kept its schedule and who was busy, per server."""
    lines = []
    for name, runs in results.items():
        ok = [r for r in runs if r.ok]
        if not ok:
            continue
        load = max(r.load_cpu_pct for r in ok)
        lag = max(r.schedule_lag_us.get("p99", 0.0) for r in ok) / 1e3
        rate = min(r.deliveries_per_s for r in ok) / cfg.expected_per_s
        others = max((v for r in ok for v in r.other_busy_pct.values()), default=0.0)
        notes = []
        notes.append(f"generator at most {load:.0f}% of its core, schedule lag p99 {lag:.1f} ms")
        notes.append(
            "kept up with the offered load"
            if rate >= 0.98
            else f"FELL BEHIND: {100 * rate:.0f}% of the expected deliveries/s"
        )
        if load >= 85:
            notes.append("LOAD GENERATOR BUSY: latency includes its queueing")
        if others >= 10:
            notes.append(f"NOISY: others used up to {others:.0f}% of a core")
        lines.append(f"{name}: " + "; ".join(notes))
    return lines


def problems(results: dict[str, list[Result]]) -> list[str]:
    found = []
    for name, runs in results.items():
        for r in runs:
            tag = f"{name} run {r.run}"
            if not r.ok or r.error:
                found.append(f"{tag}: {(r.error or 'nothing delivered').splitlines()[0][:200]}")
                continue
            if r.lost or r.disorder:
                found.append(
                    f"{tag}: {r.lost} deliveries lost, {r.disorder} out of order, in "
                    f"{r.rooms_with_loss} room(s) (worst: {r.worst_room})"
                )
            if r.closes:
                found.append(f"{tag}: members closed by the server: {r.closes}")
            if r.wait != "complete":
                found.append(f"{tag}: waiting for the last deliveries ended: {r.wait}")
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.smallrooms", description=__doc__.splitlines()[0]
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 50 rooms, 2 s, 1 run")
    p.add_argument("--runs", type=int, default=None, help="runs per server (default 3; quick 1)")
    p.add_argument("--rooms", type=int, default=None, help="rooms (500; quick 50)")
    p.add_argument("--room-size", type=int, default=4, help="members per room (4)")
    p.add_argument("--rate", type=float, default=1.0, help="publishes/s per member (1)")
    p.add_argument("--seconds", type=float, default=None, help="measured time (20; quick 2)")
    p.add_argument("--warmup", type=float, default=None, help="before it (2; quick 0.5)")
    p.add_argument("--data-bytes", type=int, default=64, help="size of each message's data")
    p.add_argument("--load-procs", type=int, default=1, help="roomsgen processes (1)")
    p.add_argument("--servers", default=",".join(SERVERS), help="comma list, in run order")
    add_common_args(p)
    args = p.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    args.rooms = args.rooms or (50 if args.quick else 500)
    args.seconds = args.seconds or (2.0 if args.quick else 20.0)
    if args.warmup is None:
        args.warmup = 0.5 if args.quick else 2.0
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not args.servers or any(s not in SERVERS for s in args.servers):
        p.error(f"--servers: choose from {', '.join(SERVERS)}")
    if args.room_size < 2 or args.rate <= 0 or args.runs < 1 or args.warmup < 0:
        p.error("--room-size must be at least 2, --rate above 0, --runs at least 1")
    if not 1 <= args.load_procs <= args.rooms:
        p.error("--load-procs must be between 1 and --rooms")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pin_self(args, "smallrooms")
    raise_nofile_limit()
    cfg = Config(
        rooms=args.rooms,
        room_size=args.room_size,
        rate=args.rate,
        duration_s=args.seconds,
        warmup_s=args.warmup,
        data_bytes=args.data_bytes,
        load_procs=args.load_procs,
        server_cpu=None if args.no_pin else args.server_cpu,
        load_cpu=None if args.no_pin else args.load_cpu,
    )
    title = (
        f"many small rooms: {cfg.rooms} rooms x {cfg.room_size} members, each publishing "
        f"{cfg.rate:g}/s ({cfg.data_bytes} B data, open loop), {cfg.duration_s:g} s measured "
        f"after {cfg.warmup_s:g} s warm-up, {cfg.load_procs} roomsgen process(es), "
        f"{args.runs} run(s) per server, interleaved; medians"
    )
    run = begin(args, "smallrooms", title)
    results: dict[str, list[Result]] = {name: [] for name in args.servers}
    for index in range(args.runs):
        for name in args.servers:
            r = run_once(name, index, cfg, run.logs)
            results[name].append(r)
            print(run_line(r), flush=True)
    summary = summarize(results)
    all_ratios = ratios(summary)
    return finish(
        run,
        args,
        cfg,
        results,
        summary,
        [
            table(summary, title),
            ratio_lines(all_ratios) if all_ratios else [],
            verdicts(results, cfg),
        ],
        {"ratios_itemrooms_over": all_ratios},
        problems(results),
        lambda axes: draw(axes, results, cfg),
    )


def draw(axes: Sequence[Any], results: dict[str, list[Result]], cfg: Config) -> None:
    def per_run(key: str) -> dict[str, list[float]]:
        return {n: [METRICS[key](r) for r in rs if r.ok] for n, rs in results.items()}

    bar_panel(axes[0], f"deliveries/s (expected {cfg.expected_per_s:,.0f})", per_run("dlv/s"))
    axes[0].axhline(cfg.expected_per_s, color="C3", linestyle="--", linewidth=1)
    bar_panel(axes[1], "latency p99, ms", per_run("p99 ms"))
    bar_panel(axes[2], "server CPU µs per delivery", per_run("srv µs/dlv"))
    curves = {
        name: load_samples([f for r in runs for f in r.latency_files])
        for name, runs in results.items()
    }
    ccdf_panel(axes[3], "latency (all runs pooled)", curves)


if __name__ == "__main__":
    sys.exit(main())
