"""The two servers under test, each started the way its users would start it.

itemrooms through its own CLI (``itemrooms serve``), so the benchmark measures
what ships: the same app factory, uvicorn options and logging. The tutorial
baseline through uvicorn with those same options (bench/baselines/). Both get
a fresh process per run: no room, history or allocator state carries over.
"""

import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.children import Child, clean_env

STARTED = "Uvicorn running on"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
ROOM = "bench"
ITEMROOMS = "itemrooms"
TUTORIAL = "tutorial"


@dataclass(frozen=True, slots=True)
class ServerSpec:
    name: str
    auth: str  # how its members send the token: "header" or "query"
    presence: bool  # whether members are told about each other (the ready barrier)


SPECS = {
    ITEMROOMS: ServerSpec(ITEMROOMS, auth="header", presence=True),
    TUTORIAL: ServerSpec(TUTORIAL, auth="query", presence=False),
}


def ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/items/{ROOM}/ws"


def start_server(
    name: str, port: int, *, secret: str, send_queue: int, cpu: int | None, cwd: Path
) -> Child:
    """Start ``name`` on ``port`` and wait until uvicorn listens."""
    bin_dir = Path(sys.executable).parent
    if name == ITEMROOMS:
        argv = [str(bin_dir / "itemrooms"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        env = clean_env(
            {
                "ITEMROOMS_JWT_SECRET": secret,
                "ITEMROOMS_ENV": "production",
                "ITEMROOMS_BACKEND": "memory",
                # Large enough that nobody is evicted as a slow consumer while the
                # generator catches up; --send-queue 1024 measures the default.
                "ITEMROOMS_SEND_QUEUE": str(send_queue),
                # One publisher sends as fast as the room absorbs: not a flood to limit.
                "ITEMROOMS_RATE_LIMIT": "1000000000",
            }
        )
    else:
        argv = [sys.executable, "-m", "bench.baselines.tutorial_manager", "--port", str(port)]
        env = clean_env({"BENCH_JWT_SECRET": secret})
    child = Child(name, argv, cpu=cpu, env=env, cwd=str(cwd))
    try:
        child.wait_line(lambda line: STARTED in line, START_TIMEOUT_S, "'Uvicorn running on'")
    except BaseException:
        child.stop(signal.SIGKILL, STOP_TIMEOUT_S)
        raise
    return child


def stop_server(child: Child) -> int | None:
    """SIGINT: uvicorn's graceful shutdown (bounded by its own timeout), then SIGKILL."""
    return child.stop(signal.SIGINT, STOP_TIMEOUT_S)
