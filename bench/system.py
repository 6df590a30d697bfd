"""What the benchmark reads from Linux: CPU time and RSS per process, per-core CPU, fd limits;
where the orchestrator runs (pinning) and what a run's JSON records about the code and machine.

Why /proc and not psutil: it is not a dependency of the project, and the few
numbers we need are two fields of ``/proc/<pid>/stat`` (whole-process user +
system time, all threads included) and the per-core lines of ``/proc/stat``.
Both tick at ``SC_CLK_TCK`` (usually 100 Hz, 10 ms), which is fine for
measurement windows of seconds.

Why pinning and provenance live here too: every scenario (fan-out, latency,
connections, small rooms, slow consumer) pins itself and records the same
environment, and this module imports nothing but the standard library, so the
scenarios that are kept apart from the fan-out's modules can share it.
"""

import argparse
import hashlib
import os
import platform
import resource
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def raise_nofile_limit(wanted: int = 65536) -> int:
    """Raise the soft open-file limit (every member socket is a descriptor); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(max(soft, wanted), hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a whole process; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after it are fixed.
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants, live ones read
    one by one and exited ones from their parents' counts of waited-for children."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_path.read_text()
        except OSError:
            continue  # exited meanwhile
        fields = stat[stat.rfind(")") + 2 :].split()
        child = int(stat_path.parent.name)
        children.setdefault(int(fields[1]), []).append(child)
        # utime, stime, and cutime, cstime: its own, and its waited-for children's
        times[child] = sum(int(f) for f in fields[11:15]) * TICK_S
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0.0)
        todo.extend(children.get(current, []))
    return total


@dataclass(frozen=True, slots=True)
class CoreTimes:
    busy_s: float  # running anything, this VM's kernel included
    steal_s: float  # wanted to run, but the hypervisor ran another guest
    total_s: float


def core_times(cores: tuple[int, ...]) -> dict[int, CoreTimes]:
    """Busy, stolen and total seconds of each core so far, from ``/proc/stat``."""
    result: dict[int, CoreTimes] = {}
    with open("/proc/stat") as f:
        for line in f:
            name, _, rest = line.partition(" ")
            if not name.startswith("cpu") or name == "cpu":
                continue
            core = int(name[3:])
            if core not in cores:
                continue
            # user nice system idle iowait irq softirq steal (guest times are inside user)
            v = [int(x) for x in rest.split()[:8]]
            total = sum(v)
            busy = total - v[3] - v[4] - v[7]
            result[core] = CoreTimes(busy * TICK_S, v[7] * TICK_S, total * TICK_S)
    return result


def process_rss_kib(pid: int) -> int | None:
    """Resident set size of a process in KiB (``VmRSS``); None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def pin_self(args: argparse.Namespace, prog: str) -> None:
    """Keep the orchestrator (mostly idle while measuring) off the server's core."""
    if args.no_pin:
        return
    allowed = os.sched_getaffinity(0)
    if allowed == {args.load_cpu} and args.server_cpu != args.load_cpu:
        return  # pinned already (python -m bench runs every scenario in one process)
    if {args.server_cpu, args.load_cpu} - allowed or args.server_cpu == args.load_cpu:
        sys.exit(
            f"{prog}: cannot pin to cores {args.server_cpu} and {args.load_cpu} "
            f"(allowed: {sorted(allowed)}); use --server-cpu/--load-cpu or --no-pin"
        )
    os.sched_setaffinity(0, {args.load_cpu})


def git(*cmd: str) -> str:
    done = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, timeout=10)
    return done.stdout.strip()


def code_hash() -> str:
    """A short hash of the server code as it is on disk (api/, auth/), committed or not:
    equal at the start and the end of a benchmark = nobody edited it meanwhile."""
    digest = hashlib.sha1()
    for package in ("api", "auth"):
        for path in sorted((REPO / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(REPO)).encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def environment(redis_server: str | None = None, postgres: bool = False) -> dict[str, Any]:
    """What a run's JSON records about the code and the machine (with ``redis_server``,
    the Redis scenario's: redis-py's version and the binary's own; with ``postgres``,
    asyncpg's and PostgreSQL's)."""
    packages = ["fastapi", "starlette", "uvicorn", "uvloop", "websockets", "python-jose"]
    if redis_server is not None:
        packages.append("redis")
    if postgres:
        packages.append("asyncpg")
    env = {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--", "api", "auth")),
        # The server code measured (api/ and auth/ on disk; compared again at the end).
        "api_auth_sha1": code_hash(),
        "python": platform.python_version(),
        "packages": {name: version(name) for name in packages},
        "cpus": os.cpu_count(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }
    if redis_server is not None:
        try:
            done = subprocess.run(
                [redis_server, "--version"], capture_output=True, text=True, timeout=10
            )
            env["redis_server"] = done.stdout.strip()
        except OSError as exc:
            env["redis_server"] = f"unavailable: {exc}"
    if postgres:
        from chaos.postgres_server import binary

        try:
            done = subprocess.run(
                [binary("postgres"), "--version"], capture_output=True, text=True, timeout=10
            )
            env["postgres"] = done.stdout.strip()
        except (OSError, RuntimeError) as exc:
            env["postgres"] = f"unavailable: {exc}"
    return env


def finish_environment(env: dict[str, Any]) -> str | None:
    """Record the server code's hash at the end; a warning line if it changed."""
    env["api_auth_sha1_at_end"] = code_hash()
    env["commit_at_end"] = git("rev-parse", "HEAD")
    if env["api_auth_sha1_at_end"] != env["api_auth_sha1"]:
        return "WARNING: the server code (api/, auth/) changed while the benchmark ran"
    return None
