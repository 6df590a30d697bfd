"""The one reader: every frame of a connection is read here and dispatched.

Replies to the client's own requests (a publish's ``ref``, ``pong``, ``refreshed``) resolve
the call awaiting them; room traffic goes to the bounded queue that iteration drains.
Nothing else reads the socket, so a publish can await its ack while the application
iterates; and when the queue is full the reading stops, so that a client that does not
keep up meets the server's 1013 ``slow_consumer`` rather than unbounded memory.
"""

from __future__ import annotations

import json

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from .errors import RefreshRefused, RoomClosed, _closed
from .protocol import Frame
from .publishes import _Publishes


class _Reader(_Publishes):
    """Reads a connection's frames, resolves what awaits them, queues the rest."""

    async def _read(self, ws: ClientConnection) -> RoomClosed:
        """Read one connection's frames until it closes; return its close."""
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    await self._enqueue({"type": "binary", "data": raw})
                    continue
                try:
                    frame = json.loads(raw)
                except ValueError:
                    continue  # not ours to understand: the server only sends JSON objects
                if isinstance(frame, dict) and self._dispatch(frame):
                    await self._enqueue(frame)
            return RoomClosed(ws.close_code or 1000, ws.close_reason or "")
        except ConnectionClosed as exc:
            return _closed(exc)

    def _dispatch(self, frame: Frame) -> bool:
        """Resolve whatever awaits this frame; True if iteration should yield it."""
        kind = frame.get("type")
        if kind == "message":
            return self._on_message(frame)
        if kind in ("presence", "presence_count", "presence_list"):
            self._on_presence(kind, frame)
        elif kind == "error":
            code, detail = str(frame.get("code", "")), str(frame.get("detail", ""))
            if code == "invalid_refresh":  # the only error a refresh gets; it has no ref
                if self._refresh is not None and not self._refresh.done():
                    self._refresh.set_exception(RefreshRefused(code, detail))
                    return False
            else:
                entry = self._by_ref.get(str(frame.get("ref")))
                if entry is not None:
                    self._publish_failed(entry, code, detail)
                    return False
        elif kind == "pong":
            while self._pings:
                pong = self._pings.popleft()
                if not pong.done():
                    pong.set_result(None)
                    break
            return False
        elif kind == "refreshed":
            if self._refresh is not None and not self._refresh.done():
                self._refresh.set_result(frame)
            return False
        else:
            return False  # a type this client does not know: ignored (protocol v1.1)
        return True

    def _on_presence(self, kind: str, frame: Frame) -> None:
        """Keep ``members``, ``member_count`` and ``presence_mode`` current (v1.2)."""
        if kind == "presence":
            client_id = str(frame.get("client_id"))
            if frame.get("event") == "join":
                if client_id not in self._members:
                    self._member_count += 1
                self._members[client_id] = {"user": frame.get("user"), "client_id": client_id}
            elif self._members.pop(client_id, None) is not None:
                self._member_count -= 1
            return
        count = frame.get("member_count")
        if isinstance(count, int):
            self._member_count = count
        if kind == "presence_count":
            self._presence_mode = "count"  # names no longer follow: members is a sample
        else:  # the room is small again: everyone, you included, and presence frames follow
            self._presence_mode = "list"
            self._members = {
                str(m.get("client_id")): {"user": m.get("user"), "client_id": m.get("client_id")}
                for m in frame.get("members", [])
                if isinstance(m, dict) and m.get("user") != self.user
            }

    def _on_message(self, frame: Frame) -> bool:
        entry = self._entry_for(frame)
        if frame.get("duplicate") is True:
            # The answer to an id sent again: an acknowledgement, not a new message.
            if entry is not None:
                self._settle(entry, frame)
            return False
        seq = frame.get("seq")
        if not isinstance(seq, int):
            return True
        new = self._last_seq is None or seq > self._last_seq
        if new:
            self._last_seq = seq
        if entry is not None:
            self._settle(entry, frame)
        if self._replay_to is not None and seq >= self._replay_to:
            self._replayed()
        return new  # else seen before this reconnect (or before the epoch changed)
