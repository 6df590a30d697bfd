"""Bearer tokens on the HTTP API, for application backends (RFC 6750 errors).

Only the ``Authorization`` header counts here: a backend service has no reason to
put a token in a URL or a cookie. A missing or bad token is 401 with a
``WWW-Authenticate: Bearer`` challenge; a valid token without the scope or the
item is 403.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from itemrooms.api.runtime import runtime
from itemrooms.auth.credentials import ItemId
from itemrooms.auth.permissions import item_allowed
from itemrooms.auth.tokens import Claims, TokenError


def challenge(error: str, description: str) -> HTTPException:
    value = f'Bearer error="{error}", error_description="{description}"'
    return HTTPException(401, description, headers={"WWW-Authenticate": value})


async def http_claims(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Claims:
    if authorization is None:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    if len(request.headers.getlist("authorization")) > 1:
        # Which one would count is up to each parser on the way: refuse both (RFC 6750
        # calls a request with more than one token invalid_request).
        raise challenge("invalid_request", "more than one Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise challenge("invalid_request", "use Authorization: Bearer <token>")
    verifier = runtime(request).verifier
    try:
        return await verifier.verify_async(token.strip())
    except TokenError as exc:
        raise challenge("invalid_token", str(exc.reason)) from exc


def scoped(scope: str) -> Callable[..., Awaitable[Claims]]:
    """A dependency: the claims of a token with ``scope`` for the path's item."""

    async def dependency(
        item_id: ItemId,
        claims: Annotated[Claims, Depends(http_claims)],
    ) -> Claims:
        if scope not in claims.scope:
            raise HTTPException(403, f"token lacks {scope}")
        if not item_allowed(claims, item_id):
            raise HTTPException(403, "token does not cover this item")
        return claims

    return dependency


Reader = Annotated[Claims, Depends(scoped("items:read"))]
Writer = Annotated[Claims, Depends(scoped("items:write"))]
Admin = Annotated[Claims, Depends(scoped("items:admin"))]
