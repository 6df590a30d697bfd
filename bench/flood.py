"""Frame flood: what one connection flooding pings costs another room's round trips.

    python -m bench.flood            # 3 interleaved runs of 5 s per variant
    python -m bench.flood --quick    # smoke run: 1 run of 1 s

Three variants, each on a fresh ``itemrooms serve`` pinned to one core (the load runs
in this process, pinned to the other):

- ``quiet``: nobody floods; the baseline.
- ``budget``: the default frame budget (``ITEMROOMS_FRAME_RATE_LIMIT``, 100 frames a
  second at the default publish rate). The flooder is closed with 1008
  ``rate_limited`` and reconnects at once, again and again, as an attacker would.
- ``unlimited``: the budget out of the way (10^9 frames a second), as before it existed.

Meanwhile a prober in another room publishes one message every 25 ms and times its
own copy (the round trip). Reported per variant: the prober's p50, p99 and max, how many
frames the flooder got out per second and how many times it was closed. The flooder
is a ``websockets`` client: its own ceiling (frames a second, reported) bounds the
flood, so the ``unlimited`` variant shows what this client alone can do to a room.
"""

import argparse
import asyncio
import itertools
import json
import os
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.children import free_port
from bench.servers import ITEMROOMS, start_server, stop_server
from itemrooms.auth.tokens import mint_token

VARIANTS = {
    "quiet": None,
    "budget": {},
    "unlimited": {"ITEMROOMS_FRAME_RATE_LIMIT": "1000000000"},
}
PING = '{"type": "ping"}'
PROBE_EVERY_S = 0.025  # 40 publishes a second: under the default publish rate (50)


async def flood(url: str, token: str, stop: asyncio.Event, counts: dict[str, int]) -> None:
    """Pings as fast as this client sends them, reading the answers; reconnect on a close."""
    headers = {"Authorization": f"Bearer {token}"}
    while not stop.is_set():
        try:
            async with connect(url, additional_headers=headers, max_queue=None) as ws:
                reader = asyncio.ensure_future(drain(ws))
                try:
                    while not stop.is_set():
                        await ws.send(PING)
                        counts["sent"] += 1
                        if counts["sent"] % 64 == 0:
                            await asyncio.sleep(0)  # let the prober and the reader run
                finally:
                    reader.cancel()
        except ConnectionClosed:
            counts["closed"] += 1


async def drain(ws: ClientConnection) -> None:
    async for _ in ws:
        pass


async def probe(url: str, token: str, seconds: float) -> list[float]:
    """Round trips (ms) of one publish every PROBE_EVERY_S (within the publish rate),
    for ``seconds``."""
    rtts: list[float] = []
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.recv()  # welcome
        start = time.monotonic()
        for slot in itertools.count():
            if time.monotonic() - start > seconds:
                break
            sent = time.perf_counter()
            await ws.send(json.dumps({"type": "publish", "data": 0, "ref": "p"}))
            while json.loads(await ws.recv()).get("ref") != "p":
                pass
            rtts.append((time.perf_counter() - sent) * 1000)
            await asyncio.sleep(max(0.0, start + (slot + 1) * PROBE_EVERY_S - time.monotonic()))
    return rtts


async def measure(port: int, secret: str, flooding: bool, seconds: float) -> dict[str, Any]:
    base = f"ws://127.0.0.1:{port}/items"
    stop = asyncio.Event()
    counts = {"sent": 0, "closed": 0}
    flooder = None
    if flooding:
        flooder = asyncio.ensure_future(
            flood(f"{base}/flood/ws", mint_token(secret, "flooder"), stop, counts)
        )
    started = time.monotonic()
    rtts = await probe(f"{base}/probe/ws", mint_token(secret, "prober"), seconds)
    elapsed = time.monotonic() - started
    stop.set()
    if flooder is not None:
        await asyncio.wait_for(flooder, 10)
    ordered = sorted(rtts)
    return {
        "samples": len(rtts),
        "p50_ms": statistics.median(rtts),
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "max_ms": ordered[-1],
        "flood_frames_per_s": counts["sent"] / elapsed,
        "flooder_closed": counts["closed"],
    }


def run(variant: str, seconds: float, cpu: int | None, cwd: Path) -> dict[str, Any]:
    secret = secrets.token_urlsafe(48)
    port = free_port()
    extra = {"ITEMROOMS_RATE_LIMIT": "50", **(VARIANTS[variant] or {})}
    child = start_server(
        ITEMROOMS, port, secret=secret, send_queue=1024, cpu=cpu, cwd=cwd, extra_env=extra
    )
    try:
        return asyncio.run(measure(port, secret, VARIANTS[variant] is not None, seconds))
    finally:
        stop_server(child)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1 run of 1 s")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--no-pin", action="store_true", help="do not pin (a one-core machine)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    runs, seconds = (1, 1.0) if args.quick else (args.runs, args.seconds)
    server_cpu = None if args.no_pin else 0
    if not args.no_pin:
        os.sched_setaffinity(0, {1})  # the load on the other core
    cwd = Path.cwd()
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for index in range(runs):
        for name in VARIANTS:  # interleaved: slow drifts of the machine hit all alike
            result = run(name, seconds, server_cpu, cwd)
            results[name].append(result)
            print(f"  {name:9} run {index}: {json.dumps(result)}", flush=True)
    summary = {
        name: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        for name, rows in results.items()
    }
    quiet = summary["quiet"]
    print(f"\nprober round trip, medians of {runs} run(s) of {seconds:g} s:")
    print(f"{'variant':10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'flood/s':>9} {'closed':>7}")
    for name, row in summary.items():
        print(
            f"{name:10} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} {row['max_ms']:8.2f} "
            f"{row['flood_frames_per_s']:9.0f} {row['flooder_closed']:7.0f}"
            f"   p50 x{row['p50_ms'] / quiet['p50_ms']:.2f} of quiet"
        )
    if args.out is not None:
        args.out.write_text(json.dumps({"runs": results, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
