"""Medians, ratios and verdicts from the runs: what the table and the JSON say.

Why medians: on a shared two-core machine one run in three can lose a third of
a core to somebody else; the median of interleaved runs ignores that run
without our having to guess which one it was.

Why a verdict per server: deliveries/s only measures the server when the
server's core is the one that is full. When the load generator's core is full
(by itself or by other tenants), the rate is a lower bound for the server, and
server CPU µs per delivery is the number to compare.

Why a ceiling: the load generator's CPU% alone does not say whether it was
the limit. It reads several frames per wake-up when it falls behind, so it
gets cheaper per frame as it is pushed, and 90% of its core at one server's
pace may still leave it room. bench/fanout.py therefore measures, in the same
interleaved runs, the generator against ``ceiling`` (bench/baselines/blast.py,
a server that costs almost nothing per delivery): the rate it reaches there is
the most the generator can receive. Every server's rate is reported as a
fraction of it, and a server that comes near it (``NEAR_CEILING``) is flagged
as possibly generator bound, whatever the CPU counters say.

Why the database is a column of its own: in the Redis and PostgreSQL scenarios
(``itemrooms-redis2``, ``itemrooms-postgres2``) "server" is the two itemrooms
processes together, and the private database (redis-server, or PostgreSQL with all
its backend processes), pinned to the same core, is reported beside them as "db";
"total" is both, the CPU that core spends per delivery. The table has those columns
only when a database-backed server is in it, so the default table is unchanged.
"""

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from statistics import median
from typing import Any

from bench.run import RunResult
from bench.servers import CEILING, SPECS

FULL_PCT = 85.0  # a core this busy (us + others) is the bottleneck
NOISY_PCT = 10.0  # others using this much of one of our cores make a run noisy
NEAR_CEILING = 0.8  # a rate this close to the generator's ceiling may be the generator's


@dataclass(frozen=True, slots=True)
class Summary:
    server: str
    runs: int
    failed: int
    rate: float  # median deliveries/s
    rate_min: float
    rate_max: float
    server_us: float  # median server CPU µs per delivery
    server_pct: float
    load_pct: float
    load_us: float  # median generator CPU µs per frame
    other_server_core: float  # median % of the server's core used by other processes
    other_load_core: float
    lost: int
    disorder: int
    evicted: dict[str, int]  # close code and reason -> members, over all runs
    problems: dict[str, int]  # server log problem lines by phase, over all runs
    setup_s: float
    verdict: str
    db: str | None = None  # "redis" or "postgres": the database columns apply
    db_us: float = 0.0  # median database CPU µs per delivery
    db_pct: float = 0.0
    total_us: float = 0.0  # median of (servers + database) CPU µs per delivery
    db_problems: int = 0  # problem lines in the database logs, over all runs
    process_us: dict[str, float] | None = None  # several processes: median µs/dlv each
    ceiling: float = 0.0  # the load generator's ceiling (deliveries/s) when measured
    of_ceiling: float = 0.0  # rate / ceiling


def verdict(server_full: bool, load_full: bool, others: float, of_ceiling: float = 0.0) -> str:
    """Who limited the rate: which cores were full, and how near the generator's ceiling.

    ``of_ceiling`` is the rate over the generator's measured ceiling (0: not measured)."""
    at = f"{100 * of_ceiling:.0f}% of the load generator's ceiling" if of_ceiling else ""
    if load_full and not server_full:
        text = "LOAD GENERATOR BOUND: its core was full, so deliveries/s is a lower bound"
    elif of_ceiling >= NEAR_CEILING:
        text = f"LOAD GENERATOR BOUND: at {at}, so deliveries/s is a lower bound"
        at = ""
    elif server_full and not load_full:
        text = "server bound (good: the server's core was the full one)"
    elif server_full and load_full and at:
        text = f"server bound: both cores full, but the rate was only {at}"
        at = ""
    elif server_full and load_full:
        text = "both cores full: the rate may be limited by either side"
    else:
        text = "neither core full: limited by latency (try a larger --window)"
    if at:
        text += f"; {at}"
    if others >= NOISY_PCT:
        text += f"; NOISY: other processes used {others:.0f}% of one of our cores"
    return text


