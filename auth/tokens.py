"""JWT verification and minting: the only module that imports python-jose.

python-jose is lenient where we must not be, so this module adds what it does
not enforce itself (checked by tests/auth/test_tokens.py):
- a token without ``exp`` is accepted by default: we require ``exp`` and ``sub``;
- a token without ``aud`` passes even when an audience is configured: we refuse it;
- an empty HMAC key is accepted: Settings refuses one before we get here;
- an ``iat`` in the future is not checked: we refuse one beyond the leeway;
- any token length is decoded: we cap it before decoding.
"""

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jose import jwk, jwt
from jose.backends.base import Key
from jose.exceptions import ExpiredSignatureError, JOSEError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from itemrooms.api.close_codes import Reason
from itemrooms.auth.jwks import Jwk, JwksCache

log = logging.getLogger("itemrooms.auth")


class TokenError(Exception):
    """A token we refuse; ``reason`` is the close reason a client sees."""

    reason = Reason.INVALID_TOKEN


class TokenInvalid(TokenError):
    reason = Reason.INVALID_TOKEN


class TokenExpired(TokenError):
    reason = Reason.TOKEN_EXPIRED


# 9999-12-31T23:59:59Z: any real date, and far inside what a float and a timer hold.
MAX_NUMERIC_DATE = 253402300799


class Claims(BaseModel):
    """The claims itemrooms reads; others are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    sub: str = Field(min_length=1, max_length=256)
    exp: int
    nbf: int | None = None
    iat: int | None = None
    scope: frozenset[str] = frozenset()
    items: tuple[str, ...] | None = None
    name: str | None = Field(None, max_length=256)

    @field_validator("exp", "nbf", "iat", mode="before")
    @classmethod
    def _numeric_date(cls, value: object) -> object:
        # RFC 7519 NumericDate: a JSON number (fractions allowed), never a string; and
        # a date a clock can hold (10**400 joined, then failed to schedule the expiry).
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("a NumericDate must be a JSON number")
        if not 0 <= value <= MAX_NUMERIC_DATE:  # also false for NaN
            raise ValueError(f"a NumericDate must be between 0 and {MAX_NUMERIC_DATE}")
        return int(value)

    @field_validator("scope", mode="before")
    @classmethod
    def _split_scope(cls, value: object) -> object:
        # RFC 8693: a space-separated string. A list is accepted too (some issuers emit one).
        if isinstance(value, str):
            return frozenset(value.split())
        return value


@dataclass(frozen=True, slots=True)
class TokenVerifier:
    """Checks tokens against the configured keys and rules.

    The key is chosen by the token's ``alg`` family, never by anything else in
    the header: an HS256 token is only ever checked with the HMAC secret, so a
    public key can never be used as an HMAC secret (algorithm confusion).
    """

    algorithms: tuple[str, ...]
    hmac_secret: str | None = None
    public_key: str | None = None
    jwks: JwksCache | None = None
    issuer: str | None = None
    audience: str | None = None
    leeway_s: int = 30
    max_token_bytes: int = 8192
    _options: Mapping[str, Any] = field(init=False, repr=False)
    # jose Key objects built once: given a string, python-jose tries to parse it as
    # JSON and builds a new key object on every decode.
    _keys: Mapping[str, Key] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.hmac_secret is not None and not self.hmac_secret:
            raise ValueError("empty HMAC secret")
        options = {
            "require_exp": True,
            "require_sub": True,
            "verify_aud": self.audience is not None,
            "verify_iss": self.issuer is not None,
            "leeway": self.leeway_s,
        }
        object.__setattr__(self, "_options", options)
        keys: dict[str, Key] = {}
        # The same choice as _key_for: with a JWKS, asymmetric keys come from it by kid.
        static_public = self.public_key if self.jwks is None else None
        for alg in self.algorithms:
            material = self.hmac_secret if alg.startswith("HS") else static_public
            if material is not None:
                try:
                    keys[alg] = jwk.construct(material, alg)
                except JOSEError:
                    pass  # refused at verify time, with the token's own error
        object.__setattr__(self, "_keys", keys)

    def _key_for(self, alg: str, header: Mapping[str, Any]) -> Key | str | Jwk:
        if alg not in self.algorithms:
            raise TokenInvalid(f"algorithm {alg!r} not accepted")
        if alg in self._keys:
            return self._keys[alg]
        if alg.startswith("HS"):
            key: str | Jwk | None = self.hmac_secret
        elif self.jwks is not None:
            kid = header.get("kid")
            key = self.jwks.key(kid) if isinstance(kid, str) else None
            if key is not None and key.get("alg", alg) != alg:
                raise TokenInvalid("the key named by kid is for another algorithm")
        else:
            key = self.public_key
        if key is None:
            raise TokenInvalid(f"no key for {alg}")
        return key

    async def verify_async(self, token: str) -> Claims:
        """``verify`` from async code: inline (microseconds of CPU) unless a JWKS may
        have to be fetched over the network, which then runs in a thread."""
        if self.jwks is None:
            return self.verify(token)
        return await asyncio.to_thread(self.verify, token)

    def verify(self, token: str, now: float | None = None) -> Claims:
        """Return the claims of a valid token or raise a TokenError."""
        # Tokens are ASCII (base64url and dots), so characters are bytes here.
        if len(token) > self.max_token_bytes or not token.isascii():
            raise TokenInvalid("token too long or not ASCII")
        try:
            header = jwt.get_unverified_header(token)
            alg = header.get("alg")
            if not isinstance(alg, str):
                raise TokenInvalid("no alg")
            raw = jwt.decode(
                token,
                self._key_for(alg, header),
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                options=dict(self._options),
            )
        except TokenError:
            raise
        except ExpiredSignatureError as exc:
            raise TokenExpired("expired") from exc
        except Exception as exc:  # hostile input may raise anything inside the JWT library
            raise TokenInvalid(f"{type(exc).__name__}: {exc}") from exc
        if self.audience is not None and "aud" not in raw:
            raise TokenInvalid("missing aud")
        try:
            claims = Claims.model_validate(raw)
        except ValidationError as exc:
            raise TokenInvalid("bad claims") from exc
        current = time.time() if now is None else now
        if claims.iat is not None and claims.iat > current + self.leeway_s:
            raise TokenInvalid("issued in the future")
        return claims


def mint_token(
    secret: str,
    sub: str,
    *,
    scope: Iterable[str] = ("items:read", "items:write"),
    items: Iterable[str] | None = None,
    ttl_s: int = 3600,
    name: str | None = None,
    algorithm: str = "HS256",
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Sign a token: for the CLI, the demo page and tests, not for production issuers."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl_s, "scope": " ".join(scope)}
    if items is not None:
        claims["items"] = list(items)
    if name is not None:
        claims["name"] = name
    claims.update(extra or {})
    token: str = jwt.encode(claims, secret, algorithm=algorithm)
    return token
