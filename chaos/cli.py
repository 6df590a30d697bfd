"""``python -m chaos``: options, then one run, then the report; exit 1 on a broken rule.

Point it at your own configuration: every ``ITEMROOMS_*`` variable of the
environment, and of ``--env-file``, goes to the servers (the kit sets only the
backend, its URL and a key prefix or schema of the run's own, and a history large
enough to check).
"""

import argparse
import asyncio
import dataclasses
import os
import sys
from pathlib import Path

from chaos.faults import FAULTS
from chaos.options import Options, full_run, read_env_file, short_run
from chaos.run import run, validate


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m chaos",
        description="Fault injection for itemrooms: a private Redis or PostgreSQL, several "
        "processes, busy clients, faults, and strict checks after each.",
        epilog="faults: " + "; ".join(f"{f.name}: {f.summary}" for f in FAULTS.values()),
    )
    parser.add_argument("--short", action="store_true", help="the quick run (part of make test)")
    parser.add_argument(
        "--backend",
        choices=("redis", "postgres"),
        default="redis",
        help="what the processes share: a private redis-server (default) or PostgreSQL",
    )
    parser.add_argument("--faults", help="comma list of faults to run, in order")
    parser.add_argument("--processes", type=int, help="itemrooms serve processes (default 3)")
    parser.add_argument("--publishers", type=int, help="WebSocket publishers")
    parser.add_argument("--readers", type=int, help="WebSocket readers")
    parser.add_argument("--rate", type=float, help="publishes per second per publisher")
    parser.add_argument("--before", type=float, help="seconds of traffic before each fault")
    parser.add_argument("--after", type=float, help="seconds of traffic after each fault")
    parser.add_argument("--pause", type=float, help="seconds a pause or partition lasts")
    parser.add_argument("--redis-server", help="the redis-server binary (default: on PATH)")
    parser.add_argument("--itemrooms", type=Path, help="the itemrooms console script")
    parser.add_argument(
        "--env-file",
        type=Path,
        action="append",
        default=[],
        help="KEY=VALUE lines of ITEMROOMS_* settings (repeatable)",
    )
    netns = parser.add_mutually_exclusive_group()
    netns.add_argument(
        "--netns",
        dest="netns",
        action="store_true",
        default=None,
        help="processes in network namespaces (needs root; default in the full run when available)",
    )
    netns.add_argument(
        "--no-netns",
        dest="netns",
        action="store_false",
        help="no namespaces (and so no partition fault)",
    )
    parser.add_argument("--keep", action="store_true", help="keep logs and backend data")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)

    env = {k: v for k, v in os.environ.items() if k.startswith("ITEMROOMS_")}
    for path in args.env_file:
        env.update(read_env_file(path))
    if args.short:
        options = short_run(env, backend=args.backend)
        if args.netns:
            options = dataclasses.replace(options, netns=True)
    else:
        wanted = args.netns
        if wanted is None:
            from chaos.netns import Namespaces

            wanted = Namespaces.available() is None
        options = full_run(env, netns=wanted, backend=args.backend)
    changes: dict[str, object] = {"keep": args.keep, "verbose": args.verbose}
    for name, field in (
        ("processes", "processes"),
        ("publishers", "publishers"),
        ("readers", "readers"),
        ("rate", "rate"),
        ("before", "before_s"),
        ("after", "after_s"),
        ("pause", "pause_s"),
        ("redis_server", "redis_server"),
        ("itemrooms", "itemrooms"),
    ):
        value = getattr(args, name)
        if value is not None:
            changes[field] = value
    if args.faults:
        changes["faults"] = tuple(f.strip() for f in args.faults.split(",") if f.strip())
    return dataclasses.replace(options, **changes)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    problems = validate(options)
    if problems:
        for problem in problems:
            print(f"chaos: {problem}", file=sys.stderr)
        return 2
    skipped = "" if options.netns else " (no network namespaces: partition skipped)"
    print(
        f"chaos: {options.processes} processes on {options.backend}, "
        f"faults {', '.join(options.faults)}{skipped}",
        file=sys.stderr,
    )
    outcome = asyncio.run(run(options))
    print(outcome.report())
    return 0 if outcome.passed else 1
