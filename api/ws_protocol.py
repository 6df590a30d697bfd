"""uvicorn's ``websockets-sansio`` WebSocket implementation, with what it lacks for a
service facing the open internet.

uvicorn (0.54, the only minor release this subclass is tested with, checked at import)
leaves three gaps that a client can see on the wire:
- a handshake the websockets parser refuses (a request line over 8 KiB, more than
  128 headers, garbage) is never answered: the connection just hangs open;
- a handshake that never completes holds a connection forever;
- a frame over the size limit closes with the library's own prose as the reason,
  and a shutdown closes with 1012 and no reason.
This subclass answers refused handshakes (414/431) and closes, closes handshakes
that take longer than ``HANDSHAKE_TIMEOUT_S``, and speaks PROTOCOL.md's close codes:
1009 ``message_too_big`` and 1001 ``going_away``.

It also offers the app a faster way out (the ``itemrooms.direct_socket`` scope
extension, api/hub/member.py's ``DirectSocket``): complete frames, encoded once
per room, written to the transport without an ASGI message, a task switch or
the websockets library framing them again for every member. Everything else,
the close handshake included, is uvicorn's.
"""

import asyncio
import logging
from typing import Any

from websockets.frames import CloseCode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from itemrooms.api.access_log import CONNECTIONS_LOGGER
from itemrooms.api.close_codes import GOING_AWAY, MESSAGE_TOO_BIG
from itemrooms.api.hub.member import DIRECT_SOCKET
from itemrooms.api.uvicorn_internals import require_internals, unsupported_uvicorn
from itemrooms.api.ws_primitives import Flag, ReceiveQueue

HANDSHAKE_TIMEOUT_S = 10.0
SILENT = logging.getLogger(f"{CONNECTIONS_LOGGER}.silenced")
SILENT.disabled = True

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError as exc:
    raise unsupported_uvicorn(f"it has no websockets-sansio implementation ({exc})") from None
# What this subclass overrides or calls, and the attributes it reads or sets.
require_internals(
    WebSocketsSansIOProtocol,
    "websockets-sansio",
    methods=(
        "__init__",
        "connection_made",
        "connection_lost",
        "data_received",
        "handle_connect",
        "send",
        "send_receive_event_to_app",
        "shutdown",
        "stop_keepalive",
    ),
    attributes=(
        "conn",
        "config",
        "loop",
        "transport",
        "scope",
        "queue",
        "writable",
        "handshake_initiated",
        "handshake_complete",
        "close_sent",
        "close_timeout",
        "close_timer",
        "read_paused",
        "initial_response",
        "request",
        "response",
        "frames",
        "client",
        "curr_msg_data_type",
        "handle_parser_exception",
    ),
)


class RoomsServerConnection(ServerProtocol):
    """The websockets state machine, closing oversized frames with our reason."""

    def fail(self, code: CloseCode | int, reason: str = "") -> None:
        if code == CloseCode.MESSAGE_TOO_BIG:
            reason = MESSAGE_TOO_BIG.reason
        super().fail(code, reason)


class RoomsWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = ReceiveQueue()  # type: ignore[assignment]  # api/ws_primitives.py
        self.writable = Flag()  # type: ignore[assignment]
        self.writable.set()
        # Per-connection lines (and errors) on a logger of their own (api/access_log.py).
        self.logger = logging.getLogger(CONNECTIONS_LOGGER)
        self.conn = RoomsServerConnection(
            extensions=self.conn.available_extensions,
            max_size=self.config.ws_max_size,
            logger=self.logger,
        )
        self._handshake_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._handshake_timer = self.loop.call_later(HANDSHAKE_TIMEOUT_S, self._handshake_late)

    def _handshake_late(self) -> None:
        if not self.handshake_initiated:
            self.transport.abort()

    def handle_connect(self, event: Request) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        super().handle_connect(event)
        if self.handshake_initiated and not self.close_sent:
            # The ASGI task is created but has not run yet: it sees the extension.
            self.scope["extensions"][DIRECT_SOCKET] = {"socket": self}

    async def send(self, message: Any) -> None:
        if message["type"] == "websocket.accept" and not self.handshake_complete:
            # uvicorn's "[accepted]" and websockets' "connection open" would be written
            # now, before the app knows whether it refuses the client: the app writes
            # the outcome instead (api/access_log.py).
            logger, self.logger = self.logger, SILENT
            self.conn.logger = SILENT
            try:
                await super().send(message)
            finally:
                self.logger = self.conn.logger = logger
        else:
            await super().send(message)
        if self.handshake_complete and self.response is not None:
            # The handshake request and response are never looked at again.
            self.request = self.response = None  # type: ignore[assignment]

    # --- DirectSocket (api/hub/member.py) ---

    def direct_writable(self) -> bool:
        return (
            self.handshake_complete
            and not self.close_sent
            and self.writable.is_set()
            and not self.transport.is_closing()
        )

    def direct_write(self, data: bytes) -> None:
        if self.handshake_complete and not self.close_sent and not self.transport.is_closing():
            self.transport.write(data)

    async def direct_drained(self) -> None:
        await self.writable.wait()  # also set when the connection is lost

    def direct_close(self, code: int, reason: str) -> None:
        """uvicorn's close, without first waiting for the socket to drain: a client
        that stopped reading finds the close right after what the transport already
        holds (otherwise the keepalive's 1011 would come first, and the protocol's
        1013 never)."""
        if not self.handshake_complete or self.close_sent or self.transport.is_closing():
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None:
            # websockets prepared a 414/431 answer (or an EOF for garbage) that uvicorn,
            # waiting for a complete request, would never write.
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.handshake_initiated = self.close_sent = True
            self.transport.close()

    def send_receive_event_to_app(self) -> None:
        """uvicorn's, except for a text frame that is not UTF-8: uvicorn logs it at ERROR
        with a traceback, which lets any client flood the error log. It is the client's
        mistake, closed with 1007 as before, and logged at INFO (once: it ends the
        connection)."""
        if self.curr_msg_data_type != "text":
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return  # past the app's close: reads stay active until the peer's close reply
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self.logger.info("%s: closed 1007: a text frame that is not UTF-8", self.client)
            self.conn.send_close(1007)
            self.handle_parser_exception()
            return
        self.queue.put_nowait({"type": "websocket.receive", "text": text})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """Server shutdown: 1001 ``going_away`` (PROTOCOL.md), not uvicorn's bare 1012."""
        if self.handshake_complete and not self.close_sent and self.initial_response is None:
            self.stop_keepalive()
            self.queue.put_nowait(
                {
                    "type": "websocket.disconnect",
                    "code": GOING_AWAY.code,
                    "reason": GOING_AWAY.reason,
                }
            )
            self.conn.send_close(GOING_AWAY.code, GOING_AWAY.reason)
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True
            self.transport.close()
            return
        super().shutdown()
