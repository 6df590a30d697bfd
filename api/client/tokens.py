"""Tokens as the client handles them: a token or a function that makes a fresh one, and a
token's ``exp``, read only to schedule a refresh (the server does the verifying).

Apart from the room so that "a function is asked again at every reconnect and refresh" and
"the client never trusts a token's claims" each live in one place.
"""

from __future__ import annotations

import base64
import inspect
import json
from collections.abc import Awaitable, Callable

# A token, or a function (plain or async) that returns a fresh one each time it is called:
# what an app's auth layer usually offers, and what reconnects and refreshes need.
TokenSource = str | Callable[[], str] | Callable[[], Awaitable[str]]


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read **without verifying** it; None if there is none.

    Only to schedule a refresh: the client never trusts a token's claims, the server does
    the verifying.
    """
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp") if isinstance(claims, dict) else None
    except (IndexError, ValueError):
        return None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


async def _resolve(source: TokenSource) -> str:
    if isinstance(source, str):
        return source
    token = source()
    if inspect.isawaitable(token):
        token = await token
    if not isinstance(token, str):
        raise TypeError(f"the token source returned {type(token).__name__}, not a str")
    return token
