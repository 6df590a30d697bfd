"""Signing keys from a JWKS endpoint, chosen by ``kid``.

Keys are cached. An unknown ``kid`` (the issuer rotated its keys) triggers a
refetch, but at most once per ``min_refetch_s``: a flood of tokens with random
``kid``s must not become a flood of requests to the identity provider. Only the
configured URL is ever fetched: a token's ``jku``, ``x5u`` or ``jwk`` header is
never followed nor trusted.
"""

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

log = logging.getLogger("itemrooms.auth")

Jwk = dict[str, Any]


def fetch_jwks(url: str) -> list[Jwk]:
    response = httpx.get(url, timeout=5.0, follow_redirects=False)
    response.raise_for_status()
    keys = response.json().get("keys", [])
    return [key for key in keys if isinstance(key, dict)]


class JwksCache:
    def __init__(
        self,
        url: str,
        *,
        min_refetch_s: float = 60.0,
        max_age_s: float = 600.0,
        fetch: Callable[[str], list[Jwk]] = fetch_jwks,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._min_refetch_s = min_refetch_s
        self._max_age_s = max_age_s
        self._fetch = fetch
        self._clock = clock
        self._keys: dict[str, Jwk] = {}
        self._fetched_at: float | None = None
        # Verification runs in worker threads; one of them fetches, the others wait.
        self._lock = threading.Lock()

    def key(self, kid: str) -> Jwk | None:
        with self._lock:
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at > self._max_age_s
            unknown = kid not in self._keys
            may_fetch = self._fetched_at is None or now - self._fetched_at >= self._min_refetch_s
            if (stale or unknown) and may_fetch:
                self._refresh(now)
            return self._keys.get(kid)

    def _refresh(self, now: float) -> None:
        self._fetched_at = now  # also on failure: retrying is rate-limited the same way
        try:
            keys = self._fetch(self._url)
        except Exception as exc:  # keep serving the keys we have
            log.warning("JWKS fetch from %s failed: %s", self._url, exc)
            return
        self._keys = {key["kid"]: key for key in keys if isinstance(key.get("kid"), str)}
