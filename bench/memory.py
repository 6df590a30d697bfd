"""Idle memory per connection: N authenticated members doing nothing, server RSS delta / N.

    python -m bench.memory            # 10,000 connections, 3 interleaved runs per server
    python -m bench.memory --quick    # smoke run: 500 connections

Each run starts the server fresh, opens and closes 20 warm-up connections,
reads the server's RSS (``VmRSS``), opens the N connections (``--load-procs``
conngen processes, rooms of ``--room-size``), waits 2 s and reads RSS again.
KiB per connection = (after - before) / connections open. The target in
issue 7: itemrooms at most 16 KiB per connection.
"""

import sys

from bench.connbench import parse_args, run_all
from bench.conns import ConnResult
from bench.servers import ITEMROOMS

TARGET_KIB = 16.0


def check(name: str, runs: list[ConnResult]) -> list[str]:
    problems = []
    for r in runs:
        if not r.ok or r.error:
            problems.append(f"{name} run {r.run}: {(r.error or 'no connection').splitlines()[0]}")
        elif set(r.good) != {"welcome"}:
            problems.append(f"{name} run {r.run}: not every connection welcomed: {r.good}")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = parse_args("idle", argv, full=10_000, quick=500, procs=4)
    title = (
        f"idle memory: {args.connections:,} authenticated connections in rooms of "
        f"{args.room_size}, {args.load_procs} conngen process(es), {args.runs} run(s) per "
        f"server, interleaved; medians (target: itemrooms <= {TARGET_KIB:g} KiB/connection)"
    )
    metrics = {
        "KiB/connection": lambda r: r.kib_per_connection,
        "RSS before MiB": lambda r: r.rss_before_kib / 1024,
        "RSS after MiB": lambda r: r.rss_after_kib / 1024,
        "handshakes/s": lambda r: r.handshakes_per_s,
    }

    def line(r: ConnResult) -> str:
        return (
            f"{r.kib_per_connection:6.1f} KiB/connection ({r.rss_before_kib / 1024:.0f} -> "
            f"{r.rss_after_kib / 1024:.0f} MiB, {r.open_connections:,} open) "
            f"in {r.elapsed_s:.1f}s"
        )

    status = run_all("idle", args, metrics, title, check, line)
    if ITEMROOMS in args.servers:
        print(f"target: itemrooms <= {TARGET_KIB:g} KiB/connection (see the table)")
    return status


if __name__ == "__main__":
    sys.exit(main())
