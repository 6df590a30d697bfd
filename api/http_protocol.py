"""uvicorn's httptools HTTP implementation, with a deadline for a request's headers.

uvicorn times nothing before a request's headers are complete: a connection that
sends nothing, or trickles a header a byte at a time, is held forever, and a few
thousand of them exhaust the process's file descriptors (the WebSocket handshake
timer in api/ws_protocol.py starts only once the headers are in). Here every request's
headers must be complete within ``HEADERS_TIMEOUT_S`` of its connection opening or of
its first byte (a later request on a kept-alive connection), or the connection is
closed. Idle kept-alive connections are uvicorn's ``timeout_keep_alive`` business.
"""

import asyncio
import logging

import httptools

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError as exc:  # httptools is part of uvicorn[standard]
    from itemrooms.api.uvicorn_internals import unsupported_uvicorn

    raise unsupported_uvicorn(f"it has no httptools implementation ({exc})") from None

from itemrooms.api.access_log import CONNECTIONS_LOGGER
from itemrooms.api.uvicorn_internals import require_internals

HEADERS_TIMEOUT_S = 10.0

require_internals(
    HttpToolsProtocol,
    "httptools",
    methods=(
        "connection_made",
        "connection_lost",
        "on_message_begin",
        "on_headers_complete",
        "data_received",
        "send_400_response",
        "handle_websocket_upgrade",
        "_should_upgrade",
        "_unsupported_upgrade_warning",
        "_unset_keepalive_if_required",
    ),
    attributes=("loop", "transport", "parser", "client"),
)
log = logging.getLogger(CONNECTIONS_LOGGER)  # INFO only with ITEMROOMS_ACCESS_LOG


class RoomsHttpToolsProtocol(HttpToolsProtocol):
    _headers_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._headers_timer = self.loop.call_later(HEADERS_TIMEOUT_S, self._headers_late)

    def data_received(self, data: bytes) -> None:
        """uvicorn's, except that a malformed request is logged at INFO (on our
        connections logger), not as a WARNING any client can flood the log with."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            log.info("%s: answered 400: invalid HTTP request", self.client)
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._headers_timer is None:  # a later request on a kept-alive connection
            self._headers_timer = self.loop.call_later(HEADERS_TIMEOUT_S, self._headers_late)

    def on_headers_complete(self) -> None:
        self._cancel_headers_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_headers_timer()
        super().connection_lost(exc)

    def _cancel_headers_timer(self) -> None:
        if self._headers_timer is not None:
            self._headers_timer.cancel()
            self._headers_timer = None

    def _headers_late(self) -> None:
        self._headers_timer = None
        if not self.transport.is_closing():
            self.transport.close()
