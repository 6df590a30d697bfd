"""Where a WebSocket client's token comes from, as FastAPI dependencies.

PROTOCOL.md's order: ``Authorization`` header, ``bearer.<jwt>`` subprotocol,
``?token=`` query, ``session`` cookie. The first place that holds a credential
decides: a credential that is present but bad is rejected, never skipped for
the next one (otherwise a forged header could hide behind a valid cookie, or
the other way round).
"""

from typing import Annotated, NoReturn

from fastapi import Cookie, Depends, Header, Path, Query, WebSocket, WebSocketException

from api.close_codes import POLICY_VIOLATION, Reason
from auth.permissions import can_join
from auth.tokens import Claims, TokenError, TokenVerifier

SUBPROTOCOL = "itemrooms.v1"
BEARER_SUBPROTOCOL_PREFIX = "bearer."
ITEM_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


def accepted_subprotocol(websocket: WebSocket) -> str | None:
    """Answer ``itemrooms.v1`` when offered: a browser that offered subprotocols fails
    a handshake whose answer names none, and ``bearer.<jwt>`` must never be echoed."""
    return SUBPROTOCOL if SUBPROTOCOL in websocket.scope.get("subprotocols", ()) else None


def reject(reason: Reason | str) -> NoReturn:
    raise WebSocketException(code=POLICY_VIOLATION, reason=str(reason))


def header_token(authorization: Annotated[str | None, Header()] = None) -> str | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        reject(Reason.INVALID_TOKEN)
    return token.strip()


def subprotocol_token(websocket: WebSocket) -> str | None:
    for offered in websocket.scope.get("subprotocols", ()):
        if offered.startswith(BEARER_SUBPROTOCOL_PREFIX):
            token: str = offered[len(BEARER_SUBPROTOCOL_PREFIX) :]
            if not token:
                reject(Reason.INVALID_TOKEN)
            return token
    return None


def query_token(token: Annotated[str | None, Query()] = None) -> str | None:
    if token is not None and not token:
        reject(Reason.INVALID_TOKEN)
    return token


def cookie_token(session: Annotated[str | None, Cookie()] = None) -> str | None:
    if session is not None and not session:
        reject(Reason.INVALID_TOKEN)
    return session


def bearer_credential(
    header: Annotated[str | None, Depends(header_token)],
    subprotocol: Annotated[str | None, Depends(subprotocol_token)],
    query: Annotated[str | None, Depends(query_token)],
    cookie: Annotated[str | None, Depends(cookie_token)],
) -> str:
    for token in (header, subprotocol, query, cookie):
        if token is not None:
            return token
    reject(Reason.MISSING_TOKEN)


def get_verifier(websocket: WebSocket) -> TokenVerifier:
    verifier: TokenVerifier = websocket.app.state.verifier
    return verifier


def room_claims(
    item_id: Annotated[str, Path(pattern=ITEM_ID_PATTERN)],
    token: Annotated[str, Depends(bearer_credential)],
    verifier: Annotated[TokenVerifier, Depends(get_verifier)],
) -> Claims:
    """The verified claims of a client allowed to join ``item_id``."""
    try:
        claims = verifier.verify(token)
    except TokenError as exc:
        reject(exc.reason)
    if not can_join(claims, item_id):
        reject(Reason.FORBIDDEN)
    return claims


RoomClaims = Annotated[Claims, Depends(room_claims)]
