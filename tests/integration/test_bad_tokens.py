"""Every kind of bad token, as a hostile client sends it over a real connection:
each ends in 1008 with PROTOCOL.md's reason, and the service stays healthy."""

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from jose import jwt

from tests.auth.test_jwks import rsa_pair
from tests.conftest import SECRET
from tests.support.client import closed_with, open_room
from tests.support.server import ServerProcess

ISSUER, AUDIENCE = "https://idp.example", "itemrooms"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "eve", "exp": now + 300, "iat": now, "scope": "items:read items:write"}
    base.update({"iss": ISSUER, "aud": AUDIENCE})
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def signed(alg: str = "HS256", key: str = SECRET, **overrides: Any) -> str:
    token: str = jwt.encode(claims(**overrides), key, algorithm=alg)
    return token


def bad_tokens() -> Iterator[tuple[str, str, str]]:
    """(name, token, reason the client must see)."""
    now = int(time.time())
    private_pem, _ = rsa_pair()
    yield "malformed", "this.is.not-a-jwt", "invalid_token"
    yield "one segment", "eyJhbGciOiJIUzI1NiJ9", "invalid_token"
    yield "alg none", f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}.", "invalid_token"
    yield "alg None", f"{b64({'alg': 'None'})}.{b64(claims())}.", "invalid_token"
    yield "unlisted algorithm", signed(alg="HS512"), "invalid_token"
    yield "wrong key", signed(key="k" * 48), "invalid_token"
    yield "RS256 not configured", signed(alg="RS256", key=private_pem), "invalid_token"
    yield "expired", signed(exp=now - 120), "token_expired"
    yield "not yet valid", signed(nbf=now + 600), "invalid_token"
    yield "issued in the future", signed(iat=now + 600), "invalid_token"
    yield "missing sub", signed(sub=None), "invalid_token"
    yield "missing exp", signed(exp=None), "invalid_token"
    yield "string exp", signed(exp=str(now + 300)), "invalid_token"
    yield "exp beyond any clock", signed(exp=10**400), "invalid_token"
    yield "exp a huge float", signed(exp=1e300), "invalid_token"
    yield "exp NaN", signed(exp=float("nan")), "invalid_token"
    yield "exp Infinity", signed(exp=float("inf")), "invalid_token"
    yield "iat negative", signed(iat=-(10**400)), "invalid_token"
    yield "wrong iss", signed(iss="https://evil.example"), "invalid_token"
    yield "missing iss", signed(iss=None), "invalid_token"
    yield "wrong aud", signed(aud="someone-else"), "invalid_token"
    yield "missing aud", signed(aud=None), "invalid_token"
    yield "oversized", signed(pad="x" * 3000), "invalid_token"
    yield "not ASCII", signed()[:-2] + "éé", "invalid_token"
    yield "tampered claims", signed().replace(".", ".x", 1), "invalid_token"
    yield "no read scope", signed(scope="items:write"), "forbidden"
    yield "other items only", signed(items=["sku-*"]), "forbidden"


BAD = list(bad_tokens())


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from tests.conftest import server_env

    env = server_env(jwt_issuer=ISSUER, jwt_audience=AUDIENCE, max_token_bytes=2048)
    proc = ServerProcess(env, cwd=tmp_path_factory.mktemp("strict")).start()
    yield proc
    proc.stop()


@pytest.mark.parametrize(("name", "token", "reason"), BAD, ids=[b[0] for b in BAD])
async def test_bad_token(
    strict_server: ServerProcess, item: str, name: str, token: str, reason: str
) -> None:
    ws = await open_room(
        strict_server, item, None, additional_headers={"Authorization": f"Bearer {token}"}
    )
    assert await closed_with(ws) == (1008, reason), name


async def test_the_good_token_of_the_same_shape_joins(
    strict_server: ServerProcess, item: str
) -> None:
    ws = await open_room(strict_server, item, signed())
    frame = json.loads(await ws.recv())
    assert frame["type"] == "welcome" and frame["user"] == "eve"
    await ws.close()


async def test_after_all_of_them_the_service_is_healthy_and_logged_no_token(
    strict_server: ServerProcess,
) -> None:
    await assert_healthy_strict(strict_server)
    output = strict_server.output
    assert "Traceback" not in output and "ERROR" not in output, output
    for name, token, _ in BAD:
        parts = token.split(".")
        if len(parts) == 3 and len(parts[2]) > 10:
            assert parts[2] not in output, name


async def assert_healthy_strict(server: ServerProcess) -> None:
    ws = await open_room(server, "health", signed(sub="health"))
    assert json.loads(await ws.recv())["type"] == "welcome"
    await ws.send(json.dumps({"type": "publish", "data": "ok", "ref": "h"}))
    assert json.loads(await ws.recv())["ref"] == "h"
    await ws.close()
