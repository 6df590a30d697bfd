"""A server that costs almost nothing per delivery: the load generator's ceiling.

Why it exists: deliveries/s measures a server only if the load generator can
receive faster than the server can send. This server does the least a room
server can do per delivery, so that a fan-out run against it measures the
generator instead: on each ``publish`` it builds one ``message`` frame, frames
it once (a server's frames are not masked, so the bytes are the same for every
member) and hands those same bytes to every connection's transport with one
``write`` each: no per-member encoding, queue, task or await. Whatever rate
the generator reaches here is its ceiling (bench/fanout.py runs it as
``ceiling`` beside the real servers and reports how close each came to it).

picows does the handshake and parses the few frames clients send (compiled,
like the generator); the blast itself writes straight to the asyncio
transport under picows. Everything the load generator checks is there: one
``welcome`` (no ``members``: no presence), then ``message`` frames with the
same fields as the baselines' (``seq`` rising by one, ``ts``, ``sender``, and
the publisher's ``data`` re-encoded compactly, so ``data.t`` of the latency
scenario survives). A member must present a token (``Authorization: Bearer``
or ``?token=``), but it is not verified: this server is never compared with
the others, and setup is not measured anyway.

Run: ``python -m bench.baselines.blast --port N`` (prints READY when listening).
"""

import argparse
import asyncio
import json
import signal
import struct
import time
from collections.abc import Callable
from typing import Any

import uvloop
from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from bench.system import raise_nofile_limit

READY = "blast server listening on"
ROOM = "bench"


def frame_bytes(payload: bytes) -> bytes:
    """One unmasked, final text frame (server to client) around ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class Room:
    """Every connection's raw ``write``; ``seq``; the blast."""

    def __init__(self) -> None:
        self.writers: dict[int, Callable[[bytes], object]] = {}
        self.seq = 0
        self.next_id = 0
        self.pending: list[bytes] = []  # message frames of the current read, not yet sent

    def publish(self, client_id: str, payload: bytes) -> None:
        """Frame one ``message``; ``flush`` sends it (after the last frame of the read)."""
        try:
            frame = json.loads(payload)
        except ValueError:
            return
        if not isinstance(frame, dict) or frame.get("type") != "publish":
            return
        self.seq += 1
        message = {
            "type": "message",
            "item_id": ROOM,
            "seq": self.seq,
            "ts": int(time.time() * 1000),
            "sender": {"user": "bench", "client_id": client_id},
            "data": frame.get("data"),
        }
        self.pending.append(frame_bytes(compact(message)))

    def flush(self) -> None:
        """The pending frames, as one write to every member.

        Publishes that arrived in one read (the server fell behind the publisher)
        then cost one write per member together: the cheapest a server can do."""
        if not self.pending:
            return
        wire = b"".join(self.pending) if len(self.pending) > 1 else self.pending[0]
        self.pending.clear()
        for write in self.writers.values():
            write(wire)


class Member(WSListener):
    def __init__(self, room: Room) -> None:
        super().__init__()
        self.room = room
        room.next_id += 1
        self.id = room.next_id
        self.client_id = f"c_{self.id:x}"

    def on_ws_connected(self, transport: WSTransport) -> None:
        welcome: dict[str, Any] = {"type": "welcome", "item_id": ROOM}
        welcome |= {
            "client_id": self.client_id,
            "user": "bench",
            "members": [],
            "seq": self.room.seq,
        }
        transport.send(WSMsgType.TEXT, compact(welcome))
        self.room.writers[self.id] = transport.underlying_transport.write

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            self.room.publish(self.client_id, frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.CLOSE:
            self.room.writers.pop(self.id, None)
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
        if frame.last_in_buffer:
            self.room.flush()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.room.writers.pop(self.id, None)


def has_token(request: WSUpgradeRequest) -> bool:
    if request.headers.get("Authorization", "").startswith("Bearer "):
        return True
    return b"token=" in request.path


async def serve(host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    room = Room()
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()

    def listener(request: WSUpgradeRequest) -> WSListener | WSUpgradeResponseWithListener:
        if not has_token(request):
            response = WSUpgradeResponse.create_error_response(403, b"missing_token\n")
            return WSUpgradeResponseWithListener(response, None)
        return Member(room)

    def on_signal() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    server = await ws_create_server(
        listener, host, port, websocket_handshake_timeout=30, backlog=2048
    )
    print(f"{READY} ws://{host}:{port}", flush=True)
    await stop
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8003)
    args = parser.parse_args()
    raise_nofile_limit()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