def summarize(
    server: str, runs: list[RunResult], server_cpu: str, load_cpu: str, ceiling: float = 0.0
) -> Summary:
    """Medians of one server's runs; ``ceiling``: the generator's (deliveries/s), if measured."""
    ok = [r for r in runs if r.ok] or runs

    def med(values: list[float]) -> float:
        return median(values) if values else 0.0

    evicted: dict[str, int] = {}
    problems: dict[str, int] = {}
    for r in runs:
        for key, n in r.closes.items():
            evicted[key] = evicted.get(key, 0) + n
        for phase, n in r.log_problem_counts.items():
            problems[phase] = problems.get(phase, 0) + n
    rates = [r.deliveries_per_s for r in ok]
    rate = med(rates)
    of_ceiling = rate / ceiling if ceiling else 0.0
    other_server = med([r.other_busy_pct.get(server_cpu, 0.0) for r in ok])
    other_load = med([r.other_busy_pct.get(load_cpu, 0.0) for r in ok])
    server_pct = med([r.server_cpu_pct for r in ok])
    load_pct = med([r.load_cpu_pct for r in ok])
    db = SPECS[server].db if server in SPECS else None
    db_pct = med([r.db_cpu_pct for r in ok])
    process_us: dict[str, float] | None = None
    if any(r.server_cpu_by_process for r in ok):
        names = sorted({n for r in ok for n in r.server_cpu_by_process})
        process_us = {
            n: med(
                [
                    1e6 * r.server_cpu_by_process[n] / max(r.delivered, 1)
                    for r in ok
                    if n in r.server_cpu_by_process
                ]
            )
            for n in names
        }
    return Summary(
        server=server,
        runs=len(runs),
        failed=sum(1 for r in runs if not r.ok or r.error),
        rate=rate,
        rate_min=min(rates, default=0.0),
        rate_max=max(rates, default=0.0),
        server_us=med([r.server_us_per_delivery for r in ok]),
        server_pct=server_pct,
        load_pct=load_pct,
        load_us=med([r.load_us_per_frame for r in ok]),
        other_server_core=other_server,
        other_load_core=other_load,
        lost=sum(r.lost for r in runs),
        disorder=sum(r.disorder for r in runs),
        evicted=evicted,
        problems=problems,
        setup_s=med([r.setup_s for r in ok]),
        verdict=verdict(
            server_pct + db_pct + other_server >= FULL_PCT,
            load_pct + other_load >= FULL_PCT,
            max(other_server, other_load),
            of_ceiling,
        )
        if any(r.ok for r in runs)
        else "no run could be measured",
        db=db,
        db_us=med([r.db_us_per_delivery for r in ok]),
        db_pct=db_pct,
        total_us=med([r.server_us_per_delivery + r.db_us_per_delivery for r in ok]),
        db_problems=sum(len(r.db_log_problems) for r in runs),
        process_us=process_us,
        ceiling=ceiling,
        of_ceiling=of_ceiling,
    )


def run_line(r: RunResult) -> str:
    if not r.ok:
        return f"  {r.server:<10} run {r.run}: FAILED: {(r.error or '').splitlines()[0][:160]}"
    others = " ".join(f"{k} {v:.0f}%" for k, v in r.other_busy_pct.items())
    extra = f" lost {r.lost}" if r.lost else ""
    extra += f" closes {r.closes}" if r.closes else ""
    db = SPECS[r.server].db if r.server in SPECS else None
    if db is not None:
        extra = f" | {db} {r.db_us_per_delivery:4.1f} µs/delivery {r.db_cpu_pct:3.0f}%{extra}"
    return (
        f"  {r.server:<10} run {r.run}: {r.deliveries_per_s:>9,.0f} deliveries/s in "
        f"{r.elapsed_s:5.2f}s | server {r.server_us_per_delivery:5.1f} µs/delivery "
        f"{r.server_cpu_pct:3.0f}% | loadgen {r.load_cpu_pct:3.0f}% "
        f"({r.load_us_per_frame:4.1f} µs/frame) | others {others} | setup {r.setup_s:4.1f}s "
        f"(server CPU {r.server_setup_cpu_s:4.1f}s)"
        f"{extra}"
    )


def ceiling_cell(s: Summary) -> str:
    return f"{100 * s.of_ceiling:.0f}%" if s.of_ceiling else "-"


