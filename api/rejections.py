"""Make every handshake rejection reach the client as a close code and reason.

A close before ``accept()`` is sent by the ASGI server as a bare HTTP 403: a
browser then sees only code 1006 and a mobile client a failed handshake, and
neither can tell an expired token from a network fault. So a rejection is
delivered by accepting the handshake and closing at once with the code and
reason: the client's very first event is the close (1008 ``token_expired``,
…), and no room frame is ever sent. The dependencies stay the place that
decides (they raise ``WebSocketException``); these handlers only deliver.

FastAPI's own handler for parameter errors would close with the error list as
the reason, which is not a string and can exceed the 123 bytes a close reason
may hold; we map it to a short reason from PROTOCOL.md's vocabulary instead.
"""

from fastapi import FastAPI, WebSocket, WebSocketException
from fastapi.exceptions import WebSocketRequestValidationError
from starlette.websockets import WebSocketState

from itemrooms.api.close_codes import POLICY_VIOLATION, Reason
from itemrooms.auth.credentials import accepted_subprotocol

# Close reasons must fit in a control frame (125 bytes less the 2-byte code).
MAX_REASON_BYTES = 123

_REASON_BY_PARAMETER = {"item_id": Reason.INVALID_ITEM_ID, "since": Reason.INVALID_SINCE}


async def close_with(websocket: WebSocket, code: int, reason: str) -> None:
    if len(reason.encode()) > MAX_REASON_BYTES or not reason.isascii():
        reason = Reason.INTERNAL_ERROR
    hub = getattr(websocket.app.state, "hub", None)
    if hub is not None:
        hub.metrics.rejections.labels(reason).inc()
    if websocket.client_state == WebSocketState.CONNECTING:
        await websocket.accept(subprotocol=accepted_subprotocol(websocket))
    await websocket.close(code=code, reason=reason)


async def on_websocket_exception(websocket: WebSocket, exc: Exception) -> None:
    assert isinstance(exc, WebSocketException)
    await close_with(websocket, exc.code, exc.reason or "")


async def on_validation_error(websocket: WebSocket, exc: Exception) -> None:
    assert isinstance(exc, WebSocketRequestValidationError)
    reason = Reason.INVALID_REQUEST
    for error in exc.errors():
        location = error.get("loc", ())
        if location and location[-1] in _REASON_BY_PARAMETER:
            reason = _REASON_BY_PARAMETER[location[-1]]
            break
    await close_with(websocket, POLICY_VIOLATION, reason)


def install_rejection_handlers(app: FastAPI) -> None:
    app.add_exception_handler(WebSocketException, on_websocket_exception)
    app.add_exception_handler(WebSocketRequestValidationError, on_validation_error)
