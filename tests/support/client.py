"""A real WebSocket client (the ``websockets`` library) and bounded waits for tests."""

import asyncio
import json
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.server import ServerProcess

TIMEOUT = 5.0

Frame = dict[str, Any]
Via = Literal["header", "subprotocol", "query", "cookie"]


async def open_room(
    server: ServerProcess,
    item_id: str,
    token: str | None = None,
    *,
    via: Via = "header",
    since: int | None = None,
    extra_query: Mapping[str, str] | None = None,
    **options: Any,
) -> ClientConnection:
    """Connect to a room; the handshake completes even for a rejected client."""
    query: dict[str, str] = dict(extra_query or {})
    headers: dict[str, str] = dict(options.pop("additional_headers", {}))
    subprotocols = options.pop("subprotocols", None)
    if since is not None:
        query["since"] = str(since)
    if token is not None:
        if via == "header":
            headers["Authorization"] = f"Bearer {token}"
        elif via == "subprotocol":
            subprotocols = ["itemrooms.v1", f"bearer.{token}"]
        elif via == "query":
            query["token"] = token
        else:
            headers["Cookie"] = f"session={token}"
            # As a browser does: a cookie only counts with an allowed Origin.
            options.setdefault("origin", server.http_url)
    url = server.ws_url(item_id, urlencode(query))
    return await connect(
        url,
        additional_headers=headers,
        subprotocols=subprotocols,
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
        **options,
    )


def bearer(token: str) -> dict[str, str]:
    """The HTTP API's credential."""
    return {"Authorization": f"Bearer {token}"}


async def recv_json(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(raw, str), f"expected a text frame, got {raw!r}"
    frame: dict[str, Any] = json.loads(raw)
    return frame


async def recv_type(ws: ClientConnection, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The next frame of type ``kind``, skipping others (presence noise, say)."""

    async def scan() -> dict[str, Any]:
        while True:
            frame = await recv_json(ws, timeout)
            if frame["type"] == kind:
                return frame

    return await asyncio.wait_for(scan(), timeout)


async def join(
    server: ServerProcess, item_id: str, token: str, **kw: Any
) -> tuple[ClientConnection, dict[str, Any]]:
    """Connect and read the welcome frame."""
    ws = await open_room(server, item_id, token, **kw)
    welcome = await recv_json(ws)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def send_json(ws: ClientConnection, frame: Mapping[str, Any]) -> None:
    await ws.send(json.dumps(frame))


async def closed_with(ws: ClientConnection, timeout: float = TIMEOUT) -> tuple[int, str]:
    """Wait for the server's close; fail if any frame arrives first."""
    try:
        frame = await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, f"no close frame received ({exc!r})"
        return exc.rcvd.code, exc.rcvd.reason
    raise AssertionError(f"expected a close, got frame {frame!r}")


async def drain_until_closed(
    ws: ClientConnection, timeout: float = TIMEOUT
) -> tuple[list[Any], int, str]:
    """Read everything up to the close; return the frames and the close code and reason."""
    frames: list[Any] = []

    async def read() -> tuple[int, str]:
        try:
            while True:
                frames.append(await ws.recv())
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, f"no close frame received ({exc!r})"
            return exc.rcvd.code, exc.rcvd.reason

    code, reason = await asyncio.wait_for(read(), timeout)
    return frames, code, reason


async def publish_many(server: ServerProcess, item_id: str, token: str, count: int) -> None:
    """Publish ``count`` messages (data 0, 1, …) and wait until every one is acknowledged."""
    ws, _ = await join(server, item_id, token)
    async with ws:
        for i in range(count):
            await send_json(ws, {"type": "publish", "data": i, "ref": str(i)})
        acked = 0
        while acked < count:
            acked += (await recv_json(ws))["type"] == "message"


async def known_users(
    ws: ClientConnection, welcome: Frame, want: int, timeout: float = TIMEOUT
) -> tuple[set[str], list[Frame]]:
    """Read until this member knows ``want`` other users (its welcome's, then presence
    frames, which come in batches); those users, and every other frame read meanwhile.
    A join of a user already known fails: nobody is told of anyone twice."""
    known = {m["user"] for m in welcome["members"]}
    others: list[Frame] = []
    async with asyncio.timeout(timeout):
        while len(known) != want:
            frame = await recv_json(ws)
            if frame["type"] == "presence" and frame["event"] == "join":
                assert frame["user"] not in known, f"told twice of {frame['user']}"
                known.add(frame["user"])
            elif frame["type"] == "presence":
                known.discard(frame["user"])
            else:
                others.append(frame)
    return known, others
