"""Slow consumer: one room of 100 members, 16 KiB messages at a fixed rate, one stops reading.

    python -m bench.slowconsumer            # 100 members, 100/s, 20 s, 3 runs per server
    python -m bench.slowconsumer --quick    # smoke run: 20 members, 200/s, 2 s

Each server (itemrooms, plain, tutorial, interleaved) is run twice per run
index, fresh each time: once with every member reading ("reading"), once
with the last member to join never reading after its ``welcome`` ("slow":
its client stops reading the socket, so the kernel's buffers fill and the
server's writes to it back up). Member 0 publishes ``--rate`` messages a
second of ``--data-bytes`` (open loop, send time in the data), for
``--warmup`` + ``--seconds``. Reported for the other members (all but the
last): messages lost, latency p50/p99 (warm-up not recorded), and the
server's RSS over the run (``VmRSS``, sampled every 100 ms). Then the slow
member reads again and reports what it got and how its connection ended
(itemrooms: 1013 ``slow_consumer`` once its queue was full while its socket
was backpressured, with the server's log line and ``/metrics`` counter).

Expected, and reported as measured: the tutorial's ``broadcast`` awaits
each member's send in turn, so the room freezes behind the slow member
(bounded here by ``--idle`` seconds without a delivery; what the others
never got is "lost"); the plain server's ``broadcast()`` never waits and
never drops, so the slow member's frames pile up in the server's memory.

The exit status is non-zero when a run failed, when itemrooms lost a message
to a reading member or closed one, or when any server lost one with every
member reading. Target (issue 7): itemrooms' p99 with the slow member within
2x of its p99 without. See bench/README.md.
"""

import argparse
import secrets
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.children import BenchError, Child, clean_env, free_port
from bench.plot import ccdf_panel
from bench.roomsbench import (
    QUIT_TIMEOUT_S,
    add_common_args,
    begin,
    finish,
    log_problems,
    med,
    others_busy,
    ratio,
    scrape_metric,
)
from bench.samples import load_samples
from bench.servers import (
    ITEMROOMS,
    PLAIN,
    SPECS,
    TUTORIAL,
    start_server,
    stop_server,
    ws_url,
)
from bench.system import REPO, core_times, pin_self, process_rss_kib, raise_nofile_limit

SERVERS = (ITEMROOMS, PLAIN, TUTORIAL)
BASELINES = (PLAIN, TUTORIAL)
VARIANTS = ("reading", "slow")
P99_TARGET = 2.0  # itemrooms' p99 with the slow member at most this times without
SAMPLE_EVERY_S = 0.1
EVICTED = "slow_consumer"
KEEPALIVE = "keepalive ping timeout"
CLOSES_METRIC = "itemrooms_server_closes_total"


@dataclass(frozen=True, slots=True)
class Config:
    members: int
    rate: float
    duration_s: float
    warmup_s: float
    data_bytes: int
    send_queue: int
    idle_s: float
    server_cpu: int | None
    load_cpu: int | None
    setup_timeout_s: float = 60.0
    deadline_s: float = 60.0


