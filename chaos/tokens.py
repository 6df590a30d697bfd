"""HS256 tokens for the kit's clients, minted here so the kit needs none of the server."""

import time
from collections.abc import Mapping

from jose import jwt

SCOPE = "items:read items:write"


def mint(
    secret: str, sub: str, ttl_s: float = 3600, claims: Mapping[str, str] | None = None
) -> str:
    """A token for ``sub`` that may read and write every item.

    ``claims`` adds ``iss``/``aud`` when the configuration checks them."""
    payload: dict[str, object] = {"sub": sub, "exp": int(time.time() + ttl_s), "scope": SCOPE}
    payload.update(claims or {})
    token: str = jwt.encode(payload, secret, algorithm="HS256")
    return token
