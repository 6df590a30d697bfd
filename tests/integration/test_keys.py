"""Public-key tokens end to end: RS256 through a JWKS endpoint, and algorithm confusion
(an HS256 token signed with the public key) refused on the wire."""

import hashlib
import hmac
from base64 import urlsafe_b64encode
from collections.abc import Callable

from jose import jwt

from tests.auth.test_jwks import JwksServer, public_jwk, rsa_pair
from tests.auth.test_tokens import base
from tests.support.client import closed_with, join, open_room
from tests.support.server import ServerProcess


def b64(data: bytes) -> str:
    return urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_rs256_with_jwks_and_no_algorithm_confusion(
    start_server: Callable[..., ServerProcess], item: str
) -> None:
    private_pem, public_pem = rsa_pair()
    idp = JwksServer([public_jwk(public_pem, "k1")])
    try:
        server = start_server(jwt_algorithms="RS256", jwks_url=idp.url + "/jwks")
        token = jwt.encode(
            base(sub="rs-user"), private_pem, algorithm="RS256", headers={"kid": "k1"}
        )
        ws, welcome = await join(server, item, token)
        async with ws:
            assert welcome["user"] == "rs-user"
        # HS256 signed with the public key's PEM as the HMAC secret.
        header = b64(b'{"alg":"HS256","typ":"JWT","kid":"k1"}')
        payload = token.split(".")[1]
        mac = hmac.new(public_pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256)
        forged = f"{header}.{payload}.{b64(mac.digest())}"
        rejected = await open_room(server, item, forged)
        assert await closed_with(rejected) == (1008, "invalid_token")
        unknown = jwt.encode(base(), private_pem, algorithm="RS256", headers={"kid": "other"})
        rejected = await open_room(server, item, unknown)
        assert await closed_with(rejected) == (1008, "invalid_token")
        assert idp.hits == {"/jwks": 1}
    finally:
        idp.close()
