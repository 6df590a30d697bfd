"""The servers under test, each started the way its users would start it.

itemrooms through its own CLI (``itemrooms serve``), so the benchmark measures
what ships: the same app factory, uvicorn options and logging. The tutorial
baseline through uvicorn with those same options, the plain ``websockets``
server through its own ``serve()`` (both in bench/baselines/). Every run
gets fresh processes: no room, history or allocator state carries over.

``itemrooms-redis2`` is one room served by two ``itemrooms serve`` processes
(two ports, ``ITEMROOMS_BACKEND=redis``) and a private ``redis-server`` started
for the run, without persistence; the members are split between the two
processes by the load generator. Two separate processes rather than
``--workers 2``: the benchmark decides which member lands on which process
(the kernel would, behind one port) and reads each process's CPU time.
``itemrooms-redis1`` (one process, Redis backend; only with ``--servers``)
tells the Redis backend's own cost apart from that of two processes sharing
one core. ``itemrooms-postgres2`` and ``itemrooms-postgres1`` are the same on a
private PostgreSQL cluster made for the run (``initdb``; fsync and synchronous
commit on, as a team's database runs).
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.baselines.blast import READY as BLAST_READY
from bench.baselines.plain_websockets import READY as PLAIN_READY
from bench.children import BenchError, Child, clean_env, free_port

STARTED = "Uvicorn running on"
REDIS_READY = "Ready to accept connections"
POSTGRES_READY = "database system is ready to accept connections"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
ROOM = "bench"
ITEMROOMS = "itemrooms"
TUTORIAL = "tutorial"
PLAIN = "plain"  # the websockets library's own server and broadcast()
ITEMROOMS_REDIS2 = "itemrooms-redis2"
ITEMROOMS_REDIS1 = "itemrooms-redis1"  # diagnostic: the Redis backend, one process
ITEMROOMS_POSTGRES2 = "itemrooms-postgres2"
ITEMROOMS_POSTGRES1 = "itemrooms-postgres1"  # the PostgreSQL backend, one process
CEILING = "ceiling"  # bench/baselines/blast.py: the load generator's own ceiling
# Diagnostics (only with --servers): itemrooms inside a host app (bench/baselines/
# embedded.py), with our WebSocket implementation and with uvicorn's stock one.
EMBEDDED = "embedded"
EMBEDDED_STOCK = "embedded-stock-ws"


@dataclass(frozen=True, slots=True)
class ServerSpec:
    name: str
    auth: str  # how its members send the token: "header" or "query"
    presence: bool  # whether members are told about each other (the ready barrier)
    processes: int = 1  # server processes sharing the room (members split evenly)
    # The backend's database, started privately per run: "redis", "postgres" or None.
    db: str | None = None


SPECS = {
    ITEMROOMS: ServerSpec(ITEMROOMS, auth="header", presence=True),
    TUTORIAL: ServerSpec(TUTORIAL, auth="query", presence=False),
    PLAIN: ServerSpec(PLAIN, auth="header", presence=False),
    ITEMROOMS_REDIS2: ServerSpec(
        ITEMROOMS_REDIS2, auth="header", presence=True, processes=2, db="redis"
    ),
    ITEMROOMS_REDIS1: ServerSpec(
        ITEMROOMS_REDIS1, auth="header", presence=True, processes=1, db="redis"
    ),
    ITEMROOMS_POSTGRES2: ServerSpec(
        ITEMROOMS_POSTGRES2, auth="header", presence=True, processes=2, db="postgres"
    ),
    ITEMROOMS_POSTGRES1: ServerSpec(
        ITEMROOMS_POSTGRES1, auth="header", presence=True, processes=1, db="postgres"
    ),
    CEILING: ServerSpec(CEILING, auth="header", presence=False),
    EMBEDDED: ServerSpec(EMBEDDED, auth="header", presence=True),
    EMBEDDED_STOCK: ServerSpec(EMBEDDED_STOCK, auth="header", presence=True),
}


def ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/items/{ROOM}/ws"


def start_server(
    name: str,
    port: int,
    *,
    secret: str,
    send_queue: int,
    cpu: int | None,
    cwd: Path,
    backend: dict[str, str] | None = None,
    label: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Child:
    """Start ``name`` on ``port`` and wait until it listens.

    For itemrooms, ``backend`` holds the ``ITEMROOMS_BACKEND`` settings of a shared
    database (``Database.settings``); the processes of one run get the same ones, or
    they share no room. Without it: the memory backend."""
    bin_dir = Path(sys.executable).parent
    if name in (ITEMROOMS, EMBEDDED, EMBEDDED_STOCK) or SPECS[name].db is not None:
        argv = [str(bin_dir / "itemrooms"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        if name in (EMBEDDED, EMBEDDED_STOCK):
            argv = [sys.executable, "-m", "bench.baselines.embedded", "--port", str(port)]
            argv += ["--stock-ws"] if name == EMBEDDED_STOCK else []
        env = clean_env(
            {
                "ITEMROOMS_JWT_SECRET": secret,
                "ITEMROOMS_ENV": "production",
                **(backend or {"ITEMROOMS_BACKEND": "memory"}),
                # Large enough that nobody is evicted as a slow consumer while the
                # generator catches up; --send-queue 1024 measures the default.
                "ITEMROOMS_SEND_QUEUE": str(send_queue),
                # One publisher sends as fast as the room absorbs: not a flood to limit.
                "ITEMROOMS_RATE_LIMIT": "1000000000",
                **(extra_env or {}),
            }
        )
        ready = STARTED
    elif name == CEILING:
        argv = [sys.executable, "-m", "bench.baselines.blast", "--port", str(port)]
        env = clean_env({})
        ready = BLAST_READY
    elif name == PLAIN:
        argv = [sys.executable, "-m", "bench.baselines.plain_websockets", "--port", str(port)]
        env = clean_env({"BENCH_JWT_SECRET": secret})
        ready = PLAIN_READY
    else:
        argv = [sys.executable, "-m", "bench.baselines.tutorial_manager", "--port", str(port)]
        env = clean_env({"BENCH_JWT_SECRET": secret})
        ready = STARTED
    child = Child(label or name, argv, cpu=cpu, env=env, cwd=str(cwd))
    try:
        child.wait_line(lambda line: ready in line, START_TIMEOUT_S, f"'{ready}'")
    except BaseException:
        child.stop(signal.SIGKILL, STOP_TIMEOUT_S)
        raise
    return child


def stop_server(child: Child) -> int | None:
    """SIGINT: uvicorn's graceful shutdown (bounded by its own timeout), then SIGKILL."""
    return child.stop(signal.SIGINT, STOP_TIMEOUT_S)


