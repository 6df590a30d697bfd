"""Latency at a fixed load: one room, N members, a publisher at a fixed rate; p50/p99 per server.

    python -m bench.latency            # 1,000 members, 10 s per run, 3 interleaved runs each
    python -m bench.latency --quick    # smoke run: 50 members, 2 s
    python -m bench.latency --rate 20  # 20 messages/s instead of the calibrated rate

The rate: ``--rate`` messages/s, or half of what the plain ``websockets`` server
delivered in one fan-out run made just before (deliveries/s / members / 2),
the issue's "about half the baseline's capacity". Latency is publish to
delivery, measured by the load generator alone (send time in the data, one
``CLOCK_MONOTONIC`` for every process), over every delivery of every member.
See bench/README.md for what it includes (the generator's own queueing).
"""

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

from bench.plot import write_plot
from bench.report import summarize
from bench.run import Config, RunResult, run_once
from bench.servers import ITEMROOMS, PLAIN, SPECS, TUTORIAL
from bench.system import REPO, RESULTS, code_hash, environment, pin_self, raise_nofile_limit

SERVERS = (ITEMROOMS, PLAIN, TUTORIAL)
P99_TARGET = 1.2  # itemrooms' p99 at most this times the plain server's
KEYS = ("p50", "p90", "p99", "p999", "max")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 50 members, 2 s, 1 run")
    p.add_argument("--runs", type=int, default=None, help="runs per server (default 3; quick 1)")
    p.add_argument("--members", type=int, default=None, help="members in the room (1000)")
    p.add_argument("--seconds", type=float, default=None, help="publishing time per run (10)")
    p.add_argument(
        "--warmup", type=float, default=None, help="first seconds not recorded (1; quick 0.2)"
    )
    p.add_argument("--rate", type=float, default=None, help="messages/s (default: calibrated)")
    p.add_argument("--fraction", type=float, default=0.5, help="of plain's capacity (0.5)")
    p.add_argument("--data-bytes", type=int, default=64, help="size of each message's data")
    p.add_argument("--servers", default=",".join(SERVERS), help="comma list, in run order")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--no-pin", action="store_true", help="do not pin (a one-core machine)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--out", type=Path, default=None, help="JSON path (bench/results/...)")
    args = p.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    args.members = args.members or (50 if args.quick else 1000)
    args.seconds = args.seconds or (2.0 if args.quick else 10.0)
    if args.warmup is None:
        args.warmup = 0.2 if args.quick else 1.0
    if not 0 <= args.warmup < args.seconds:
        p.error("--warmup must be at least 0 and below --seconds")
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in args.servers if s not in SPECS or SPECS[s].db is not None]
    if unknown or not args.servers:
        p.error(f"--servers: choose from {ITEMROOMS}, {PLAIN}, {TUTORIAL}")
    return args


def config(args: argparse.Namespace, messages: int, rate: float) -> Config:
    return Config(
        members=args.members,
        messages=messages,
        window=16,
        data_bytes=args.data_bytes,
        load_procs=1,
        send_queue=max(1024, 4 * args.members),
        server_cpu=None if args.no_pin else args.server_cpu,
        load_cpu=None if args.no_pin else args.load_cpu,
        setup_timeout_s=90.0,
        deadline_s=120.0,
        rate=rate,
    )


def calibrate(args: argparse.Namespace, logs: Path) -> tuple[float, RunResult]:
    """One fan-out run of the plain server: its deliveries/s -> messages/s x fraction."""
    cfg = config(args, 200 if args.quick else 500, 0.0)
    result = run_once(PLAIN, -1, cfg, REPO, logs)
    if not result.ok:
        raise SystemExit(f"latency: the calibration run failed: {result.error}")
    rate = args.fraction * result.deliveries_per_s / args.members
    return rate, result


def med(runs: list[RunResult], key: str) -> float:
    values = [r.latency_us[key] for r in runs if r.ok and key in r.latency_us]
    return median(values) if values else 0.0


def table(summary: dict[str, dict[str, float]], title: str) -> str:
    head = (
        f"{'server':<10} {'deliveries/s':>12} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'p99.9 ms':>9} {'max ms':>8} {'srv CPU':>7} {'load CPU':>8} {'lost':>5}"
    )
    lines = [title, head, "-" * len(head)]
    for name, s in summary.items():
        lines.append(
            f"{name:<10} {s['deliveries_per_s']:>12,.0f} {s['p50'] / 1e3:>8.2f} "
            f"{s['p90'] / 1e3:>8.2f} {s['p99'] / 1e3:>8.2f} {s['p999'] / 1e3:>9.2f} "
            f"{s['max'] / 1e3:>8.2f} {s['server_pct']:>6.0f}% {s['load_pct']:>7.0f}% "
            f"{s['lost']:>5.0f}"
        )
    return "\n".join(lines)


