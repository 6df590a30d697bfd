"""Make every handshake rejection reach the client as a close code and reason.

A close before ``accept()`` is sent by the ASGI server as a bare HTTP 403: a
browser then sees only code 1006 and a mobile client a failed handshake, and
neither can tell an expired token from a network fault. So a rejection is
delivered by accepting the handshake and closing at once with the code and
reason: the client's very first event is the close (1008 ``token_expired``,
…), and no room frame is ever sent. The gate (api/routes/admission.py) decides;
this only delivers.
"""

from fastapi import WebSocket

from itemrooms.api.access_log import log_outcome
from itemrooms.api.close_codes import Close, Reason
from itemrooms.api.runtime import STATE_KEY, Runtime
from itemrooms.auth.credentials import accepted_subprotocol

# Close reasons must fit in a control frame (125 bytes less the 2-byte code).
MAX_REASON_BYTES = 123


def note_refusal(websocket: WebSocket, reason: str, item_id: str) -> None:
    """Count it, and say it: the operator's line and the access log's."""
    runtime: Runtime | None = getattr(websocket.app.state, STATE_KEY, None)
    if runtime is not None:
        runtime.hub.metrics.rejections.labels(reason).inc()
        client = websocket.client
        address = f"{client.host}:{client.port}" if client else "-"
        runtime.rejections.refused(reason, item_id, address, websocket.headers.get("origin"))
    log_outcome(websocket, f"refused: {reason}")


async def refuse(websocket: WebSocket, close: Close, item_id: str = "-") -> None:
    code, reason = close
    if len(reason.encode()) > MAX_REASON_BYTES or not reason.isascii():
        reason = Reason.INTERNAL_ERROR
    note_refusal(websocket, reason, item_id)
    await websocket.accept(subprotocol=accepted_subprotocol(websocket))
    await websocket.close(code=code, reason=reason)
