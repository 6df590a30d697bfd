"""Big rooms: one room fills with N members within a few seconds while one member
publishes steadily, on today's code and on a baseline commit, in one invocation.

    python -m bench.bigroom                 # 10,000 members; the baseline at 2,000
    python -m bench.bigroom --quick         # smoke run: 300 members, baseline at 100
    python -m bench.bigroom --baseline REV --baseline-members 1000 --backends memory

Per backend (memory: one process; redis: one process and a private redis-server),
three runs: today's code at ``--members``, today's and the baseline's at
``--baseline-members`` (the baseline's presence costs O(N²): at 10,000 members it
would take many minutes). The baseline is the repository's own tree at ``--baseline``
(``git archive``), imported ahead of the installed package, and served the same way.

Server and database are pinned to ``--server-cpu``, the load generator
(bench/bigroomgen.py) to ``--load-cpu``. Reported, per run: the storm's server (and
redis-server) CPU seconds, from the first join until every probe knows the whole
room; presence frames in total and per member; welcome bytes; the publisher's
message latency at the probes, quiet (before the storm) and during the storm; and the
load generator's own CPU seconds (if it nears the storm's length, the generator, not
the server, set the pace). A run fails on any failed join, any close, or a storm that
did not settle.
"""

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

from bench.children import BenchError, Child, clean_env, free_port, pinned
from bench.plot import bar_panel, write_png
from bench.servers import ITEMROOMS, start_database, start_server, stop_server, ws_url
from bench.system import git, raise_nofile_limit

ROOT = Path(__file__).resolve().parent.parent
# The last commit before issue 16 (presence in batches, per user, counted in large rooms).
BASELINE = "addc9ba"
SECRET = "bigroom-bench-secret-0123456789abcdef"
RESULTS = ROOT / "bench" / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.bigroom", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 300 members, baseline 100")
    p.add_argument("--members", type=int, default=None, help="today's code (10,000)")
    p.add_argument("--baseline-members", type=int, default=None, help="both codes (2,000)")
    p.add_argument("--baseline", default=BASELINE, help=f"the commit to compare ({BASELINE})")
    p.add_argument("--backends", default="memory,redis", help="comma list: memory, redis")
    p.add_argument("--join-s", type=float, default=None, help="the storm's length (10 s)")
    p.add_argument("--rate", type=float, default=2.0, help="publishes per second (2)")
    p.add_argument("--probes", type=int, default=50, help="members measuring latency (50)")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--no-pin", action="store_true", help="do not pin (a one-core machine)")
    p.add_argument("--redis-server", default="redis-server")
    p.add_argument("--out", type=Path, default=None, help="JSON path (bench/results/...)")
    args = p.parse_args(argv)
    args.members = args.members or (300 if args.quick else 10_000)
    args.baseline_members = args.baseline_members or (100 if args.quick else 2000)
    args.join_s = args.join_s or (1.0 if args.quick else 10.0)
    args.quiet_s = 0.5 if args.quick else 5.0
    if args.no_pin:
        args.server_cpu = args.load_cpu = None
    return args


