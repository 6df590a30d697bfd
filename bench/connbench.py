"""The command line shared by the connection scenarios: bench/memory.py and bench/storm.py.

Both start each server fresh per run, interleave the servers, print a table
with medians and itemrooms' ratios to the baselines, and write JSON and a PNG.
"""

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

from bench.conns import ConnConfig, ConnResult, run_conns
from bench.plot import write_plot
from bench.report import write_report
from bench.servers import ITEMROOMS, PLAIN, SPECS, TUTORIAL
from bench.system import REPO, RESULTS, code_hash, environment, pin_self, raise_nofile_limit

SERVERS = (ITEMROOMS, PLAIN, TUTORIAL)


def parse_args(
    mode: str, argv: list[str] | None, full: int, quick: int, procs: int
) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m bench.{'memory' if mode == 'idle' else mode}")
    p.add_argument("--quick", action="store_true", help=f"smoke run: {quick} connections, 1 run")
    p.add_argument("--runs", type=int, default=None, help="runs per server (default 3; quick 1)")
    p.add_argument("--connections", type=int, default=None, help=f"connections ({full:,})")
    p.add_argument("--load-procs", type=int, default=procs, help=f"conngen processes ({procs})")
    p.add_argument("--room-size", type=int, default=10, help="members per room (10)")
    p.add_argument("--concurrency", type=int, default=50, help="handshakes in flight per process")
    p.add_argument("--servers", default=",".join(SERVERS), help="comma list, in run order")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--no-pin", action="store_true", help="do not pin (a one-core machine)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--out", type=Path, default=None, help="JSON path (bench/results/...)")
    if mode == "storm":
        p.add_argument("--bad-every", type=int, default=10, help="every k-th token bad (10%%)")
    args = p.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    args.connections = args.connections or (quick if args.quick else full)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not args.servers or any(s not in SPECS or SPECS[s].db is not None for s in args.servers):
        p.error(f"--servers: choose from {', '.join(SERVERS)}")
    if not 1 <= args.load_procs <= args.connections:
        p.error("--load-procs must be between 1 and --connections")
    return args


def run_all(
    mode: str,
    args: argparse.Namespace,
    metrics: dict[str, Callable[[ConnResult], float]],
    title: str,
    check: Callable[[str, list[ConnResult]], list[str]],
    print_run: Callable[[ConnResult], str],
) -> int:
    """Interleaved runs, medians of ``metrics``, ratios, JSON and PNG; the exit status."""
    kind = "memory" if mode == "idle" else mode
    pin_self(args, kind)
    raise_nofile_limit()
    cfg = ConnConfig(
        mode=mode,
        connections=args.connections,
        load_procs=args.load_procs,
        room_size=args.room_size,
        concurrency=args.concurrency,
        bad_every=getattr(args, "bad_every", 0),
        server_cpu=None if args.no_pin else args.server_cpu,
        load_cpu=None if args.no_pin else args.load_cpu,
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS / f"{kind}-{stamp}.json"
    logs = out.with_name(out.stem + "-logs")
    env = environment()
    started = time.monotonic()
    print(title, flush=True)
    results: dict[str, list[ConnResult]] = {name: [] for name in args.servers}
    for index in range(args.runs):
        for name in args.servers:
            r = run_conns(name, index, cfg, REPO, logs)
            results[name].append(r)
            line = print_run(r) if r.ok else f"FAILED: {(r.error or '').splitlines()[0][:160]}"
            print(f"  {name:<10} run {index}: {line}", flush=True)
    summary: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        ok = [r for r in runs if r.ok]
        summary[name] = {m: median([f(r) for r in ok]) if ok else 0.0 for m, f in metrics.items()}
    print()
    keys = list(metrics)
    head = f"{'server':<10} " + " ".join(f"{k:>16}" for k in keys)
    print("\n".join([title, head, "-" * len(head)]))
    for name, s in summary.items():
        print(f"{name:<10} " + " ".join(f"{s[k]:>16,.1f}" for k in keys))
    ratios: dict[str, dict[str, float]] = {}
    for base in (PLAIN, TUTORIAL):
        if ITEMROOMS in summary and base in summary:
            mine, theirs = summary[ITEMROOMS], summary[base]
            ratios[base] = {k: mine[k] / theirs[k] if theirs[k] else 0.0 for k in keys}
    if ratios:
        print()
        for base, ratio in ratios.items():
            print(f"itemrooms/{base:<9} " + " ".join(f"{ratio[k]:>15.2f}x" for k in keys))
    problems = [p for name, runs in results.items() for p in check(name, runs)]
    for problem in problems:
        print(f"PROBLEM: {problem}")
    env["api_auth_sha1_at_end"] = code_hash()
    total = time.monotonic() - started
    fields = {"ratios_itemrooms_over": ratios, "problems": problems}
    write_report(out, title, cfg, args, env, results, summary, fields, total)
    bars = [
        (k, {n: [metrics[k](r) for r in rs if r.ok] for n, rs in results.items()}) for k in keys
    ]
    plot = "" if args.no_plot else write_plot(out, bars=bars)
    print(f"\n{total:.0f}s in all; results: {out}{plot}")
    return 1 if problems else 0
