"""Per-connection log lines, off unless ``ITEMROOMS_ACCESS_LOG`` is on.

uvicorn's WebSocket protocol and the websockets state machine write INFO
lines for every handshake ("WebSocket /items/…" [accepted], "connection
open", "connection closed") on ``uvicorn.error``, beside startup and errors. A
room server takes thousands of handshakes a second when clients reconnect
together, and building, redacting and writing those lines cost more than a
handshake's token check (measured with the connection-storm benchmark).

So api/ws_protocol.py gives both its own logger, ``CONNECTIONS_LOGGER``, set to
WARNING unless the access log is on: an INFO call then stops at the level
check, before any record is made, while errors still reach the log.

uvicorn would also write "[accepted]" when the handshake is accepted, before the app
knows whether it refuses the client (a refusal is an accept and a close, so that the
client gets a close code): api/ws_protocol.py silences that line and the app writes
the outcome instead, "[accepted]" once the welcome is on its way or "[refused: reason]".
"""

import logging

from starlette.websockets import WebSocket

CONNECTIONS_LOGGER = "itemrooms.connections"
access = logging.getLogger(CONNECTIONS_LOGGER)


def log_outcome(websocket: WebSocket, outcome: str) -> None:
    if access.isEnabledFor(logging.INFO):
        client = websocket.client
        address = f"{client.host}:{client.port}" if client else "-"
        query = websocket.scope.get("query_string", b"").decode("latin-1")
        path = websocket.url.path + (f"?{query}" if query else "")  # redacted by the handler
        access.info('%s - "WebSocket %s" [%s]', address, path, outcome)
