"""The token's refresh on a live connection: by hand (``Room.refresh``) or by itself ahead
of the token's expiry (``auto_refresh=True``).

A ``refreshed`` frame carries no ``ref``, so refreshes go one at a time. The connection loop
starts the automatic refresh for each connection and cancels it when the connection ends.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .errors import NotConnected, RoomClosed
from .protocol import DEFAULT_TIMEOUT, Frame
from .reader import _Reader
from .tokens import _resolve

log = logging.getLogger("itemrooms.client")


class _Refreshing(_Reader):
    """Sends newer tokens: on request, and before the current one expires."""

    async def refresh(self, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        """Send a newer token (by default, a fresh one from the token source); return the
        ``refreshed`` frame (its ``exp`` is the connection's new deadline).

        Raises :class:`RefreshRefused` when the new token does not expire later than the
        current one, and :class:`RoomClosed` when the server closes the connection over it
        (an invalid token, another user, an item it may not join).
        """
        async with self._refresh_lock:  # ``refreshed`` carries no ref: one at a time
            new = token if token is not None else await _resolve(self._token_source)
            done: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
            self._refresh = done
            try:
                await self._send({"type": "refresh", "token": new})
                frame = await self._wait(done, timeout, "refresh")
            finally:
                self._refresh = None
            self.token_exp = float(frame["exp"])
            return frame

    async def _auto_refresh(self, margin: float) -> None:
        """Refresh ahead of expiry: ``margin`` seconds before it, or with a third of its
        lifetime left for short-lived tokens. A failure is logged, and the server's
        ``token_expired`` close then tells the application what happened (a reconnecting
        room then reconnects with a fresh token)."""
        exp = self.token_exp
        while exp is not None:
            now = time.time()
            await asyncio.sleep(max(0.0, exp - min(margin, max(0.0, exp - now) / 3) - now))
            if self.token_exp != exp:  # refreshed meanwhile (by hand): aim at the new exp
                exp = self.token_exp
                continue
            try:
                await self.refresh()
            except (RoomClosed, NotConnected):
                return
            except Exception as exc:
                log.warning("itemrooms: automatic token refresh failed: %s", exc)
                return
            exp = self.token_exp
