"""The room endpoint: ``/items/{item_id}/ws``.

The gate (api/routes/admission.py) decides who may connect and from where; a refusal
reaches the client as a close frame with code and reason (api/rejections.py). Here a
connection is accepted, joined to the room through the hub, and read until it ends
(api/routes/connection.py); what the hub sends it goes straight to its socket, or to
its queue when the client falls behind (api/hub/member.py).
"""

from fastapi import APIRouter, WebSocket

from itemrooms.api.close_codes import POLICY_VIOLATION, Close, Reason
from itemrooms.api.rejections import refuse
from itemrooms.api.routes.admission import Admission
from itemrooms.api.routes.connection import Connection

router = APIRouter()


@router.websocket("/items/{item_id}/ws")
async def room_socket(websocket: WebSocket, admitted: Admission) -> None:
    if isinstance(admitted, Close):
        await refuse(websocket, admitted, websocket.path_params.get("item_id", "-"))
        return
    await Connection(websocket, admitted.item_id, admitted.claims).serve(
        admitted.since, admitted.epoch
    )


@router.websocket("/items/{anything:path}/ws")
async def malformed_room_socket(websocket: WebSocket, anything: str) -> None:
    """An item id with a ``/`` or none at all matches no room route; without this, the
    client would get a bare HTTP 403 instead of PROTOCOL.md's close code and reason."""
    await refuse(websocket, Close(POLICY_VIOLATION, Reason.INVALID_ITEM_ID))
