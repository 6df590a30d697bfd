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
"""

CONNECTIONS_LOGGER = "itemrooms.connections"
