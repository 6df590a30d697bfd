"""Where a WebSocket client's token comes from, and whether it may join the room.

``room_claims`` is called by the room route's gate (api/routes/admission.py), an
``async def`` dependency on purpose: FastAPI runs a plain ``def`` dependency in a
worker thread, a round trip per handshake that cost more than the handshake itself.
Nothing here blocks (a JWKS fetch goes to a thread in ``TokenVerifier.verify_async``).

PROTOCOL.md's order: ``Authorization`` header, ``bearer.<jwt>`` subprotocol,
``?token=`` query, ``session`` cookie. The first place that holds a credential
decides: a credential that is present but bad is rejected, never skipped for
the next one (otherwise a forged header could hide behind a valid cookie, or
the other way round).
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, NoReturn

from fastapi import Path, WebSocket, WebSocketException

from itemrooms.api.close_codes import POLICY_VIOLATION, Reason
from itemrooms.auth.origins import origin_allowed
from itemrooms.auth.permissions import can_join
from itemrooms.auth.tokens import Claims, TokenError, TokenVerifier

SUBPROTOCOL = "itemrooms.v1"
BEARER_SUBPROTOCOL_PREFIX = "bearer."
ITEM_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
is_item_id = re.compile(ITEM_ID_PATTERN).fullmatch
ItemId = Annotated[
    str,
    Path(pattern=ITEM_ID_PATTERN, description="The item's room: 1 to 128 of A-Z a-z 0-9 . _ : -"),
]


def accepted_subprotocol(websocket: WebSocket) -> str | None:
    """Answer ``itemrooms.v1`` when offered: a browser that offered subprotocols fails
    a handshake whose answer names none, and ``bearer.<jwt>`` must never be echoed."""
    return SUBPROTOCOL if SUBPROTOCOL in websocket.scope.get("subprotocols", ()) else None


def reject(reason: Reason | str) -> NoReturn:
    raise WebSocketException(code=POLICY_VIOLATION, reason=str(reason))


# Each place answers None (nothing there) or what it holds; "" means present but
# malformed, which bearer_credential rejects rather than skipping to the next place.
# A place that holds two credentials is malformed too: whichever one a parser keeps
# (Starlette keeps the last query value and the first header), a forged one could
# ride beside a good one.


def only(values: list[str]) -> str | None:
    """The place's one value, None if it has none, "" if it has several."""
    if not values:
        return None
    return values[0] if len(values) == 1 else ""


def bearer_value(authorization: str) -> str:
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def header_token(websocket: WebSocket) -> str | None:
    authorization = only(websocket.headers.getlist("authorization"))
    return bearer_value(authorization) if authorization else authorization


def subprotocol_token(websocket: WebSocket) -> str | None:
    offered: list[str] = websocket.scope.get("subprotocols", [])
    return only(
        [
            p[len(BEARER_SUBPROTOCOL_PREFIX) :]
            for p in offered
            if p.startswith(BEARER_SUBPROTOCOL_PREFIX)
        ]
    )


def query_token(websocket: WebSocket) -> str | None:
    return only(websocket.query_params.getlist("token"))


def cookie_token(websocket: WebSocket) -> str | None:
    """The ``session`` cookie, counted in the raw headers (Starlette's parsed cookies
    keep one of several silently)."""
    values = [
        value.strip()
        for header in websocket.headers.getlist("cookie")
        for name, _, value in (pair.partition("=") for pair in header.split(";"))
        if name.strip() == "session"
    ]
    cookie = only(values)
    return cookie if not cookie else websocket.cookies.get("session", "")


PLACES = (
    ("header", header_token),
    ("subprotocol", subprotocol_token),
    ("query", query_token),
    ("cookie", cookie_token),
)


@dataclass(frozen=True, slots=True)
class Credential:
    place: str  # "header", "subprotocol", "query" or "cookie"
    token: str


def bearer_credential(websocket: WebSocket) -> Credential:
    """The first place that holds a credential decides, in PROTOCOL.md's order (later
    places are not even looked at)."""
    for place, read in PLACES:
        token = read(websocket)
        if token is not None:
            if not token:
                reject(Reason.INVALID_TOKEN)
            return Credential(place, token)
    reject(Reason.MISSING_TOKEN)


def checked_origin(websocket: WebSocket, allowed: Sequence[str]) -> str | None:
    """The handshake's ``Origin`` if allowed, None if absent; anything else is refused."""
    origin = websocket.headers.get("origin")
    if origin is not None:
        if not origin_allowed(origin, websocket, allowed):
            reject(Reason.ORIGIN_NOT_ALLOWED)
    return origin


async def room_claims(
    websocket: WebSocket, item_id: str, verifier: TokenVerifier, allowed_origins: Sequence[str]
) -> Claims:
    """The verified claims of a client allowed to join ``item_id``.

    One call, not one dependency per credential place: FastAPI's dependency solving
    costs about as much per dependency as the token check itself, and a room
    server takes handshakes by the thousand when clients reconnect together."""
    origin = checked_origin(websocket, allowed_origins)
    credential = bearer_credential(websocket)
    if credential.place == "cookie" and origin is None:
        # Only a browser sends cookies by itself, and every browser sends an Origin.
        reject(Reason.ORIGIN_NOT_ALLOWED)
    try:
        claims = await verifier.verify_async(credential.token)
    except TokenError as exc:
        reject(exc.reason)
    if not can_join(claims, item_id):
        reject(Reason.FORBIDDEN)
    return claims
