"""The ``websockets`` library's own asyncio server and its ``broadcast()``: the plain reference.

Why this baseline: issue 7 asks itemrooms, with every feature on, to match what
plain Python does with the best-known WebSocket library and nothing else: no
rooms protocol, no per-client queues, no presence. ``broadcast()`` writes the
frame to every connection's transport without awaiting anything (no
backpressure at all), which is the cheapest fan-out the library offers.

What is added, only so that the comparison is fair and measurable:
- the same JWT gate as itemrooms and the tutorial baseline (HS256 via
  python-jose, ``sub`` and ``exp`` required), from ``Authorization: Bearer``
  or ``?token=``; a missing or bad token gets HTTP 403 at the handshake (the
  library's usual way to refuse, as the tutorial's uvicorn does);
- itemrooms' frames: ``publish`` in, a JSON ``message`` with a ``seq`` out
  (same fields, same compact encoding as the tutorial baseline), and one
  ``welcome`` frame after the socket joined the room;
- uvloop (as itemrooms), per-message deflate off (itemrooms' default).

One room per ``item_id`` of the path (``/items/{item_id}/ws``), each with its own
``seq``, kept in a dict and dropped with its last member: the one-room
scenarios (fan-out, latency) use one id, the many-small-rooms one 500.

Run: ``BENCH_JWT_SECRET=... python -m bench.baselines.plain_websockets --port N``
"""

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import uvloop
from jose import JWTError, jwt
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from bench.system import raise_nofile_limit

SECRET_ENV = "BENCH_JWT_SECRET"
READY = "plain websockets server listening on"
MAX_SIZE = 65536  # itemrooms' default ITEMROOMS_MAX_MESSAGE_BYTES


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def token_of(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:].strip() or None
    values = parse_qs(urlsplit(request.path).query).get("token")
    return values[0] if values else None


class Room:
    """One room: its open connections and its last ``seq``."""

    __slots__ = ("members", "seq")

    def __init__(self) -> None:
        self.members: set[ServerConnection] = set()
        self.seq = 0


class Rooms:
    """Every room by ``item_id``, and the JWT gate in front of them."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.rooms: dict[str, Room] = {}

    def check(self, connection: ServerConnection, request: Request) -> Response | None:
        """``process_request``: 403 without a valid token, else remember its ``sub``."""
        token = token_of(request)
        if token is None:
            return connection.respond(HTTPStatus.FORBIDDEN, "missing_token\n")
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=["HS256"],
                options={"require_exp": True, "require_sub": True},
            )
        except JWTError:
            return connection.respond(HTTPStatus.FORBIDDEN, "invalid_token\n")
        connection.username = str(claims["sub"])
        return None

    async def handler(self, connection: ServerConnection) -> None:
        user: str = connection.username
        path = urlsplit(connection.request.path if connection.request else "/").path
        item_id = path.split("/")[2] if path.count("/") >= 3 else ""
        client_id = f"c_{id(connection):x}"
        sender = {"user": user, "client_id": client_id}
        room = self.rooms.get(item_id)
        if room is None:
            room = self.rooms[item_id] = Room()
        room.members.add(connection)
        try:
            welcome = {"type": "welcome", "item_id": item_id, "client_id": client_id}
            await connection.send(
                compact({**welcome, "user": user, "members": [], "seq": room.seq})
            )
            async for raw in connection:
                frame = json.loads(raw)
                if not isinstance(frame, dict) or frame.get("type") != "publish":
                    continue
                room.seq += 1
                message = {
                    "type": "message",
                    "item_id": item_id,
                    "seq": room.seq,
                    "ts": int(time.time() * 1000),
                    "sender": sender,
                    "data": frame.get("data"),
                }
                broadcast(room.members, compact(message))
        except ConnectionClosed:
            pass
        finally:
            room.members.discard(connection)
            if not room.members and self.rooms.get(item_id) is room:
                del self.rooms[item_id]


async def serve_until_signal(host: str, port: int, secret: str) -> None:
    """Serve until SIGINT or SIGTERM, then close every connection (1001) and return."""
    rooms = Rooms(secret)
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()

    def on_signal() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    async with serve(
        rooms.handler,
        host,
        port,
        process_request=rooms.check,
        compression=None,
        max_size=MAX_SIZE,
        ping_interval=None,
        close_timeout=1,
        backlog=2048,
    ):
        print(f"{READY} ws://{host}:{port}", flush=True)
        await stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args()
    secret = os.environ.get(SECRET_ENV, "")
    if len(secret) < 32:
        parser.error(f"set {SECRET_ENV} to a secret of at least 32 characters")
    raise_nofile_limit()
    # The library logs failed handshakes at INFO (expected in the storm) and errors above.
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(message)s"
    )
    uvloop.run(serve_until_signal(args.host, args.port, secret))


if __name__ == "__main__":
    main()
