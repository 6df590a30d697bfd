"""Fan-out benchmark: one room, N members, itemrooms against the plain and tutorial baselines.

    python -m bench.fanout            # 1,000 members, 3 interleaved runs each
    python -m bench.fanout --quick    # smoke run: 50 members, a few seconds
    python -m bench.fanout --scenario redis   # two Redis-backed processes vs one
    python -m bench.fanout --scenario postgres   # two PostgreSQL-backed processes vs one
    python -m bench.fanout --scenario shared     # both of those, side by side

Each run starts a fresh server pinned to one core and the load generator
pinned to the other, measures deliveries per second (message frames received
by all members / first publish to last delivery) and the server's CPU per
delivery, and checks that every member got every message. Runs alternate
between the servers (A, B, A, B, ...) so that slow drifts in the machine's
load hit both alike; the table shows medians. See bench/README.md.

Every invocation also measures the load generator's own ceiling: the same
runs against ``ceiling`` (bench/baselines/blast.py, a server that costs almost
nothing per delivery), interleaved with the others but kept out of their
table ratios; each server's rate is then shown as a fraction of it, so the
output says whether the generator, not the server, was the limit
(``--no-ceiling`` skips it).

The Redis scenario runs ``itemrooms-redis2`` (two itemrooms processes with the
Redis backend and a private redis-server, all three on the server core, the
members split evenly between the two processes) against ``itemrooms`` (one
process, memory backend, same core), and reports the per-core ratio; the
PostgreSQL scenario does the same with ``itemrooms-postgres2`` and a private
PostgreSQL cluster (every backend process of it on the server core too).
"""

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any

from bench.plot import Bars, write_plot
from bench.report import (
    FULL_PCT,
    Summary,
    ceiling_bound,
    per_core_ratios,
    ratios,
    run_line,
    summarize,
    summarize_ceiling,
    table,
)
from bench.run import Config, RunResult, run_once
from bench.servers import (
    CEILING,
    ITEMROOMS,
    ITEMROOMS_POSTGRES2,
    ITEMROOMS_REDIS2,
    PLAIN,
    SPECS,
    TUTORIAL,
)
from bench.system import (
    REPO,
    RESULTS,
    environment,
    finish_environment,
    pin_self,
    raise_nofile_limit,
)

SERVERS = (ITEMROOMS, PLAIN, TUTORIAL)  # the default run
BASELINES = (PLAIN, TUTORIAL)  # itemrooms / each of these, when both are in the run
SCENARIOS = {
    "fanout": SERVERS,
    "redis": (ITEMROOMS_REDIS2, ITEMROOMS),
    "postgres": (ITEMROOMS_POSTGRES2, ITEMROOMS),
    "shared": (ITEMROOMS_REDIS2, ITEMROOMS_POSTGRES2, ITEMROOMS),  # both, side by side
}
SHARED = (ITEMROOMS_REDIS2, ITEMROOMS_POSTGRES2)  # one room over two processes and a db
PER_CORE_TARGET = 0.8  # the project's goal for itemrooms-redis2 / itemrooms per core


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 50 members, 200 messages")
    p.add_argument("--runs", type=int, default=None, help="runs per server (default 3; quick 1)")
    p.add_argument("--members", type=int, default=None, help="members in the room (1000)")
    p.add_argument("--messages", type=int, default=None, help="messages published (500)")
    p.add_argument("--window", type=int, default=16, help="messages in flight at most (16)")
    p.add_argument("--data-bytes", type=int, default=64, help="size of each message's data")
    p.add_argument("--load-procs", type=int, default=1, help="load generator processes (1)")
    p.add_argument(
        "--send-queue",
        type=int,
        default=None,
        help="ITEMROOMS_SEND_QUEUE (default: 4 x (members + window), at least 1024)",
    )
    p.add_argument(
        "--scenario",
        choices=tuple(SCENARIOS),
        default="fanout",
        help="fanout: itemrooms vs plain and tutorial (default); "
        "redis: itemrooms-redis2 vs itemrooms; postgres: itemrooms-postgres2 vs itemrooms; "
        "shared: both against itemrooms, in one run",
    )
    p.add_argument(
        "--servers",
        default=None,
        help=f"comma list, in run order, from {', '.join(SPECS)} (default: the scenario's)",
    )
    p.add_argument(
        "--no-ceiling",
        action="store_true",
        help="skip the load generator's ceiling runs (against bench/baselines/blast.py)",
    )
    p.add_argument("--redis-server", default="redis-server", help="redis-server binary")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--no-pin", action="store_true", help="do not pin (a one-core machine)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (bench/results/...)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG next to the JSON")
    args = p.parse_args(argv)
    quick = args.quick
    args.runs = args.runs or (1 if quick else 3)
    args.members = args.members or (50 if quick else 1000)
    args.messages = args.messages or (200 if quick else 500)
    if args.send_queue is None:
        args.send_queue = max(1024, 4 * (args.members + args.window))
    servers = args.servers or ",".join(SCENARIOS[args.scenario])
    args.servers = [s.strip() for s in servers.split(",") if s.strip()]
    for name in args.servers:
        if name not in SPECS:
            p.error(f"unknown server {name!r}; choose from {', '.join(SPECS)}")
    if not args.servers or len(set(args.servers)) != len(args.servers):
        p.error("--servers needs at least one server, each named once")
    # The ceiling is measured beside the servers, not as one of them.
    args.ceiling = CEILING in args.servers or not args.no_ceiling
    args.servers = [name for name in args.servers if name != CEILING]
    if args.members < 2 or args.messages < 1 or args.window < 1 or args.runs < 1:
        p.error("--members must be at least 2; --messages, --window and --runs at least 1")
    if not 1 <= args.load_procs <= args.members:
        p.error("--load-procs must be between 1 and --members")
    return args


