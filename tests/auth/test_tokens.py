"""Token rules, including what python-jose alone would let through."""

import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwt

from itemrooms.auth.tokens import Claims, TokenExpired, TokenInvalid, TokenVerifier, mint_token

SECRET = "s" * 40


def sign(claims: dict[str, Any], key: str = SECRET, alg: str = "HS256", **headers: Any) -> str:
    token: str = jwt.encode(claims, key, algorithm=alg, headers=headers or None)
    return token


def now() -> int:
    """Read at each use: the suite may run long after this module was imported."""
    return int(time.time())


def base(**overrides: Any) -> dict[str, Any]:
    return {"sub": "alice", "exp": now() + 300, "iat": now(), "scope": "items:read", **overrides}


@pytest.fixture
def verifier() -> TokenVerifier:
    return TokenVerifier(algorithms=("HS256",), hmac_secret=SECRET, leeway_s=30)


def test_valid_token(verifier: TokenVerifier) -> None:
    issued = now()
    claims = verifier.verify(
        sign(base(items=["42", "sku-*"], name="Alice", iat=issued, exp=issued + 300))
    )
    assert claims == Claims(
        sub="alice",
        exp=issued + 300,
        iat=issued,
        scope=frozenset({"items:read"}),
        items=("42", "sku-*"),
        name="Alice",
    )


def test_scope_is_space_separated_or_a_list(verifier: TokenVerifier) -> None:
    assert verifier.verify(sign(base(scope="items:read  items:write"))).scope == {
        "items:read",
        "items:write",
    }
    assert verifier.verify(sign(base(scope=["items:read"]))).scope == {"items:read"}
    assert verifier.verify(sign({"sub": "a", "exp": now() + 60})).scope == frozenset()


def test_missing_exp_is_refused_though_jose_accepts_it(verifier: TokenVerifier) -> None:
    token = sign({"sub": "alice", "scope": "items:read"})
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["sub"] == "alice"  # the gap we close
    with pytest.raises(TokenInvalid):
        verifier.verify(token)


@pytest.mark.parametrize(
    "claims", [{"exp": 2**37}, {"sub": "", "exp": 2**37}, {"sub": 7, "exp": 2**37}]
)
def test_missing_or_bad_sub_is_refused(verifier: TokenVerifier, claims: dict[str, Any]) -> None:
    with pytest.raises(TokenInvalid):
        verifier.verify(sign(claims))


def test_expiry_honours_the_leeway(verifier: TokenVerifier) -> None:
    assert verifier.verify(sign(base(exp=now() - 10))).sub == "alice"
    with pytest.raises(TokenExpired):
        verifier.verify(sign(base(exp=now() - 60)))


def test_expired_with_a_bad_signature_is_invalid_not_expired(verifier: TokenVerifier) -> None:
    with pytest.raises(TokenInvalid):
        verifier.verify(sign(base(exp=now() - 60), key="k" * 40))


def test_not_before_honours_the_leeway(verifier: TokenVerifier) -> None:
    assert verifier.verify(sign(base(nbf=now() + 10))).sub == "alice"
    with pytest.raises(TokenInvalid):
        verifier.verify(sign(base(nbf=now() + 120)))


def test_issued_in_the_future_beyond_the_leeway_is_refused(verifier: TokenVerifier) -> None:
    assert verifier.verify(sign(base(iat=now() + 10))).sub == "alice"
    with pytest.raises(TokenInvalid):
        verifier.verify(sign(base(iat=now() + 120)))


def test_alg_none_is_refused(verifier: TokenVerifier) -> None:
    unsigned = sign(base()).rsplit(".", 1)[0]
    header = jwt.get_unverified_header(sign(base()))
    assert header["alg"] == "HS256"
    import base64
    import json

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    none_token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(base())}."
    for token in (none_token, unsigned + ".", f"{b64({'alg': 'None'})}.{b64(base())}."):
        with pytest.raises(TokenInvalid):
            verifier.verify(token)


def test_algorithm_outside_the_list_is_refused(verifier: TokenVerifier) -> None:
    with pytest.raises(TokenInvalid):
        verifier.verify(sign(base(), alg="HS512"))


def test_wrong_secret_is_refused(verifier: TokenVerifier) -> None:
    with pytest.raises(TokenInvalid):
        verifier.verify(sign(base(), key="x" * 40))


def test_audience_is_required_when_configured_though_jose_ignores_a_missing_one() -> None:
    verifier = TokenVerifier(algorithms=("HS256",), hmac_secret=SECRET, audience="rooms")
    no_aud = sign(base())
    assert jwt.decode(no_aud, SECRET, algorithms=["HS256"], audience="rooms")["sub"] == "alice"
    with pytest.raises(TokenInvalid):
        verifier.verify(no_aud)
    with pytest.raises(TokenInvalid):
        verifier.verify(sign(base(aud="other")))
    assert verifier.verify(sign(base(aud="rooms"))).sub == "alice"
    assert verifier.verify(sign(base(aud=["x", "rooms"]))).sub == "alice"