@dataclass(slots=True)
class Result:
    server: str
    variant: str
    run: int
    ok: bool = False
    error: str | None = None
    sent: int = 0
    stopped: str = ""  # how publishing ended
    wait: str = ""  # how waiting for the others' last deliveries ended
    others: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0  # messages sent that reading members never got
    others_missing_some: int = 0
    min_received: int = 0
    gaps: int = 0
    disorder: int = 0
    other_frames: int = 0
    closes: dict[str, int] = field(default_factory=dict)  # reading members closed
    latency_us: dict[str, float] = field(default_factory=dict)
    latency_files: list[str] = field(default_factory=list)
    slow: dict[str, Any] = field(default_factory=dict)  # the slow member, reading at last
    last_member: dict[str, Any] = field(default_factory=dict)
    delivered_to_others_after_slow_read: int = 0
    lost_after_slow_read: int = 0
    evicted_after_s: float | None = None  # itemrooms' slow_consumer log line, after go
    slow_consumer_closes: float | None = None  # itemrooms' /metrics counter
    rss_kib: list[tuple[float, int]] = field(default_factory=list)  # (s after go, KiB)
    rss_start_kib: int = 0
    rss_peak_kib: int = 0
    rss_end_kib: int = 0  # when publishing ended
    rss_growth_mib: float = 0.0  # peak - start
    rss_slope_mib_s: float = 0.0  # over the last third of the publishing time
    server_cpu_pct: float = 0.0
    load_cpu_pct: float = 0.0
    load_us_per_frame: float = 0.0
    other_busy_pct: dict[str, float] = field(default_factory=dict)
    log_problem_count: int = 0
    log_problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Sampler:
    """A thread reading the server's RSS and watching its log while the run goes on."""

    def __init__(self, server: Child, t0: float) -> None:
        self.server, self.t0 = server, t0
        self.samples: list[tuple[float, int]] = []
        self.evicted_at: float | None = None
        self._seen = len(server.lines)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            now = time.monotonic() - self.t0
            rss = process_rss_kib(self.server.pid)
            if rss is not None:
                self.samples.append((round(now, 2), rss))
            lines = self.server.lines
            if self.evicted_at is None and any(EVICTED in x for x in lines[self._seen :]):
                self.evicted_at = round(now, 2)
            self._seen = len(lines)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def roomsgen_argv(cfg: Config, url: str, auth: str, presence: bool, slow: bool) -> list[str]:
    argv = [sys.executable, "-m", "bench.roomsgen", "--mode", "slow", "--auth", auth]
    argv += ["--url", url, "--members", str(cfg.members), "--rate", str(cfg.rate)]
    argv += ["--duration-s", str(cfg.duration_s), "--warmup-s", str(cfg.warmup_s)]
    argv += ["--data-bytes", str(cfg.data_bytes), "--idle-s", str(cfg.idle_s)]
    argv += ["--deadline", str(cfg.deadline_s), "--setup-timeout", str(cfg.setup_timeout_s)]
    if presence:
        argv.append("--presence")
    if slow:
        argv.append("--slow")
    return argv


def rss_figures(result: Result, samples: list[tuple[float, int]], start: int, end_s: float) -> None:
    result.rss_kib = samples
    result.rss_start_kib = start
    during = [kib for t, kib in samples if t <= end_s] or [start]
    result.rss_peak_kib = max(during)
    result.rss_end_kib = during[-1]
    result.rss_growth_mib = round((result.rss_peak_kib - start) / 1024, 1)
    tail = [(t, kib) for t, kib in samples if end_s * 2 / 3 <= t <= end_s]
    if len(tail) >= 2 and tail[-1][0] > tail[0][0]:
        slope = (tail[-1][1] - tail[0][1]) / 1024 / (tail[-1][0] - tail[0][0])
        result.rss_slope_mib_s = round(slope, 2)


