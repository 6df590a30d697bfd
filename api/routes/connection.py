"""One accepted room connection: join, read frames, refresh, limits, leave.

Everything a client sends goes through ``_read``: publishes (rate-limited, and
refused with an ``error`` frame when the token lacks ``items:write`` or the backend
is away), binary frames (relayed), pings, and token refreshes. Nothing here awaits
a socket write: replies go on the member's queue like everything else.
"""

import asyncio
import logging
import random
import secrets
import time

from fastapi import WebSocket

from itemrooms.api.access_log import log_outcome
from itemrooms.api.close_codes import (
    FORBIDDEN,
    INTERNAL_ERROR,
    ITEM_CLOSED,
    RATE_LIMITED,
    SLOW_CONSUMER,
    TOKEN_EXPIRED,
    TOO_MANY_CONNECTIONS,
    Close,
)
from itemrooms.api.connection_limits import ConnectionLimits
from itemrooms.api.frames import (
    PONG,
    FrameError,
    Ping,
    Publish,
    Refresh,
    encode,
    encode_duplicate,
    error_frame,
    parse_client_frame,
)
from itemrooms.api.hub.backends.base import (
    BackendUnavailable,
    ItemClosed,
    OutcomeUnknown,
    Sender,
)
from itemrooms.api.hub.hub import Hub, Refused
from itemrooms.api.hub.member import DIRECT_SOCKET, Member
from itemrooms.api.hub.outgoing import Outgoing
from itemrooms.api.rate_limit import REFRESH_COST, TokenBucket
from itemrooms.api.rejections import note_refusal, refuse
from itemrooms.api.runtime import runtime
from itemrooms.api.settings import Settings
from itemrooms.auth.credentials import accepted_subprotocol
from itemrooms.auth.permissions import can_join, can_publish
from itemrooms.auth.tokens import Claims, TokenError, TokenVerifier

log = logging.getLogger("itemrooms.rooms")

PONG_MESSAGE = Outgoing(PONG)
SAMPLE_EVERY = 16
MAX_PUBLISHING = 64  # publishes of one connection waiting for the backend
CLOSE_WAIT_S = 2.0
NOT_ALLOWED = "token lacks items:write for this item"
UNAVAILABLE = "not published: the service is briefly unavailable; retry"
OUTCOME_UNKNOWN = "may or may not be published: retry with the same id"
SLOW_DOWN = "over the rate limit; slow down"


def new_client_id() -> str:
    return "c_" + secrets.token_hex(6)