def test_issuer_is_checked_when_configured() -> None:
    verifier = TokenVerifier(algorithms=("HS256",), hmac_secret=SECRET, issuer="https://idp")
    assert verifier.verify(sign(base(iss="https://idp"))).sub == "alice"
    for claims in (base(iss="https://evil"), base()):
        with pytest.raises(TokenInvalid):
            verifier.verify(sign(claims))


def test_empty_hmac_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        TokenVerifier(algorithms=("HS256",), hmac_secret="")


def test_length_is_capped_before_decoding(
    verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_decode(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("decoded an oversized token")

    token = sign(base(pad="x" * 9000))
    monkeypatch.setattr(jwt, "get_unverified_header", must_not_decode)
    monkeypatch.setattr(jwt, "decode", must_not_decode)
    with pytest.raises(TokenInvalid):
        verifier.verify(token)


@pytest.mark.parametrize("garbage", ["", "a", "a.b.c", "....", "é.é.é", "eyJ" * 50, "\x00\xff.x.y"])
def test_garbage_is_invalid(verifier: TokenVerifier, garbage: str) -> None:
    with pytest.raises(TokenInvalid):
        verifier.verify(garbage)


def pem_pair(make: Callable[[], Any]) -> tuple[str, str]:
    private = make()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


@pytest.mark.parametrize(
    ("alg", "make"),
    [
        ("RS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
    ],
)
def test_public_key_algorithms(alg: str, make: Callable[[], Any]) -> None:
    private_pem, public_pem = pem_pair(make)
    verifier = TokenVerifier(algorithms=(alg,), public_key=public_pem)
    assert verifier.verify(sign(base(), key=private_pem, alg=alg)).sub == "alice"
    _, other_public = pem_pair(make)
    with pytest.raises(TokenInvalid):
        TokenVerifier(algorithms=(alg,), public_key=other_public).verify(
            sign(base(), key=private_pem, alg=alg)
        )


def test_algorithm_confusion_is_impossible() -> None:
    """An HS256 token signed with the RSA public key's PEM as the HMAC secret."""
    private_pem, public_pem = pem_pair(
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    import hashlib
    import hmac

    header, payload, _ = sign(base(), key=private_pem, alg="RS256").split(".")
    forged_header = jwt.encode({}, "k" * 32, algorithm="HS256").split(".")[0]
    signing_input = f"{forged_header}.{payload}".encode()
    digest = hmac.new(public_pem.encode(), signing_input, hashlib.sha256).digest()
    import base64

    forged = f"{forged_header}.{payload}." + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    for verifier in (
        TokenVerifier(algorithms=("RS256",), public_key=public_pem),
        TokenVerifier(algorithms=("HS256", "RS256"), hmac_secret=SECRET, public_key=public_pem),
    ):
        with pytest.raises(TokenInvalid):
            verifier.verify(forged)


def test_mint_token_round_trips(verifier: TokenVerifier) -> None:
    token = mint_token(SECRET, "bob", scope=["items:read"], items=["42"], ttl_s=60, name="Bob")
    claims = verifier.verify(token)
    assert (claims.sub, claims.scope, claims.items, claims.name) == (
        "bob",
        {"items:read"},
        ("42",),
        "Bob",
    )
    assert claims.exp - claims.iat == 60  # type: ignore[operator]


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_dates_must_be_numbers_not_strings(verifier: TokenVerifier, claim: str) -> None:
    with pytest.raises(TokenInvalid):
        verifier.verify(sign(base(**{claim: str(now() + 100)})))


def test_fractional_dates_are_numbers_too(verifier: TokenVerifier) -> None:
    issued = now()
    assert verifier.verify(sign(base(exp=issued + 300.5))).exp == issued + 300


def test_non_ascii_tokens_are_invalid(verifier: TokenVerifier) -> None:
    with pytest.raises(TokenInvalid):
        verifier.verify(sign(base()) + "é")


def test_hmac_and_public_key_algorithms_side_by_side() -> None:
    """Each token is checked with its own family's key; neither stands in for the other."""
    private_pem, public_pem = pem_pair(
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    verifier = TokenVerifier(
        algorithms=("HS256", "RS256"), hmac_secret=SECRET, public_key=public_pem
    )
    assert verifier.verify(sign(base(sub="hs"))).sub == "hs"
    assert verifier.verify(sign(base(sub="rs"), key=private_pem, alg="RS256")).sub == "rs"