def table(summaries: list[Summary], title: str, ceiling: Summary | None = None) -> str:
    """Medians per server, the ceiling's row last, then the verdicts and the ceiling's."""
    if any(s.db for s in summaries):
        return db_table(summaries, title, ceiling)
    head = (
        f"{'server':<10} {'deliveries/s':>12} {'(min-max)':>19} {'of ceil':>7} "
        f"{'srv µs/dlv':>10} {'srv CPU':>7} {'load CPU':>8} {'load µs/f':>9} "
        f"{'others srv/load':>15} {'lost':>5} {'evicted':>7}"
    )
    lines = [title, head, "-" * len(head)]
    for s in [*summaries, *([ceiling] if ceiling else [])]:
        spread = f"({s.rate_min / 1000:,.1f}k-{s.rate_max / 1000:,.1f}k)"
        others = f"{s.other_server_core:.0f}%/{s.other_load_core:.0f}%"
        lines.append(
            f"{s.server:<10} {s.rate:>12,.0f} {spread:>19} {ceiling_cell(s):>7} "
            f"{s.server_us:>10.1f} {s.server_pct:>6.0f}% {s.load_pct:>7.0f}% {s.load_us:>9.1f} "
            f"{others:>15} {s.lost:>5} {sum(s.evicted.values()):>7}"
        )
    lines.append("")
    for s in summaries:
        lines.append(f"{s.server}: {s.verdict}")
        if s.failed:
            lines.append(f"{s.server}: {s.failed} run(s) failed or incomplete: see the JSON")
        if s.evicted:
            lines.append(f"{s.server}: members closed by the server: {s.evicted}")
        if any(s.problems.values()):
            lines.append(f"{s.server}: problem lines in the server log: {s.problems}")
    if ceiling is not None:
        lines += ["", *ceiling_lines(ceiling, summaries)]
    return "\n".join(lines)


def summarize_ceiling(runs: list[RunResult], server_cpu: str, load_cpu: str) -> Summary:
    """The ceiling runs: the figures of the fastest one, the spread of all of them.

    Not the median: other tenants and noise only ever slow a run down, and the
    ceiling is what the generator has been seen to receive. Every figure (CPU per
    frame, both cores) is that run's, so they describe one and the same run."""
    whole = summarize(CEILING, runs, server_cpu, load_cpu)
    ok = [r for r in runs if r.ok]
    if not ok:
        return whole
    best = max(ok, key=lambda r: r.deliveries_per_s)
    fastest = summarize(CEILING, [best], server_cpu, load_cpu)
    blast_full = fastest.server_pct + fastest.other_server_core >= FULL_PCT
    bound = ceiling_bound(fastest) and not blast_full
    role = "its ceiling" if bound else "a lower bound for its ceiling"
    return replace(
        fastest,
        runs=whole.runs,
        failed=whole.failed,
        rate_min=whole.rate_min,
        rate_max=whole.rate_max,
        lost=whole.lost,
        disorder=whole.disorder,
        evicted=whole.evicted,
        problems=whole.problems,
        verdict=f"the load generator's {role} (the fastest of {len(runs)} run(s))",
    )


def ceiling_bound(c: Summary) -> bool:
    """Whether the ceiling run was limited by the generator (then it is its ceiling)."""
    return c.load_pct + c.other_load_core >= FULL_PCT and c.rate > 0


def ceiling_lines(c: Summary, summaries: list[Summary]) -> list[str]:
    """What the ceiling run proves about the generator, and each server against it."""
    if not c.rate:
        return ["load generator ceiling: not measured (the ceiling runs failed: see the JSON)"]
    head = (
        f"load generator ceiling: {c.rate:,.0f} deliveries/s against the blast server "
        f"(bench/baselines/blast.py), the fastest of {c.runs} run(s) "
        f"({c.rate_min / 1000:,.1f}k-{c.rate_max / 1000:,.1f}k); in that run the generator "
        f"spent {c.load_us:.1f} µs of CPU per frame, its core {c.load_pct:.0f}% busy "
        f"(+{c.other_load_core:.0f}% others), the blast server's {c.server_pct:.0f}% "
        f"({c.server_us:.1f} µs/delivery)"
    )
    blast_full = c.server_pct + c.other_server_core >= FULL_PCT
    if ceiling_bound(c) and not blast_full:
        why = "  the generator's core was the full one: this is the most it can receive"
    elif ceiling_bound(c):
        why = "  both cores were full: the generator can receive at least this much"
    elif blast_full:
        why = (
            f"  the server's core was full (blast {c.server_pct:.0f}% + others "
            f"{c.other_server_core:.0f}%), not the generator's: the ceiling is higher still"
        )
    else:
        why = "  neither core was full: the ceiling is higher still (try a larger --window)"
    if c.other_load_core >= NOISY_PCT or c.other_server_core >= NOISY_PCT:
        why += "; NOISY: rerun when the machine is quieter"
    lines = [head, why]
    for s in summaries:
        if s.rate:
            lines.append(
                f"  {s.server}: {100 * s.of_ceiling:.0f}% of the ceiling; generator core "
                f"{s.load_pct:.0f}% busy (+{s.other_load_core:.0f}% others), "
                f"{s.load_us:.1f} µs per frame"
            )
    if c.failed:
        lines.append(f"  {c.failed} ceiling run(s) failed or incomplete: see the JSON")
    return lines