@dataclass
class Database:
    """The private database of a run (redis-server, or a PostgreSQL cluster), pinned
    with the servers; ``settings`` are the itemrooms processes' backend settings."""

    kind: str
    child: Child
    settings: dict[str, str]
    workdir: Path | None = None  # PostgreSQL's cluster, removed at stop

    def stop(self) -> int | None:
        # Redis without persistence exits at once on SIGTERM; PostgreSQL's SIGINT is a
        # fast shutdown (connections closed, a checkpoint).
        code = self.child.stop(signal.SIGTERM if self.kind == "redis" else signal.SIGINT, 30)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return code


def start_database(kind: str, *, cpu: int | None, cwd: Path, redis_server: str) -> Database:
    port = free_port()
    if kind == "redis":
        child = start_redis(redis_server, port, cpu=cpu, cwd=cwd)
        settings = {"ITEMROOMS_BACKEND": "redis"}
        settings["ITEMROOMS_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        settings["ITEMROOMS_REDIS_PREFIX"] = "bench:"
        return Database(kind, child, settings)
    workdir = Path(tempfile.mkdtemp(prefix="itemrooms-bench-pg-"))
    try:
        child = start_postgres(workdir, port, cpu=cpu, cwd=cwd)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    settings = {"ITEMROOMS_BACKEND": "postgres", "ITEMROOMS_POSTGRES_SCHEMA": "bench"}
    settings["ITEMROOMS_POSTGRES_URL"] = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    return Database(kind, child, settings, workdir)


def start_redis(binary: str, port: int, *, cpu: int | None, cwd: Path) -> Child:
    """A private redis-server on ``port``: loopback only, no RDB, no AOF, logs to stdout."""
    if shutil.which(binary) is None:
        raise BenchError(f"{binary} not found: install Redis or pass --redis-server PATH")
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    argv += ["no", "--daemonize", "no", "--logfile", "", "--loglevel", "notice"]
    child = Child("redis-server", argv, cpu=cpu, env=clean_env({}), cwd=str(cwd))
    try:
        child.wait_line(lambda line: REDIS_READY in line, START_TIMEOUT_S, f"'{REDIS_READY}'")
    except BaseException:
        child.stop(signal.SIGKILL, STOP_TIMEOUT_S)
        raise
    return child


def start_postgres(workdir: Path, port: int, *, cpu: int | None, cwd: Path) -> Child:
    """A PostgreSQL cluster of its own on ``port`` (loopback only), with the defaults a
    team's database has (fsync, synchronous commit), logging to stderr. As root, it
    runs as the ``postgres`` user (PostgreSQL refuses root)."""
    from chaos.postgres_server import binary

    user = "postgres" if os.geteuid() == 0 else None
    if user is not None:
        import pwd

        os.chown(workdir, pwd.getpwnam(user).pw_uid, -1)
    data = workdir / "data"
    initdb = [binary("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
    done = subprocess.run([*initdb, "--locale", "C"], user=user, capture_output=True, timeout=60)
    if done.returncode != 0:
        raise BenchError(f"initdb failed: {done.stderr.decode(errors='replace')[-500:]}")
    argv = [binary("postgres"), "-D", str(data), "-p", str(port), "-k", str(workdir)]
    argv += ["-c", "listen_addresses=127.0.0.1"]
    child = Child("postgres", argv, cpu=cpu, env=clean_env({}), cwd=str(cwd), user=user)
    try:
        child.wait_line(lambda line: POSTGRES_READY in line, START_TIMEOUT_S, "'ready'")
    except BaseException:
        child.stop(signal.SIGKILL, STOP_TIMEOUT_S)
        raise
    return child