def ratio_lines(ratios: dict[str, dict[str, float]]) -> list[str]:
    lines = [f"{'ratio':<20} {'p50':>7} {'p99':>7}   target"]
    for base, r in ratios.items():
        target = f"p99 <= {P99_TARGET}x" if base == PLAIN else ""
        lines.append(f"{'itemrooms/' + base:<20} {r['p50']:>6.2f}x {r['p99']:>6.2f}x   {target}")
    lines.append("(below 1 = itemrooms delivers sooner)")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pin_self(args, "latency")
    raise_nofile_limit()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS / f"latency-{stamp}.json"
    logs = out.with_name(out.stem + "-logs")
    env = environment()
    started = time.monotonic()
    calibration: dict[str, object] = {}
    rate = args.rate
    if rate is None:
        rate, cal = calibrate(args, logs)
        calibration = {"plain_deliveries_per_s": round(cal.deliveries_per_s), "run": cal.to_json()}
        print(
            f"calibration: plain delivered {cal.deliveries_per_s:,.0f}/s to {args.members} "
            f"members -> {args.fraction:g} x {cal.deliveries_per_s / args.members:,.1f} "
            f"= {rate:,.1f} messages/s",
            flush=True,
        )
    messages = max(1, round(rate * args.seconds))
    cfg = replace(config(args, messages, rate), deadline_s=args.seconds + 60, warmup_s=args.warmup)
    title = (
        f"latency: {cfg.members} members, {rate:,.1f} messages/s for {args.seconds:g}s "
        f"({messages} messages of {cfg.data_bytes} B data, the first {args.warmup:g}s not "
        f"recorded), {args.runs} run(s) per server, interleaved; medians of each run's "
        f"percentiles, publish to delivery"
    )
    print(title, flush=True)
    results: dict[str, list[RunResult]] = {name: [] for name in args.servers}
    for index in range(args.runs):
        for name in args.servers:
            r = run_once(name, index, cfg, REPO, logs)
            results[name].append(r)
            lat = r.latency_us
            print(
                f"  {name:<10} run {index}: "
                + (
                    f"p50 {lat.get('p50', 0) / 1e3:6.2f} ms  p99 {lat.get('p99', 0) / 1e3:6.2f} ms"
                    f"  {r.deliveries_per_s:>9,.0f} deliveries/s  server {r.server_cpu_pct:3.0f}%"
                    f"  loadgen {r.load_cpu_pct:3.0f}%  lost {r.lost}"
                    if r.ok
                    else f"FAILED: {(r.error or '').splitlines()[0][:160]}"
                ),
                flush=True,
            )
    cpus = (f"cpu{args.server_cpu}", f"cpu{args.load_cpu}")
    summary: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        s = summarize(name, runs, *cpus)
        summary[name] = {key: med(runs, key) for key in KEYS}
        summary[name].update(
            deliveries_per_s=s.rate, server_pct=s.server_pct, load_pct=s.load_pct, lost=s.lost
        )
    print()
    print(table(summary, title))
    ratios: dict[str, dict[str, float]] = {}
    mine = summary.get(ITEMROOMS)
    for base in (PLAIN, TUTORIAL):
        theirs = summary.get(base)
        if mine and theirs and theirs["p50"] and theirs["p99"]:
            ratios[base] = {k: mine[k] / theirs[k] for k in ("p50", "p99")}
    if ratios:
        print()
        print("\n".join(ratio_lines(ratios)))
    env["api_auth_sha1_at_end"] = code_hash()
    total = time.monotonic() - started
    report = {
        "title": title,
        "config": {**asdict(cfg), "runs": args.runs, "servers": args.servers},
        "rate_messages_per_s": rate,
        "calibration": calibration,
        "environment": env,
        "runs": [r.to_json() for runs in results.values() for r in runs],
        "summary": summary,
        "ratios_itemrooms_over": ratios,
        "p99_target_over_plain": P99_TARGET,
        "total_s": round(total, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    plot = "" if args.no_plot else write_plot(out, latency=results)
    print(f"\n{total:.0f}s in all; results: {out}{plot}")
    bad = any(not r.ok or r.lost or r.error for runs in results.values() for r in runs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
