"""One frame on its way to one or many members, encoded for the wire at most once.

A room message reaches every member as the same bytes: the server's frames are
unmasked, so the complete WebSocket frame (header and payload) is built once,
by the first member that writes it straight to its socket, and reused by the
others. Members behind a plain ASGI server get the ASGI message instead, built
on demand.
"""

from typing import Any

from websockets.frames import Frame, Opcode


class Outgoing:
    __slots__ = ("text", "data", "accepted_at", "_wire")

    def __init__(
        self, text: str | None = None, data: bytes | None = None, accepted_at: float = 0.0
    ) -> None:
        if (text is None) == (data is None):
            raise ValueError("an outgoing frame is either text or binary")
        self.text = text
        self.data = data
        # When the backend accepted the message (epoch seconds), for the fan-out latency
        # metric; 0 for frames that are not room messages.
        self.accepted_at = accepted_at
        self._wire: bytes | None = None

    def wire(self) -> bytes:
        """The whole server-to-client WebSocket frame.

        Once built, it is the only copy kept: a frame waiting in the queues of slow
        members would otherwise be held twice (as text and as bytes)."""
        wire = self._wire
        if wire is None:
            if self.text is not None:
                frame = Frame(Opcode.TEXT, self.text.encode())
            else:
                frame = Frame(Opcode.BINARY, self.data or b"")
            wire = self._wire = frame.serialize(mask=False)
            self.text = self.data = None
        return wire

    def asgi(self) -> dict[str, Any]:
        if self.text is None and self.data is None:
            # Framed already: take the payload back out of the frame.
            wire = self._wire or b""
            size = wire[1] & 0x7F
            payload = wire[2 + {126: 2, 127: 8}.get(size, 0) :]
            if wire[0] & 0x0F == Opcode.BINARY:
                return {"type": "websocket.send", "bytes": payload}
            return {"type": "websocket.send", "text": payload.decode()}
        if self.text is not None:
            return {"type": "websocket.send", "text": self.text}
        return {"type": "websocket.send", "bytes": self.data}