def setup_line(args: argparse.Namespace) -> str:
    """Where everything ran, for the database scenarios' header."""
    if args.no_pin:
        return "setup: not pinned (--no-pin): 'per core' below does not hold"
    return (
        f"setup: every itemrooms server process and the private database (redis-server, or "
        f"PostgreSQL and its backends) pinned to CPU {args.server_cpu} (itemrooms-redis2, "
        f"itemrooms-postgres2 = 2 itemrooms processes + the database on that one core, members "
        f"split evenly, publisher on the first; itemrooms = 1 process, memory backend, same "
        f"core); load generator on CPU {args.load_cpu}"
    )


def per_core_lines(ratio: dict[str, float], mine: str, base: str) -> list[str]:
    cpu = ratio["deliveries_per_cpu_s"]
    rate = ratio["deliveries_per_s"]
    if not cpu or not rate:
        return [f"{mine}/{base}, per core: not measured (a server had no successful run)"]
    met = "met" if min(cpu, rate) >= PER_CORE_TARGET else "NOT met"
    if min(cpu, rate) < PER_CORE_TARGET <= max(cpu, rate):
        met = "met by one measure only"
    return [
        f"{mine}/{base}, per core (both on one core): deliveries/s x{rate:.2f}; "
        f"deliveries per CPU-second of that core (itemrooms + database) x{cpu:.2f}",
        f"  itemrooms processes' CPU per delivery x{ratio['server_us_per_delivery']:.2f}, "
        f"with the database x{ratio['total_us_per_delivery']:.2f} (above 1 = {mine} spends more)",
        f"  target >= {PER_CORE_TARGET}x per core: {met} (deliveries/s holds when both are "
        f"server bound; per CPU-second holds whichever side was the bottleneck)",
    ]


def baseline_ratios(by_name: dict[str, Summary]) -> dict[str, dict[str, float]]:
    """itemrooms over each baseline measured in the same run."""
    if ITEMROOMS not in by_name:
        return {}
    mine = by_name[ITEMROOMS]
    return {base: ratios(mine, by_name[base]) for base in BASELINES if base in by_name}


def ratio_lines(all_ratios: dict[str, dict[str, float]]) -> list[str]:
    lines = [f"{'ratio':<20} {'deliveries/s':>12} {'srv µs/dlv':>10}   target"]
    targets = {PLAIN: "dlv/s >= 1.0, µs/dlv <= 1.0", TUTORIAL: "dlv/s >= 1.5"}
    for base, ratio in all_ratios.items():
        lines.append(
            f"{'itemrooms/' + base:<20} {ratio['deliveries_per_s']:>11.2f}x "
            f"{ratio['server_us_per_delivery']:>9.2f}x   {targets.get(base, '')}"
        )
    lines.append("(deliveries/s above 1 = itemrooms faster; µs/dlv below 1 = itemrooms cheaper)")
    return lines


def plot_bars(results: dict[str, list[RunResult]], ceiling: list[RunResult]) -> list[Bars]:
    """Deliveries/s and server µs per delivery per server (the ceiling's rate is a line
    on the first panel), and the generator's CPU per frame with the ceiling's beside."""

    def per_run(
        runs_by_name: dict[str, list[RunResult]], value: Callable[[RunResult], float]
    ) -> dict[str, list[float]]:
        return {name: [value(r) for r in runs if r.ok] for name, runs in runs_by_name.items()}

    with_ceiling = {**results, **({CEILING: ceiling} if ceiling else {})}
    return [
        ("deliveries/s", per_run(results, lambda r: r.deliveries_per_s)),
        ("server CPU µs per delivery", per_run(results, lambda r: r.server_us_per_delivery)),
        ("load generator CPU µs per frame", per_run(with_ceiling, lambda r: r.load_us_per_frame)),
    ]


