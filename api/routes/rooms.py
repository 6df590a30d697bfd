"""The room endpoint: ``/items/{item_id}/ws``.

The dependencies decide who may connect (auth/credentials.py); a rejection
raised there reaches the client as a close frame with code and reason, thanks
to the handlers in api/rejections.py. Here a connection is accepted, joined to
the room through the hub, and read until it ends; its writer task sends what
the hub queues for it.
"""

import asyncio
import logging
import secrets
import time
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket

from api.close_codes import INTERNAL_ERROR, SLOW_CONSUMER, TOKEN_EXPIRED, Reason
from api.frames import PONG, FrameError, Ping, Publish, error_frame, parse_client_frame
from api.hub.backends.base import BackendUnavailable, Sender
from api.hub.hub import Hub
from api.hub.member import AsgiMessage, Member, text_message
from auth.credentials import RoomClaims, accepted_subprotocol, reject
from auth.permissions import can_publish

log = logging.getLogger("itemrooms.rooms")

router = APIRouter()

PONG_MESSAGE = text_message(PONG)
CLOSE_WAIT_S = 2.0
NOT_ALLOWED = "token lacks items:write for this item"
UNAVAILABLE = "not published: the service is briefly unavailable; retry"


def new_client_id() -> str:
    return "c_" + secrets.token_hex(6)


@router.websocket("/items/{item_id}/ws")
async def room_socket(
    websocket: WebSocket,
    item_id: str,
    claims: RoomClaims,
    since: Annotated[int | None, Query(ge=0)] = None,
) -> None:
    hub: Hub = websocket.app.state.hub
    settings = websocket.app.state.settings
    await websocket.accept(subprotocol=accepted_subprotocol(websocket))
    sender = Sender(user=claims.sub, client_id=new_client_id())
    may_publish = can_publish(claims, item_id)
    member = Member(sender, claims, may_publish, websocket.send, settings.send_queue)
    writer = asyncio.create_task(member.run_writer(), name=f"writer {sender.client_id}")
    expiry: asyncio.TimerHandle | None = None
    try:
        await hub.join(item_id, member, since)
        expiry = close_at_expiry(hub, item_id, member, claims.exp + settings.jwt_leeway_s)
        await read_frames(websocket, hub, item_id, member)
    except Exception as exc:
        if isinstance(exc, BackendUnavailable):  # expected while Redis is away: no traceback
            log.warning("room %s: refused %s: %s", item_id, sender.client_id, exc)
        else:
            log.exception("room %s: connection %s failed", item_id, sender.client_id)
        member.close(INTERNAL_ERROR)
        # Give the writer a moment to deliver the close; a client that does not read
        # must not keep this handler alive.
        await asyncio.wait({writer}, timeout=CLOSE_WAIT_S)
    finally:
        if expiry is not None:
            expiry.cancel()
        try:
            await hub.leave(item_id, member)
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)


def close_at_expiry(hub: Hub, item_id: str, member: Member, deadline: float) -> asyncio.TimerHandle:
    """A token is only good until ``exp`` (plus the leeway), on a live connection too."""
    loop = asyncio.get_running_loop()
    delay = max(0.0, deadline - time.time())
    return loop.call_at(loop.time() + delay, hub.evict, item_id, member, TOKEN_EXPIRED)


@router.websocket("/items/{anything:path}/ws")
async def malformed_room_socket(websocket: WebSocket, anything: str) -> None:
    """An item id with a ``/`` or none at all matches no room route; without this, the
    client would get a bare HTTP 403 instead of PROTOCOL.md's close code and reason."""
    reject(Reason.INVALID_ITEM_ID)


async def read_frames(websocket: WebSocket, hub: Hub, item_id: str, member: Member) -> None:
    """Handle the client's frames until it disconnects; bad frames get an ``error``."""

    def reply(message: AsgiMessage) -> None:
        if not member.push(message):
            hub.evict(item_id, member, SLOW_CONSUMER)

    receive = websocket.receive
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if member.close_with is not None:
            continue  # being closed: its frames no longer count
        text = message.get("text")
        if text is None:
            if not member.may_publish:
                reply(text_message(error_frame("not_allowed", NOT_ALLOWED)))
                continue
            try:
                await hub.relay(item_id, member, message.get("bytes") or b"")
            except BackendUnavailable:
                reply(text_message(error_frame("unavailable", UNAVAILABLE)))
            continue
        try:
            frame = parse_client_frame(text)
        except FrameError as exc:
            reply(text_message(error_frame(exc.code, exc.detail, exc.ref)))
            continue
        if isinstance(frame, Publish):
            if not member.may_publish:
                reply(text_message(error_frame("not_allowed", NOT_ALLOWED, frame.ref)))
                continue
            try:
                await hub.publish(item_id, member, frame.data, frame.ref)
            except BackendUnavailable:
                # Never dropped silently: the sender learns it was not published.
                reply(text_message(error_frame("unavailable", UNAVAILABLE, frame.ref)))
        elif isinstance(frame, Ping):
            reply(PONG_MESSAGE)
        else:
            reply(text_message(error_frame("not_supported", "refresh is not supported yet")))