class Connection:
    def __init__(self, websocket: WebSocket, item_id: str, claims: Claims) -> None:
        running = runtime(websocket)  # the gate checked that it runs
        self.websocket = websocket
        self.item_id = item_id
        self.hub: Hub = running.hub
        self.settings: Settings = running.settings
        self.verifier: TokenVerifier = running.verifier
        self.limits: ConnectionLimits = running.limits
        sender = Sender(user=claims.sub, client_id=new_client_id())
        # One member in SAMPLE_EVERY reports fan-out latency: cheap, and enough for a histogram.
        sampled = random.random() < 1 / SAMPLE_EVERY
        self.member = Member(
            sender,
            claims,
            can_publish(claims, item_id),
            websocket.send,
            self.settings.send_queue,
            observe=self.hub.metrics.fanout_seconds.observe if sampled else None,
            direct=websocket.scope.get("extensions", {}).get(DIRECT_SOCKET, {}).get("socket"),
            batch=self.hub.flush_batch,
        )
        self.bucket = TokenBucket(self.settings.rate_limit, self.settings.rate_burst)
        self.frames = TokenBucket(self.settings.frames_per_s)
        self._expiry: asyncio.TimerHandle | None = None
        self._publishing: set[asyncio.Task[None]] | None = None  # made at the first publish

    async def serve(self, since: int | None, epoch: str | None = None) -> None:
        user = self.member.sender.user
        metrics = self.hub.metrics
        if not self.limits.acquire(user):
            await refuse(self.websocket, TOO_MANY_CONNECTIONS, self.item_id)
            return
        metrics.connections.inc()
        try:
            await self.websocket.accept(subprotocol=accepted_subprotocol(self.websocket))
            await self.hub.join(self.item_id, self.member, since, epoch)
            log_outcome(self.websocket, "accepted")
            metrics.joins.inc()
            self._expire_at(self.member.claims.exp)
            await self._read()
        except Exception as exc:
            close = INTERNAL_ERROR
            if isinstance(exc, Refused):  # closed, or banned: the moderator's word
                close = exc.close
                note_refusal(self.websocket, close.reason, self.item_id)
            elif isinstance(exc, BackendUnavailable):  # expected while Redis is away
                metrics.backend_errors.inc()
                log.warning("room %s: refused %s: %s", self.item_id, self.member.client_id, exc)
            else:
                log.exception("room %s: connection %s failed", self.item_id, self.member.client_id)
            self.member.close(close)
            # Give the writer a moment to deliver the close; a client that does not read
            # must not keep this handler alive.
            await self.member.closed(CLOSE_WAIT_S)
        finally:
            metrics.connections.dec()
            self.limits.release(user)
            if self._expiry is not None:
                self._expiry.cancel()
            try:
                await self.hub.leave(self.item_id, self.member)
            finally:
                await self.member.stop()

    def _expire_at(self, exp: int) -> None:
        """A token is only good until ``exp`` (plus the leeway), on a live connection too."""
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, exp + self.settings.jwt_leeway_s - time.time())
        self._expiry = loop.call_at(loop.time() + delay, self._close, TOKEN_EXPIRED)

    def _close(self, close: Close, drop_queued: bool = True) -> None:
        self.hub.evict(self.item_id, self.member, close, drop_queued)

    def _reply(self, message: Outgoing) -> None:
        if not self.member.push(message):
            self._close(SLOW_CONSUMER)

    def _error(self, code: str, detail: str, ref: str | None = None) -> None:
        self._reply(Outgoing(error_frame(code, detail, ref)))

    def _within(self, bucket: TokenBucket, ref: str | None, cost: float = 1.0) -> bool:
        """Whether ``bucket`` allows the frame; answers the client when not."""
        if bucket.allow(cost):
            return True
        if bucket.exhausted:
            # The error frames that warned the client still go out before the close.
            self._close(RATE_LIMITED, drop_queued=False)
        else:
            self._error("rate_limited", SLOW_DOWN, ref)
        return False

    def _may_send(self, ref: str | None) -> bool:
        """Whether a publish or binary frame goes ahead; answers the client when not."""
        if not self.member.may_publish:
            self._error("not_allowed", NOT_ALLOWED, ref)
            return False
        return self._within(self.bucket, ref)

    async def _read(self) -> None:
        """Handle the client's frames until it disconnects; bad frames get an ``error``."""
        receive, member = self.websocket.receive, self.member
        max_depth = self.settings.max_json_depth
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if member.close_with is not None:
                continue  # being closed: its frames no longer count
            if not self._within(self.frames, None):
                continue
            text = message.get("text")
            if text is None:
                if self._may_send(None):
                    try:
                        await self.hub.relay(
                            self.item_id, member.sender, message.get("bytes") or b""
                        )
                    except BackendUnavailable:
                        self._error("unavailable", UNAVAILABLE)
                continue
            try:
                frame = parse_client_frame(text, max_depth)
            except FrameError as exc:
                self._error(exc.code, exc.detail, exc.ref)
                continue
            if isinstance(frame, Publish):
                if self._may_send(frame.ref):
                    await self._start_publish(frame)
            elif isinstance(frame, Ping):
                self._reply(PONG_MESSAGE)
            elif self._within(self.frames, None, REFRESH_COST - 1):  # one paid above
                await self._refresh(frame)

    async def _start_publish(self, frame: Publish) -> None:
        """Publish without waiting for the backend, so that the next frames are read
        meanwhile (with Redis, a burst then takes one round trip, not one per message).

        Tasks start in the order they are created and every backend takes a publish
        in hand before its first await, so a client's messages keep their order. At
        most MAX_PUBLISHING are in flight: beyond that, reading waits."""
        publishing = self._publishing
        if publishing is None:
            publishing = self._publishing = set()
        while len(publishing) >= MAX_PUBLISHING:
            await asyncio.wait(publishing, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.get_running_loop().create_task(self._publish(frame))
        publishing.add(task)
        task.add_done_callback(publishing.discard)

    async def _publish(self, frame: Publish) -> None:
        try:
            published = await self.hub.publish(
                self.item_id, self.member.sender, frame.data, frame.ref, frame.id
            )
        except BackendUnavailable:
            # Never dropped silently: the sender learns it was not published.
            self.hub.metrics.backend_errors.inc()
            self._error("unavailable", UNAVAILABLE, frame.ref)
        except OutcomeUnknown:
            self.hub.metrics.backend_errors.inc()
            self._error("outcome_unknown", OUTCOME_UNKNOWN, frame.ref)
        except ItemClosed:  # closed while this publish was on its way: its close answers it
            self._close(ITEM_CLOSED)
        else:
            if published.duplicate is not None:
                # Nobody else hears of it: the sender alone gets the original again.
                self._reply(Outgoing(encode_duplicate(published.duplicate, frame.ref)))
            else:
                self.hub.metrics.published.labels("websocket").inc()

    async def _refresh(self, frame: Refresh) -> None:
        """A newer token for the same user: its permissions apply from now on."""
        try:
            claims = await self.verifier.verify_async(frame.token)
        except TokenError as exc:
            self._close(Close(1008, exc.reason))
            return
        current = self.member.claims
        if claims.sub != current.sub:
            self._close(FORBIDDEN)
            return
        if claims.exp <= current.exp:
            self._error("invalid_refresh", "the new token must expire later than the current one")
            return
        if not can_join(claims, self.item_id):
            self._close(FORBIDDEN)
            return
        self.member.claims = claims
        self.member.may_publish = can_publish(claims, self.item_id)
        self._expire_at(claims.exp)
        self._reply(Outgoing(encode({"type": "refreshed", "exp": claims.exp})))