def measure(
    result: Result, cfg: Config, server: Child, load: Child, port: int
) -> tuple[int, Sampler]:
    setup = cfg.setup_timeout_s + 10
    load.expect("connected", setup)
    load.expect("ready", setup)
    time.sleep(0.5)  # the last presence and welcome writes settle
    mark = len(server.lines)
    rss_start = process_rss_kib(server.pid) or 0
    cores = tuple(c for c in (cfg.server_cpu, cfg.load_cpu) if c is not None)
    cores_a, server_a, load_a = core_times(cores), server.cpu_s(), load.cpu_s()
    go = time.monotonic()
    sampler = Sampler(server, go)
    load.send("go")
    published = load.expect("published", cfg.warmup_s + cfg.duration_s + cfg.idle_s + 30)
    cores_b, server_b, load_b = core_times(cores), server.cpu_s(), load.cpu_s()
    end_s = time.monotonic() - go
    measured = load.expect("measured", cfg.deadline_s + 30)
    if result.server == ITEMROOMS:
        labels = f'reason="{EVICTED}"'
        result.slow_consumer_closes = scrape_metric(port, CLOSES_METRIC, labels)
    done = load.expect("done", 120)
    sampler.stop()

    window = max(end_s, 1e-9)
    result.sent, result.stopped = published["sent"], published["stopped"]
    result.wait = measured["wait"]
    for key in ("others", "expected", "delivered", "lost", "others_missing_some"):
        setattr(result, key, measured[key])
    for key in ("min_received", "gaps", "disorder", "other_frames", "closes", "latency_us"):
        setattr(result, key, measured[key])
    result.slow = done.get("slow", {})
    result.last_member = done.get("last_member", {})
    result.delivered_to_others_after_slow_read = done.get("delivered_to_others_after_slow_read", 0)
    result.lost_after_slow_read = done.get("lost_after_slow_read", result.lost)
    result.evicted_after_s = sampler.evicted_at
    rss_figures(result, sampler.samples, rss_start, end_s)
    result.server_cpu_pct = 100 * (server_b - server_a) / window
    load_cpu = load_b - load_a
    result.load_cpu_pct = 100 * load_cpu / window
    result.load_us_per_frame = 1e6 * load_cpu / max(result.delivered, 1)
    ours = {}
    if cfg.server_cpu is not None:
        ours[cfg.server_cpu] = server_b - server_a
    if cfg.load_cpu is not None:
        ours[cfg.load_cpu] = ours.get(cfg.load_cpu, 0.0) + load_cpu
    result.other_busy_pct = others_busy(cores_a, cores_b, ours)
    result.ok = result.delivered > 0
    return mark, sampler


def run_once(name: str, variant: str, index: int, cfg: Config, logs: Path) -> Result:
    """A fresh ``name``, the room, one publishing run (with or without the slow member)."""
    spec = SPECS[name]
    result = Result(server=name, variant=variant, run=index)
    secret = secrets.token_urlsafe(48)
    server: Child | None = None
    load: Child | None = None
    sampler: Sampler | None = None
    mark = 0
    try:
        port = free_port()
        server = start_server(
            name, port, secret=secret, send_queue=cfg.send_queue, cpu=cfg.server_cpu, cwd=REPO
        )
        env = clean_env({"BENCH_JWT_SECRET": secret})
        logs.mkdir(parents=True, exist_ok=True)
        argv = roomsgen_argv(cfg, ws_url(port), spec.auth, spec.presence, variant == "slow")
        latency_out = logs / f"slow-{name}-{variant}-run{index}.f64"
        result.latency_files.append(str(latency_out))
        argv += ["--latency-out", str(latency_out)]
        load = Child("roomsgen", argv, cpu=cfg.load_cpu, env=env, cwd=str(REPO))
        mark, sampler = measure(result, cfg, server, load, port)
    except BenchError as exc:
        result.error = str(exc)[:2000]
    finally:
        if sampler is not None:
            sampler.stop()
        if load is not None:
            load.close_gently(QUIT_TIMEOUT_S)
        if server is not None:
            stop_server(server)
            count, samples = log_problems(server.lines, mark, len(server.lines))
            result.log_problem_count, result.log_problems = count, samples
            (logs / f"{name}-{variant}-run{index}.log").write_text("".join(server.lines))
    return result


def slow_outcome(r: Result) -> str:
    """What the slow member saw when it read again, in a few words."""
    if r.variant != "slow" or not r.slow:
        return "-"
    got = r.slow.get("received", 0)
    return f"got {got}/{r.sent}, {r.slow.get('outcome', '?')}"


def slow_outcomes(runs: list[Result]) -> str:
    """The slow member's fate over runs: each ending with its count, and what it got."""
    endings: dict[str, int] = {}
    for r in runs:
        ending = r.slow.get("outcome", "?")
        endings[ending] = endings.get(ending, 0) + 1
    got = [r.slow.get("received", 0) for r in runs]
    sent = [r.sent for r in runs]
    words = ", ".join(f"{e} x{n}" if len(runs) > 1 else e for e, n in endings.items())
    span = f"{min(got)}" if min(got) == max(got) else f"{min(got)}-{max(got)}"
    of = f"{min(sent)}" if min(sent) == max(sent) else f"{min(sent)}-{max(sent)}"
    return f"got {span} of {of}; {words}" if runs else "-"