def db_table(summaries: list[Summary], title: str, ceiling: Summary | None = None) -> str:
    """The table with the database's CPU beside the servers' (srv = all itemrooms
    processes; db = redis-server, or PostgreSQL with its backend processes)."""
    rows = [*summaries, *([ceiling] if ceiling else [])]
    width = max(10, *(len(s.server) for s in rows))
    head = (
        f"{'server':<{width}} {'deliveries/s':>12} {'(min-max)':>19} {'of ceil':>7} "
        f"{'srv µs/dlv':>10} {'db µs/dlv':>12} {'total µs/dlv':>12} {'srv CPU':>7} "
        f"{'db CPU':>9} {'load CPU':>8} {'load µs/f':>9} {'others srv/load':>15} "
        f"{'lost':>5} {'evicted':>7}"
    )
    lines = [title, head, "-" * len(head)]
    for s in rows:
        spread = f"({s.rate_min / 1000:,.1f}k-{s.rate_max / 1000:,.1f}k)"
        others = f"{s.other_server_core:.0f}%/{s.other_load_core:.0f}%"
        db_us = f"{s.db_us:.1f}" if s.db else "-"
        db_pct = f"{s.db_pct:.0f}%" if s.db else "-"
        lines.append(
            f"{s.server:<{width}} {s.rate:>12,.0f} {spread:>19} {ceiling_cell(s):>7} "
            f"{s.server_us:>10.1f} {db_us:>12} {s.total_us:>12.1f} {s.server_pct:>6.0f}% "
            f"{db_pct:>9} {s.load_pct:>7.0f}% {s.load_us:>9.1f} {others:>15} {s.lost:>5} "
            f"{sum(s.evicted.values()):>7}"
        )
    lines.append("")
    for s in summaries:
        lines.append(f"{s.server}: {s.verdict}")
        if s.process_us:
            split = ", ".join(f"{n} {us:.1f}" for n, us in s.process_us.items())
            lines.append(f"{s.server}: server µs/dlv by process: {split}")
        if s.failed:
            lines.append(f"{s.server}: {s.failed} run(s) failed or incomplete: see the JSON")
        if s.evicted:
            lines.append(f"{s.server}: members closed by the server: {s.evicted}")
        if any(s.problems.values()):
            lines.append(f"{s.server}: problem lines in the server logs: {s.problems}")
        if s.db_problems:
            lines.append(f"{s.server}: {s.db_problems} problem line(s) in the {s.db} logs")
    if ceiling is not None:
        lines += ["", *ceiling_lines(ceiling, summaries)]
    return "\n".join(lines)


def ratios(a: Summary, b: Summary) -> dict[str, float]:
    """``a`` over ``b``: above 1 means a delivers faster / spends more CPU per delivery."""
    return {
        "deliveries_per_s": a.rate / b.rate if b.rate else 0.0,
        "server_us_per_delivery": a.server_us / b.server_us if b.server_us else 0.0,
    }


def per_core_ratios(a: Summary, b: Summary) -> dict[str, float]:
    """``a`` (servers + database on one core) over ``b`` (one server on the same core).

    - ``deliveries_per_s``: both ran on one core, so this is the per-core rate
      ratio, meaningful when both were server bound;
    - ``deliveries_per_cpu_s``: deliveries per CPU-second spent on that core
      (servers + database), b's CPU per delivery over a's: the per-core ratio that
      does not depend on which side was the bottleneck;
    - ``server_us_per_delivery``, ``total_us_per_delivery``: a's CPU over b's,
      without and with the database (above 1 = a spends more).
    """
    return {
        "deliveries_per_s": a.rate / b.rate if b.rate else 0.0,
        "deliveries_per_cpu_s": b.total_us / a.total_us if a.total_us else 0.0,
        "server_us_per_delivery": a.server_us / b.server_us if b.server_us else 0.0,
        "total_us_per_delivery": a.total_us / b.total_us if b.total_us else 0.0,
    }


def write_report(
    out: Path,
    title: str,
    cfg: Any,
    args: argparse.Namespace,
    env: dict[str, Any],
    results: Mapping[Any, Sequence[Any]],
    summary: Mapping[str, Any],
    fields: Mapping[str, Any],
    total_s: float,
) -> None:
    """Write a scenario's JSON in the layout the memory, storm, small-rooms and
    slow-consumer scenarios share: title, config (``cfg``, a dataclass, with the
    runs and servers), environment, every run (``to_json()``), summary, then
    their own ``fields`` (ratios, targets, problems) and the total time."""
    report = {
        "title": title,
        "config": {**asdict(cfg), "runs": args.runs, "servers": args.servers},
        "environment": env,
        "runs": [r.to_json() for runs in results.values() for r in runs],
        "summary": summary,
        **fields,
        "total_s": round(total_s, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
