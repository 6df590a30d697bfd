"""Keys from a JWKS endpoint: chosen by kid, cached, refetched on rotation at most
once per interval, and nothing ever fetched or trusted from a token's own headers."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt

from itemrooms.auth.jwks import Jwk, JwksCache
from itemrooms.auth.tokens import TokenInvalid, TokenVerifier
from tests.auth.test_tokens import base, pem_pair


def rsa_pair() -> tuple[str, str]:
    return pem_pair(lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048))


def public_jwk(public_pem: str, kid: str) -> Jwk:
    key: Jwk = jwk.construct(public_pem, "RS256").to_dict()
    return {**key, "kid": kid, "use": "sig"}


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingFetch:
    def __init__(self, keys: list[Jwk]) -> None:
        self.keys = keys
        self.calls = 0

    def __call__(self, url: str) -> list[Jwk]:
        self.calls += 1
        return list(self.keys)


def test_keys_are_cached_and_unknown_kids_refetch_at_most_once_per_interval() -> None:
    fetch, clock = CountingFetch([{"kid": "k1", "kty": "RSA"}]), Clock()
    cache = JwksCache("http://idp/jwks", min_refetch_s=60, max_age_s=600, fetch=fetch, clock=clock)
    assert cache.key("k1") is not None and fetch.calls == 1
    assert cache.key("k1") is not None and fetch.calls == 1
    for i in range(1000):  # a flood of random kids
        assert cache.key(f"random-{i}") is None
    assert fetch.calls == 1
    clock.now += 61
    fetch.keys.append({"kid": "k2", "kty": "RSA"})  # the issuer rotated
    assert cache.key("k2") is not None and fetch.calls == 2
    clock.now += 601
    assert cache.key("k1") is not None and fetch.calls == 3  # stale: refreshed


def test_a_failed_fetch_keeps_the_keys_it_had() -> None:
    clock = Clock()
    answers: list[Any] = [[{"kid": "k1", "kty": "RSA"}], OSError("idp down")]

    def fetch(url: str) -> list[Jwk]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    cache = JwksCache("http://idp/jwks", max_age_s=10, fetch=fetch, clock=clock)
    assert cache.key("k1") is not None
    clock.now += 100
    assert cache.key("k1") is not None and answers == []


class JwksServer:
    """A local identity provider: serves a JWKS and counts requests per path."""

    def __init__(self, keys: list[Jwk]) -> None:
        self.keys = keys
        self.hits: dict[str, int] = {}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits[self.path] = owner.hits.get(self.path, 0) + 1
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def idp() -> Iterator[tuple[JwksServer, str]]:
    private_pem, public_pem = rsa_pair()
    server = JwksServer([public_jwk(public_pem, "k1")])
    yield server, private_pem
    server.close()


def test_verifying_with_a_jwks_endpoint(idp: tuple[JwksServer, str]) -> None:
    server, private_pem = idp
    verifier = TokenVerifier(algorithms=("RS256",), jwks=JwksCache(server.url + "/jwks"))
    token = jwt.encode(base(), private_pem, algorithm="RS256", headers={"kid": "k1"})
    assert verifier.verify(token).sub == "alice"
    for headers in ({"kid": "nope"}, {}):
        with pytest.raises(TokenInvalid):
            verifier.verify(jwt.encode(base(), private_pem, algorithm="RS256", headers=headers))
    assert server.hits == {"/jwks": 1}


def test_jku_x5u_and_jwk_headers_are_never_followed_nor_trusted(
    idp: tuple[JwksServer, str],
) -> None:
    server, _ = idp
    attacker_private, attacker_public = rsa_pair()
    verifier = TokenVerifier(algorithms=("RS256",), jwks=JwksCache(server.url + "/jwks"))
    headers = {
        "kid": "k1",
        "jku": server.url + "/attacker-jwks",
        "x5u": server.url + "/attacker-cert",
        "jwk": public_jwk(attacker_public, "k1"),
    }
    forged = jwt.encode(base(), attacker_private, algorithm="RS256", headers=headers)
    with pytest.raises(TokenInvalid):
        verifier.verify(forged)
    assert set(server.hits) == {"/jwks"}


def test_a_jwks_key_for_another_algorithm_is_refused(idp: tuple[JwksServer, str]) -> None:
    server, private_pem = idp
    server.keys[0]["alg"] = "RS512"
    verifier = TokenVerifier(algorithms=("RS256", "RS512"), jwks=JwksCache(server.url + "/jwks"))
    with pytest.raises(TokenInvalid):
        verifier.verify(jwt.encode(base(), private_pem, algorithm="RS256", headers={"kid": "k1"}))


def test_with_a_jwks_the_key_named_by_kid_is_used_not_a_configured_pem(
    idp: tuple[JwksServer, str],
) -> None:
    server, private_pem = idp
    _, other_public = rsa_pair()
    verifier = TokenVerifier(
        algorithms=("RS256",), public_key=other_public, jwks=JwksCache(server.url + "/jwks")
    )
    token = jwt.encode(base(), private_pem, algorithm="RS256", headers={"kid": "k1"})
    assert verifier.verify(token).sub == "alice"
