"""The room endpoint: ``/items/{item_id}/ws``.

The dependencies decide who may connect (auth/credentials.py); a rejection
raised there reaches the client as a close frame with code and reason, thanks
to the handlers in api/rejections.py. Here a connection is accepted, joined to
the room through the hub, and read until it ends (api/routes/connection.py);
what the hub sends it goes straight to its socket, or to its queue when the
client falls behind (api/hub/member.py).
"""

from typing import Annotated

from fastapi import APIRouter, Query, WebSocket

from itemrooms.api.close_codes import Reason
from itemrooms.api.frames import ID_PATTERN
from itemrooms.api.routes.connection import Connection
from itemrooms.auth.credentials import RoomClaims, reject

router = APIRouter()


@router.websocket("/items/{item_id}/ws")
async def room_socket(
    websocket: WebSocket,
    item_id: str,
    claims: RoomClaims,
    since: Annotated[int | None, Query(ge=0)] = None,
    epoch: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
) -> None:
    await Connection(websocket, item_id, claims).serve(since, epoch)


@router.websocket("/items/{anything:path}/ws")
async def malformed_room_socket(websocket: WebSocket, anything: str) -> None:
    """An item id with a ``/`` or none at all matches no room route; without this, the
    client would get a bare HTTP 403 instead of PROTOCOL.md's close code and reason."""
    reject(Reason.INVALID_ITEM_ID)
