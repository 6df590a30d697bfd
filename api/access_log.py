"""Per-connection log lines, off unless ``ITEMROOMS_ACCESS_LOG`` is on.

uvicorn writes one INFO line per WebSocket handshake ("WebSocket /items/…"
accepted, 403…) on its ``uvicorn.error`` logger, beside startup and errors. A
room server takes thousands of handshakes a second when clients reconnect
together, and formatting and writing those lines cost more than a handshake's
token check (measured with the connection-storm benchmark). Like uvicorn's
HTTP access log, they are opt-in here; the metrics count connections anyway.
"""

import logging

WEBSOCKET_LINE = '%s - "WebSocket '


class DropConnectionLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(WEBSOCKET_LINE))
