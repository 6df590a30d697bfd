"""The FastAPI WebSockets tutorial's ``ConnectionManager``, as the fan-out baseline.

Why this baseline: it is what most FastAPI apps start from, so "how does
itemrooms compare with the tutorial" is the question a reader asks first. The
pattern is kept as the tutorial has it: a list of accepted sockets, and a
``broadcast`` that awaits ``send_text`` on each member in turn, inside the
publisher's receive loop.

What is added, only so that the comparison is fair and measurable:
- the same JWT gate as itemrooms (HS256 via python-jose, ``sub`` and ``exp``
  required), taken from ``?token=`` as in the tutorial's "Depends" section;
- itemrooms' frames: ``publish`` in, a JSON ``message`` with a ``seq`` out
  (same fields, same compact encoding), and one ``welcome`` frame after the
  socket joined the list, so the load generator knows when it is registered;
- the same uvicorn options as itemrooms, taken from ``api.server`` itself so
  they cannot drift apart.

What is left out: the tutorial's "left the chat" broadcast on disconnect
(teardown only; it never runs while the benchmark measures).

One room per ``item_id`` of the path: a dict of managers, one per room, each
with its own ``seq``, kept for the server's life (the tutorial has one
manager for the whole app; a dict of them is what an app with rooms writes
first; each run starts a fresh server). The one-room scenarios (fan-out,
latency) use one id, the many-small-rooms one 500.

Run: ``BENCH_JWT_SECRET=... python -m bench.baselines.tutorial_manager --port N``
"""

import argparse
import json
import os
import time
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Query, WebSocket, WebSocketDisconnect, WebSocketException
from fastapi import status as http_status
from jose import JWTError, jwt

from bench.system import raise_nofile_limit

SECRET_ENV = "BENCH_JWT_SECRET"


class ConnectionManager:
    """The tutorial's manager, unchanged in substance."""

    def __init__(self) -> None:
        self.active_connections: list[WebSocket] = []
        self.seq = 0  # added: the room's last message number

    async def connect(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.active_connections.append(websocket)

    def disconnect(self, websocket: WebSocket) -> None:
        if websocket in self.active_connections:
            self.active_connections.remove(websocket)

    async def broadcast(self, message: str) -> None:
        for connection in self.active_connections:
            await connection.send_text(message)


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def create_app(secret: str) -> FastAPI:
    app = FastAPI()
    managers: dict[str, ConnectionManager] = {}  # item_id -> that room's manager

    async def get_claims(token: Annotated[str | None, Query()] = None) -> dict[str, Any]:
        if not token:
            raise WebSocketException(code=http_status.WS_1008_POLICY_VIOLATION)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                options={"require_exp": True, "require_sub": True},
            )
        except JWTError as exc:
            raise WebSocketException(code=http_status.WS_1008_POLICY_VIOLATION) from exc
        return claims

    @app.websocket("/items/{item_id}/ws")
    async def websocket_endpoint(
        websocket: WebSocket,
        item_id: str,
        claims: Annotated[dict[str, Any], Depends(get_claims)],
    ) -> None:
        manager = managers.get(item_id)
        if manager is None:
            manager = managers[item_id] = ConnectionManager()
        await manager.connect(websocket)
        user = str(claims["sub"])
        client_id = f"c_{id(websocket):x}"
        welcome = {"type": "welcome", "item_id": item_id, "client_id": client_id, "user": user}
        await websocket.send_text(compact({**welcome, "members": [], "seq": manager.seq}))
        try:
            while True:
                frame = json.loads(await websocket.receive_text())
                if not isinstance(frame, dict) or frame.get("type") != "publish":
                    continue
                manager.seq += 1
                message = {
                    "type": "message",
                    "item_id": item_id,
                    "seq": manager.seq,
                    "ts": int(time.time() * 1000),
                    "sender": {"user": user, "client_id": client_id},
                    "data": frame.get("data"),
                }
                await manager.broadcast(compact(message))
        except WebSocketDisconnect:
            manager.disconnect(websocket)

    return app


def uvicorn_options(host: str, port: int, secret: str) -> dict[str, Any]:
    """itemrooms' own uvicorn options (api/server.py), minus its app factory flag."""
    from itemrooms.api.server import uvicorn_options as itemrooms_options
    from itemrooms.api.settings import Settings

    settings = Settings(jwt_secret=secret, env="production")
    options = itemrooms_options(settings, host, port, workers=1)
    options.pop("factory", None)
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    secret = os.environ.get(SECRET_ENV, "")
    if len(secret) < 32:
        parser.error(f"set {SECRET_ENV} to a secret of at least 32 characters")
    raise_nofile_limit()
    uvicorn.run(create_app(secret), **uvicorn_options(args.host, args.port, secret))


if __name__ == "__main__":
    main()