def ceiling_report(c: Summary, runs: list[RunResult], summaries: list[Summary]) -> dict[str, Any]:
    """The JSON's ``ceiling``: what the generator can receive, and each server against it."""
    return {
        "server": "bench/baselines/blast.py",
        # The fastest ceiling run's figures (noise only slows a run down); the spread below.
        "deliveries_per_s": c.rate,
        "deliveries_per_s_min": c.rate_min,
        "deliveries_per_s_median": median([r.deliveries_per_s for r in runs if r.ok] or [0.0]),
        "deliveries_per_s_max": c.rate_max,
        "load_us_per_frame": c.load_us,
        "load_cpu_pct": c.load_pct,
        "load_core_others_pct": c.other_load_core,
        "blast_server_cpu_pct": c.server_pct,
        "blast_server_us_per_delivery": c.server_us,
        # generator_bound and not blast_core_full: this is the generator's ceiling; both:
        # the generator can receive at least this much; otherwise a lower bound too (the
        # blast server or latency limited the run).
        "generator_bound": ceiling_bound(c),
        "blast_core_full": c.server_pct + c.other_server_core >= FULL_PCT,
        "fraction_by_server": {s.server: round(s.of_ceiling, 3) for s in summaries},
        "load_cpu_pct_by_server": {s.server: s.load_pct for s in summaries},
        "summary": asdict(c),
        "runs": [r.to_json() for r in runs],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pin_self(args, "fanout")
    raise_nofile_limit()
    cfg = Config(
        members=args.members,
        messages=args.messages,
        window=args.window,
        data_bytes=args.data_bytes,
        load_procs=args.load_procs,
        send_queue=args.send_queue,
        server_cpu=None if args.no_pin else args.server_cpu,
        load_cpu=None if args.no_pin else args.load_cpu,
        setup_timeout_s=90.0,
        deadline_s=120.0,
        redis_server=args.redis_server,
    )
    dbs = sorted({db for name in args.servers if (db := SPECS[name].db) is not None})
    uses_redis = "redis" in dbs
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    kind = "-".join(["fanout", *dbs])
    out = args.out or RESULTS / f"{kind}-{stamp}.json"
    logs = out.with_name(out.stem + "-logs")
    title = (
        f"fan-out: {cfg.members} members, {cfg.messages} messages of {cfg.data_bytes} B data, "
        f"window {cfg.window}, {cfg.load_procs} load process(es), {args.runs} run(s) per server, "
        f"interleaved; medians"
    )
    env = environment(args.redis_server if uses_redis else None, postgres="postgres" in dbs)
    print(title, flush=True)
    if dbs:
        print(setup_line(args), flush=True)
    started = time.monotonic()
    results: dict[str, list[RunResult]] = {name: [] for name in args.servers}
    ceiling_runs: list[RunResult] = []
    order = [*args.servers, *([CEILING] if args.ceiling else [])]
    for index in range(args.runs):
        for name in order:
            result = run_once(name, index, cfg, REPO, logs)
            (ceiling_runs if name == CEILING else results[name]).append(result)
            print(run_line(result), flush=True)
    cpu_names = (f"cpu{args.server_cpu}", f"cpu{args.load_cpu}")
    ceiling = summarize_ceiling(ceiling_runs, *cpu_names) if ceiling_runs else None
    top = ceiling.rate if ceiling is not None else 0.0
    summaries = [summarize(name, runs, *cpu_names, top) for name, runs in results.items()]
    print()
    print(table(summaries, title, ceiling))
    by_name = {s.server: s for s in summaries}
    all_ratios = baseline_ratios(by_name)
    if all_ratios:
        print()
        print("\n".join(ratio_lines(all_ratios)))
    per_core: dict[str, dict[str, float]] = {}
    for shared in SHARED:
        if shared in by_name and ITEMROOMS in by_name:
            per_core[shared] = per_core_ratios(by_name[shared], by_name[ITEMROOMS])
            print()
            print("\n".join(per_core_lines(per_core[shared], shared, ITEMROOMS)))
    total = time.monotonic() - started
    warning = finish_environment(env)
    if warning:
        print(f"\n{warning}")
    report = {
        "title": title,
        "config": {**asdict(cfg), "runs": args.runs, "servers": args.servers},
        "environment": env,
        "runs": [r.to_json() for runs in results.values() for r in runs],
        "summary": {s.server: asdict(s) for s in summaries},
        "ratio_itemrooms_over_tutorial": all_ratios.get(TUTORIAL, {}),
        "ratio_itemrooms_over_plain": all_ratios.get(PLAIN, {}),
        "total_s": round(total, 1),
    }
    if ceiling is not None:
        report["ceiling"] = ceiling_report(ceiling, ceiling_runs, summaries)
    if dbs:
        report["setup"] = setup_line(args)
        report["per_core_target"] = PER_CORE_TARGET
        for shared, ratio in per_core.items():
            report[f"ratio_{shared}_over_{ITEMROOMS}_per_core"] = ratio
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    marks = {"deliveries/s": ("load generator ceiling", top)} if top else {}
    bars = plot_bars(results, ceiling_runs)
    plot = "" if args.no_plot else write_plot(out, bars=bars, marks=marks)
    print(f"\n{total:.0f}s in all; results: {out}; server logs: {logs}/{plot}")
    # Non-zero when a number above cannot be trusted or a member missed something.
    checked = [*summaries, *([ceiling] if ceiling is not None else [])]
    bad = any(s.failed or s.lost or s.evicted or s.db_problems for s in checked)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
