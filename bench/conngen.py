"""A connection load process: many authenticated connections, idle or as a storm.

Run by bench/memory.py and bench/storm.py (pinned to the load core), not by
hand. JSON lines on stdout (``warm``, ``ready``, ``done`` or ``error``),
commands on stdin (``go``, ``quit``), like bench/loadgen.py.

- ``--mode idle``: (after ``--warmup`` connections opened and closed, so that
  the server's lazy imports and first-connection allocations are not counted)
  on ``go`` open ``--count`` connections, each reading its ``welcome``, and keep
  them open, unread, until ``quit``: the server's memory then holds N idle
  members;
- ``--mode storm``: every token is minted before ``go`` (a share of them,
  ``--bad-every``, signed with another secret); on ``go`` open them all,
  ``--concurrency`` at a time, and sort each outcome: a ``welcome`` frame, a
  close (code and reason, as the client sees it), an HTTP refusal (status), or
  another error. Accepted connections stay open until ``quit``.

Member ``i`` joins room ``<prefix>-<i // room_size>``: small rooms, so that
itemrooms' presence traffic (each join told to every other member) stays small
and the numbers are about connections, not about one huge room.
"""

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from typing import Any

import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bench.system import raise_nofile_limit
from itemrooms.auth.tokens import mint_token

SECRET_ENV = "BENCH_JWT_SECRET"
TIMEOUT_S = 30.0


def emit(event: str, **data: Any) -> None:
    print(json.dumps({"event": event, **data}), flush=True)


async def read_command() -> str:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return line.strip() or "quit"


async def attempt(
    url: str, token: str, auth: str, sem: asyncio.Semaphore, keep: list[ClientConnection]
) -> str:
    """One handshake; the outcome as the client saw it."""
    headers = {"Authorization": f"Bearer {token}"} if auth == "header" else None
    target = f"{url}?token={token}" if auth == "query" else url
    async with sem:
        try:
            ws = await connect(
                target,
                additional_headers=headers,
                compression=None,
                proxy=None,
                open_timeout=TIMEOUT_S,
                close_timeout=2,
                ping_interval=None,
                max_queue=4,
            )
        except InvalidStatus as exc:
            return f"http {exc.response.status_code}"
        except (OSError, TimeoutError) as exc:
            return f"error {type(exc).__name__}"
        try:
            first = await asyncio.wait_for(ws.recv(), TIMEOUT_S)
        except ConnectionClosed as exc:
            return f"close {exc.rcvd.code} {exc.rcvd.reason}" if exc.rcvd else "close 1006"
        except TimeoutError:
            return "error no first frame"
    keep.append(ws)
    kind = json.loads(first).get("type") if isinstance(first, str) else None
    return "welcome" if kind == "welcome" else f"first frame {kind}"


async def run(args: argparse.Namespace) -> None:
    secret = os.environ[SECRET_ENV]
    wrong = "w" * 64  # a well-formed token with a bad signature: invalid_token
    sem = asyncio.Semaphore(args.concurrency)
    keep: list[ClientConnection] = []
    url = args.url_template
    indexes = range(args.first, args.first + args.count)
    if args.warmup:
        warm: list[ClientConnection] = []
        tokens = [mint_token(secret, f"warm-{i}", ttl_s=3600) for i in range(args.warmup)]
        outcomes = [
            await attempt(url.format(room=f"warm-{i}"), t, args.auth, sem, warm)
            for i, t in enumerate(tokens)
        ]
        await asyncio.gather(*(ws.close() for ws in warm), return_exceptions=True)
        emit("warm", outcomes=dict(Counter(outcomes)))
    plan = []
    for i in indexes:
        bad = args.bad_every > 0 and i % args.bad_every == args.bad_every - 1
        token = mint_token(wrong if bad else secret, f"bench-{i:05d}", ttl_s=3600)
        plan.append((url.format(room=f"{args.room_prefix}-{i // args.room_size}"), token, bad))
    emit("ready", planned=len(plan))
    if await read_command() != "go":
        return
    t0 = time.monotonic()
    results = await asyncio.gather(*(attempt(u, t, args.auth, sem, keep) for u, t, _ in plan))
    t1 = time.monotonic()
    good: Counter[str] = Counter()
    bad_seen: Counter[str] = Counter()
    for (_, _, bad), outcome in zip(plan, results, strict=True):
        (bad_seen if bad else good)[outcome] += 1
    emit("done", t0=t0, t1=t1, good=dict(good), bad=dict(bad_seen), open=len(keep))
    await read_command()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("idle", "storm"), required=True)
    p.add_argument("--url-template", required=True, help="ws://host:port/items/{room}/ws")
    p.add_argument("--auth", choices=("header", "query"), required=True)
    p.add_argument("--first", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--room-size", type=int, default=10)
    p.add_argument("--room-prefix", default="r")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--bad-every", type=int, default=0, help="every k-th token is bad (storm)")
    p.add_argument("--warmup", type=int, default=0)
    args = p.parse_args()
    raise_nofile_limit()
    try:
        uvloop.run(run(args))
    except Exception as exc:
        emit("error", stage="run", detail=f"{type(exc).__name__}: {exc}"[:500])
    sys.stdout.flush()
    os._exit(0)  # the stdin reader thread may still be blocked; sockets close with us


if __name__ == "__main__":
    main()