def run_line(r: Result) -> str:
    tag = f"  {r.server:<10} {r.variant:<8} run {r.run}:"
    if not r.ok:
        return f"{tag} FAILED: {(r.error or '').splitlines()[0][:160]}"
    lat = r.latency_us
    evicted = f", evicted at {r.evicted_after_s:.1f}s" if r.evicted_after_s is not None else ""
    return (
        f"{tag} sent {r.sent} ({r.stopped}) | others lost {r.lost} of {r.expected} "
        f"({r.wait}) | p50 {lat.get('p50', 0) / 1e3:6.2f} ms p99 {lat.get('p99', 0) / 1e3:7.2f} "
        f"ms | RSS +{r.rss_growth_mib:.1f} MiB, {r.rss_slope_mib_s:+.2f} MiB/s at the end | "
        f"slow: {slow_outcome(r)}{evicted} | srv {r.server_cpu_pct:3.0f}% load "
        f"{r.load_cpu_pct:3.0f}% ({r.load_us_per_frame:.0f} µs/frame) | others {r.other_busy_pct}"
    )


METRICS: dict[str, Callable[[Result], float]] = {
    "sent": lambda r: float(r.sent),
    "lost": lambda r: float(r.lost),
    "p50 ms": lambda r: r.latency_us.get("p50", 0.0) / 1e3,
    "p99 ms": lambda r: r.latency_us.get("p99", 0.0) / 1e3,
    "RSS MiB": lambda r: r.rss_start_kib / 1024,
    "+RSS MiB": lambda r: r.rss_growth_mib,
    "MiB/s end": lambda r: r.rss_slope_mib_s,
    "srv CPU%": lambda r: r.server_cpu_pct,
    "load CPU%": lambda r: r.load_cpu_pct,
}