def baseline_tree(rev: str, into: Path) -> Path:
    """The baseline's api/ and auth/ as the itemrooms namespace package, under ``into``:
    put first on PYTHONPATH, it is what ``itemrooms serve`` imports."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "api", "auth"],
        capture_output=True,
        check=True,
    ).stdout
    package = into / "itemrooms"
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(package, filter="data")
    return into


def one_run(
    args: argparse.Namespace, backend: str, members: int, code: str, path: Path | None
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="itemrooms-bigroom-"))
    database = None
    server: Child | None = None
    try:
        settings: dict[str, str] = {}
        if backend == "redis":
            database = start_database(
                "redis", cpu=args.server_cpu, cwd=workdir, redis_server=args.redis_server
            )
            settings = database.settings
        env = {
            "ITEMROOMS_MAX_CONNECTIONS": str(members * 2 + 1000),
            "ITEMROOMS_ACCESS_LOG": "false",
        }
        if path is not None:
            env["PYTHONPATH"] = str(path)
        port = free_port()
        server = start_server(
            ITEMROOMS,
            port,
            secret=SECRET,
            send_queue=4096,
            cpu=args.server_cpu,
            cwd=workdir,
            backend=settings or None,
            label=f"itemrooms ({code})",
            extra_env=env,
        )
        pids = [server.pid] + ([database.child.pid] if database is not None else [])
        argv = [sys.executable, "-m", "bench.bigroomgen", "--url", ws_url(port)]
        argv += ["--members", str(members), "--probes", str(args.probes)]
        argv += ["--join-s", str(args.join_s), "--quiet-s", str(args.quiet_s)]
        argv += ["--rate", str(args.rate)]
        for pid in pids:
            argv += ["--pid", str(pid)]
        done = subprocess.run(
            pinned(args.load_cpu, argv),
            capture_output=True,
            text=True,
            env=clean_env({"BENCH_JWT_SECRET": SECRET}),
            cwd=str(ROOT),
            timeout=600,
        )
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines or lines[-1].get("event") != "done":
            raise BenchError(f"bigroomgen failed: {done.stdout[-800:]}{done.stderr[-800:]}")
        result: dict[str, Any] = lines[-1]
        cpu = result.pop("cpu_s")
        result["server_cpu_s"] = cpu[str(server.pid)]
        result["db_cpu_s"] = cpu[str(database.child.pid)] if database is not None else None
        result.update(backend=backend, code=code)
        return result
    finally:
        if server is not None:
            stop_server(server)
        if database is not None:
            database.stop()


def problems(result: dict[str, Any]) -> list[str]:
    tag = f"{result['code']} {result['backend']} {result['members']:,}"
    found = []
    if result["failed_count"]:
        found.append(f"{tag}: {result['failed_count']} joins failed: {result['failed_joins']}")
    if result["closes"]:
        found.append(f"{tag}: connections closed: {result['closes']}")
    if not result["settled"]:
        found.append(f"{tag}: the probes never knew the whole room")
    return found


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| code | backend | members | storm s | server CPU s | redis CPU s | presence frames"
        " | per member (max) | welcome MB | quiet p99 ms | storm p99 ms | load CPU s |"
    )
    rows = [head, "|" + "---|" * 12]
    for r in results:
        db = "-" if r["db_cpu_s"] is None else f"{r['db_cpu_s']:.2f}"
        rows.append(
            f"| {r['code']} | {r['backend']} | {r['members']:,} | {r['settled_s']:.1f} "
            f"| {r['server_cpu_s']:.2f} | {db} | {r['presence_frames']:,} "
            f"| {r['presence_per_member_mean']:.1f} ({r['presence_per_member_max']}) "
            f"| {r['welcome_bytes'] / 1e6:.2f} | {ms(r['quiet_p99_ms'])} "
            f"| {ms(r['storm_p99_ms'])} | {r['load_cpu_s']:.1f} |"
        )
    return "\n".join(rows)


def ratios(results: list[dict[str, Any]], members: int) -> list[str]:
    lines = []
    for backend in sorted({r["backend"] for r in results}):
        at = {r["code"]: r for r in results if r["backend"] == backend and r["members"] == members}
        if "today" in at and "baseline" in at:
            base, now = at["baseline"], at["today"]
            cpu = base["server_cpu_s"] / max(now["server_cpu_s"], 1e-9)
            frames = base["presence_frames"] / max(now["presence_frames"], 1)
            lines.append(
                f"{backend} at {members:,} members: server CPU for the storm x{cpu:.1f} lower, "
                f"presence frames x{frames:.0f} fewer than the baseline"
            )
    for r in results:
        if r["code"] == "today" and r["quiet_p99_ms"] and r["storm_p99_ms"]:
            lines.append(
                f"{r['backend']} at {r['members']:,}: storm p99 / quiet p99 = "
                f"x{r['storm_p99_ms'] / r['quiet_p99_ms']:.2f}"
            )
    return lines


def draw(axes: Sequence[Any], results: list[dict[str, Any]]) -> None:
    def label(r: dict[str, Any]) -> str:
        return f"{r['code']}\n{r['backend']} {r['members']:,}"

    def p99_ratio(r: dict[str, Any]) -> float:
        return float(r["storm_p99_ms"] or 0) / float(r["quiet_p99_ms"] or 1)

    panels: list[tuple[str, Callable[[dict[str, Any]], float]]] = [
        ("server CPU s, the storm", lambda r: float(r["server_cpu_s"])),
        ("presence frames per member", lambda r: float(r["presence_per_member_mean"])),
        ("storm p99 / quiet p99", p99_ratio),
    ]
    for ax, (title, value) in zip(axes, panels, strict=True):
        bar_panel(ax, title, {label(r): [value(r)] for r in results})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile_limit()
    backends = [b for b in args.backends.split(",") if b]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="itemrooms-baseline-") as tmp:
        base_path = baseline_tree(args.baseline, Path(tmp))
        runs = [
            ("baseline", args.baseline_members, base_path),
            ("today", args.baseline_members, None),
            ("today", args.members, None),
        ]
        for backend in backends:
            for code, members, path in dict.fromkeys(runs):  # each once, in order
                print(f"{code} {backend} {members:,} members ...", flush=True)
                result = one_run(args, backend, members, code, path)
                results.append(result)
                print(f"  {json.dumps(result)}", flush=True)
    print()
    print(
        f"big room: {args.probes} probes and a publisher at {args.rate:g}/s, then N members "
        f"joining over {args.join_s:g} s; baseline {args.baseline} "
        f"({git('rev-parse', '--short', args.baseline)})"
    )
    print(table(results))
    for line in ratios(results, args.baseline_members):
        print(line)
    found = [p for r in results for p in problems(r)]
    out = args.out or RESULTS / f"bigroom{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results, "problems": found}, indent=2))
    plotted = write_png(out, 3, lambda axes: draw(axes, results))
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}{plotted}")
    for p in found:
        print(f"PROBLEM: {p}")
    return 1 if found else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
