"""The errors this client raises. They carry data, not just text (a close's ``code`` and
``reason``, an error frame's ``code`` and ``detail``), so that callers can branch on what the
server said; all are :class:`ClientError`, so one ``except`` catches this client's own.
"""

from __future__ import annotations

from websockets.exceptions import ConnectionClosed

from .protocol import ABNORMAL_CLOSURE


class ClientError(Exception):
    """Base class of the errors this client raises."""


class RoomClosed(ClientError):
    """The connection is closed; ``code`` and ``reason`` are the server's close frame.

    ``code`` is 1006 and ``reason`` empty when the connection dropped without one.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"room closed: {self.code} {self.reason or '(no reason)'}"


class NotConnected(ClientError):
    """A reconnecting room has no connection right now: ``ping``, ``refresh`` and
    ``send_binary`` sent nothing (publishes wait for the connection instead)."""


class PublishRefused(ClientError):
    """A publish that was certainly not published (``unavailable``, ``not_allowed``,
    ``rate_limited``, ``not_connected``, ``message_too_big``…), or, only after the
    server could not tell for its whole dedup window, ``outcome_unknown``."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail

    def __str__(self) -> str:
        return f"publish refused: {self.code}: {self.detail}"


class RefreshRefused(ClientError):
    """The server kept the old token (``invalid_refresh``: the new one does not expire later).

    A refresh with a bad token closes the connection instead: :class:`RoomClosed`.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail

    def __str__(self) -> str:
        return f"refresh refused: {self.code}: {self.detail}"


def _closed(exc: ConnectionClosed) -> RoomClosed:
    if exc.rcvd is None:
        return RoomClosed(ABNORMAL_CLOSURE, "")
    return RoomClosed(exc.rcvd.code, exc.rcvd.reason)