def summarize(results: dict[tuple[str, str], list[Result]]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for (name, variant), runs in results.items():
        ok = [r for r in runs if r.ok]
        s: dict[str, Any] = {key: med([f(r) for r in ok]) for key, f in METRICS.items()}
        s["lost total"] = sum(r.lost for r in runs)
        s["failed runs"] = sum(1 for r in runs if not r.ok)
        s["slow member"] = slow_outcomes(ok) if variant == "slow" else ""
        evictions = [r.evicted_after_s for r in ok if r.evicted_after_s is not None]
        s["evicted after s"] = med(evictions) if evictions else None
        summary[f"{name}/{variant}"] = s
    for key, s in summary.items():
        name, variant = key.split("/")
        reading = summary.get(f"{name}/reading")
        s["+RSS-read"] = s["+RSS MiB"] - reading["+RSS MiB"] if reading else 0.0
    return summary


def table(summary: dict[str, dict[str, Any]], title: str) -> list[str]:
    keys = [*METRICS, "+RSS-read"]
    head = f"{'server/variant':<20} " + " ".join(f"{k:>9}" for k in keys) + "  slow member"
    lines = [title, head, "-" * (len(head) + 20)]
    for key, s in summary.items():
        cells = " ".join(
            f"{s[k]:>9,.0f}" if k in ("sent", "lost") else f"{s[k]:>9.2f}" for k in keys
        )
        slow = s["slow member"] or "-"
        if s["evicted after s"] is not None:
            slow += f" (evicted {s['evicted after s']:.1f} s after go)"
        lines.append(f"{key:<20} {cells}  {slow}")
    return lines


def ratios(summary: dict[str, dict[str, Any]], servers: list[str]) -> dict[str, dict[str, float]]:
    """p99 slow/reading per server; itemrooms/baseline of p99 and RSS growth per variant."""
    found: dict[str, dict[str, float]] = {}
    for name in servers:
        slow, reading = summary.get(f"{name}/slow"), summary.get(f"{name}/reading")
        if slow and reading:
            found[f"{name} slow/reading"] = {
                "p50": round(ratio(slow["p50 ms"], reading["p50 ms"]), 3),
                "p99": round(ratio(slow["p99 ms"], reading["p99 ms"]), 3),
            }
    for base in BASELINES:
        for variant in VARIANTS:
            mine, theirs = summary.get(f"{ITEMROOMS}/{variant}"), summary.get(f"{base}/{variant}")
            if mine and theirs:
                entry = found[f"itemrooms/{base} {variant}"] = {
                    "p50": round(ratio(mine["p50 ms"], theirs["p50 ms"]), 3),
                    "p99": round(ratio(mine["p99 ms"], theirs["p99 ms"]), 3),
                }
                # Memory ratios only against a growth that means something (1 MiB or more).
                if theirs["+RSS MiB"] >= 1:
                    entry["rss_growth"] = round(ratio(mine["+RSS MiB"], theirs["+RSS MiB"]), 3)
                if variant == "slow" and theirs["+RSS-read"] >= 1:
                    growth = ratio(mine["+RSS-read"], theirs["+RSS-read"])
                    entry["rss_growth_over_reading"] = round(growth, 3)
    return found


def ratio_lines(found: dict[str, dict[str, float]]) -> list[str]:
    lines = [f"{'ratio':<32} {'p50':>8} {'p99':>8} {'+RSS':>8} {'+RSS-read':>10}"]
    for key, r in found.items():
        rss = f"{r['rss_growth']:>7.2f}x" if "rss_growth" in r else f"{'':>8}"
        over = r.get("rss_growth_over_reading")
        rss += f" {over:>9.2f}x" if over is not None else f" {'':>10}"
        target = ""
        if key == f"{ITEMROOMS} slow/reading":
            met = "met" if 0 < r["p99"] <= P99_TARGET else "NOT met"
            target = f"   target p99 <= {P99_TARGET:g}x: {met}"
        lines.append(f"{key:<32} {r['p50']:>7.2f}x {r['p99']:>7.2f}x {rss}{target}")
    lines.append(
        "(itemrooms/baseline below 1 = itemrooms faster or smaller; memory ratios only where "
        "the baseline grew by 1 MiB or more)"
    )
    return lines


def notes(results: dict[tuple[str, str], list[Result]], cfg: Config) -> list[str]:
    """What happened to the room and the slow member, per server, in words."""
    lines = []
    frame_kib = (cfg.data_bytes + 200) / 1024
    bound = cfg.send_queue * frame_kib / 1024
    for (name, variant), runs in results.items():
        ok = [r for r in runs if r.ok]
        if variant != "slow" or not ok:
            continue
        lost = sum(r.lost for r in ok)
        expected = sum(r.expected for r in ok)
        load = max(r.load_cpu_pct for r in ok)
        growth = med([r.rss_growth_mib for r in ok])
        reading = [r.rss_growth_mib for r in results.get((name, "reading"), []) if r.ok]
        slope = med([r.rss_slope_mib_s for r in ok])
        words = [f"others lost {lost} of {expected}"]
        cost = f"RSS +{growth:.1f} MiB"
        if reading:
            cost += f", {growth - med(reading):+.1f} MiB over the reading runs"
        cost += f", {slope:+.2f} MiB/s at the end"
        if name == ITEMROOMS:
            closes = [r.slow_consumer_closes for r in ok]
            words.append(f"/metrics slow_consumer closes {closes}")
            cost += f" (its queue: at most {cfg.send_queue} frames of ~{frame_kib:.1f} KiB = "
            cost += f"{bound:.0f} MiB)"
        words.append(cost)
        if any(r.wait != "complete" for r in ok):
            words.append(
                f"the room STOPPED delivering (waited until nothing came for {cfg.idle_s:g} s)"
            )
        after = sum(r.delivered_to_others_after_slow_read for r in ok)
        if after:
            words.append(
                f"{after} deliveries reached the others only once the slow member read again"
            )
        words.append(f"generator up to {load:.0f}% of its core")
        lines.append(f"{name}: " + "; ".join(words))
    return lines


def problems(results: dict[tuple[str, str], list[Result]]) -> list[str]:
    found = []
    for (name, variant), runs in results.items():
        for r in runs:
            tag = f"{name} {variant} run {r.run}"
            if not r.ok or r.error:
                found.append(f"{tag}: {(r.error or 'nothing delivered').splitlines()[0][:200]}")
                continue
            strict = name == ITEMROOMS or variant == "reading"
            if strict and (r.lost or r.gaps or r.disorder):
                found.append(
                    f"{tag}: reading members lost {r.lost} messages ({r.others_missing_some} "
                    f"members, {r.gaps} gaps, {r.disorder} out of order)"
                )
            if strict and r.closes:
                found.append(f"{tag}: reading members closed by the server: {r.closes}")
            if variant == "reading" and r.last_member.get("received", r.sent) < r.sent:
                found.append(f"{tag}: the last member got {r.last_member} of {r.sent}")
            if name == ITEMROOMS and variant == "slow":
                close = r.slow.get("close")
                got_all = r.slow.get("received", 0) >= r.sent
                # After 2 x ITEMROOMS_PING_INTERVAL_S (40 s) without a pong, uvicorn's keepalive
                # closes first (1011): acceptable only once the server had evicted it.
                overtaken = close == [1011, KEEPALIVE] and r.evicted_after_s is not None
                if close is not None and close != [1013, EVICTED] and not overtaken:
                    found.append(f"{tag}: the slow member was closed with {close}")
                elif close is None and not got_all:
                    found.append(f"{tag}: the slow member lost messages without a close: {r.slow}")
                if r.slow.get("gaps"):
                    found.append(f"{tag}: the slow member saw a gap before its close: {r.slow}")
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.slowconsumer", description=__doc__.splitlines()[0]
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 20 members, 2 s, 1 run")
    p.add_argument("--runs", type=int, default=None, help="runs per server and variant (3)")
    p.add_argument("--members", type=int, default=None, help="members in the room (100)")
    p.add_argument("--rate", type=float, default=None, help="messages/s (100; quick 200)")
    p.add_argument("--seconds", type=float, default=None, help="measured time (20; quick 2)")
    p.add_argument("--warmup", type=float, default=None, help="before it (1; quick 0.5)")
    p.add_argument("--data-bytes", type=int, default=16384, help="each message's data (16 KiB)")
    p.add_argument(
        "--send-queue", type=int, default=None, help="ITEMROOMS_SEND_QUEUE (1024; quick 32)"
    )
    p.add_argument(
        "--idle", type=float, default=None, help="nothing delivered this long: stop waiting (5)"
    )
    p.add_argument("--servers", default=",".join(SERVERS), help="comma list, in run order")
    p.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma list: reading, slow (both)"
    )
    add_common_args(p)
    args = p.parse_args(argv)
    q = args.quick
    args.runs = args.runs or (1 if q else 3)
    args.members = args.members or (20 if q else 100)
    # Quick: a higher rate, so that the slow member's socket buffers (about 4 MB on
    # loopback) and a small queue fill within the run.
    args.rate = args.rate or (200.0 if q else 100.0)
    args.seconds = args.seconds or (2.0 if q else 20.0)
    args.warmup = (0.5 if q else 1.0) if args.warmup is None else args.warmup
    args.send_queue = args.send_queue or (32 if q else 1024)
    args.idle = args.idle or (2.0 if q else 5.0)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not args.servers or any(s not in SERVERS for s in args.servers):
        p.error(f"--servers: choose from {', '.join(SERVERS)}")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not args.variants or any(v not in VARIANTS for v in args.variants):
        p.error("--variants: reading, slow or both")
    if args.members < 3 or args.rate <= 0 or args.runs < 1:
        p.error("--members must be at least 3, --rate above 0, --runs at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pin_self(args, "slowconsumer")
    raise_nofile_limit()
    cfg = Config(
        members=args.members,
        rate=args.rate,
        duration_s=args.seconds,
        warmup_s=args.warmup,
        data_bytes=args.data_bytes,
        send_queue=args.send_queue,
        idle_s=args.idle,
        server_cpu=None if args.no_pin else args.server_cpu,
        load_cpu=None if args.no_pin else args.load_cpu,
    )
    title = (
        f"slow consumer: 1 room x {cfg.members} members, {cfg.data_bytes / 1024:g} KiB messages "
        f"at {cfg.rate:g}/s for {cfg.duration_s:g} s after {cfg.warmup_s:g} s warm-up, the last "
        f"member reading or not (ITEMROOMS_SEND_QUEUE={cfg.send_queue}), {args.runs} run(s) "
        f"per server and variant, interleaved; medians; figures are the other members'"
    )
    run = begin(args, "slowconsumer", title)
    results: dict[tuple[str, str], list[Result]] = {
        (name, variant): [] for name in args.servers for variant in args.variants
    }
    for index in range(args.runs):
        for name in args.servers:
            for variant in args.variants:
                r = run_once(name, variant, index, cfg, run.logs)
                results[(name, variant)].append(r)
                print(run_line(r), flush=True)
    summary = summarize(results)
    found_ratios = ratios(summary, args.servers)
    return finish(
        run,
        args,
        cfg,
        results,
        summary,
        [
            table(summary, title),
            ratio_lines(found_ratios) if found_ratios else [],
            notes(results, cfg),
        ],
        {"ratios": found_ratios, "p99_target": P99_TARGET},
        problems(results),
        lambda axes: draw(axes, results, args),
    )


def grouped_bars(
    ax: Any,
    title: str,
    results: dict[tuple[str, str], list[Result]],
    args: argparse.Namespace,
    value: Callable[[Result], float],
) -> None:
    """Per server, one bar per variant: the median of its runs."""
    width = 0.8 / max(len(args.variants), 1)
    for i, variant in enumerate(args.variants):
        values = [med([value(r) for r in results[(n, variant)] if r.ok]) for n in args.servers]
        xs = [x + i * width for x in range(len(args.servers))]
        ax.bar(xs, values, width=width, label=variant, color=f"C{i}")
        for x, v in zip(xs, values, strict=True):
            ax.annotate(
                f"{v:,.0f}" if v >= 100 else f"{v:.1f}",
                (x, v),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_xticks([x + width * (len(args.variants) - 1) / 2 for x in range(len(args.servers))])
    ax.set_xticklabels(args.servers)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def draw(
    axes: Sequence[Any], results: dict[tuple[str, str], list[Result]], args: argparse.Namespace
) -> None:
    p99 = "others' latency p99, ms (delivered messages only)"
    grouped_bars(axes[0], p99, results, args, lambda r: r.latency_us.get("p99", 0.0) / 1e3)
    lost = "messages the others never got"
    grouped_bars(axes[1], lost, results, args, lambda r: float(r.lost))
    curves = {
        f"{n} {v}": load_samples([f for r in runs for f in r.latency_files if r.ok])
        for (n, v), runs in results.items()
    }
    ccdf_panel(axes[2], "others' latency (all runs pooled)", curves)
    for i, name in enumerate(args.servers):
        for variant in args.variants:
            runs = [r for r in results[(name, variant)] if r.ok]
            if not runs:
                continue
            r = runs[0]
            xs = [t for t, _ in r.rss_kib]
            ys = [(kib - r.rss_start_kib) / 1024 for _, kib in r.rss_kib]
            style = "-" if variant == "slow" else ":"
            axes[3].plot(xs, ys, style, color=f"C{i}", label=f"{name} {variant}")
            if r.evicted_after_s is not None:
                axes[3].axvline(r.evicted_after_s, color=f"C{i}", linewidth=0.8, alpha=0.6)
    axes[3].set_xlabel("s after go (vertical line: slow member closed)")
    axes[3].set_ylabel("server RSS growth, MiB")
    axes[3].set_title("server RSS (run 0)")
    axes[3].grid(alpha=0.3)
    axes[3].legend(fontsize=8)


if __name__ == "__main__":
    sys.exit(main())
