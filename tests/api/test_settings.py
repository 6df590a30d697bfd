import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from itemrooms.api.settings import Settings

GOOD = "g" * 32


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ITEMROOMS_JWT_SECRET", "ITEMROOMS_ENV", "ITEMROOMS_JWT_ALGORITHMS"):
        monkeypatch.delenv(name, raising=False)


def test_production_needs_a_secret() -> None:
    with pytest.raises(ValidationError, match="ITEMROOMS_JWT_SECRET is not set"):
        Settings()


def test_production_refuses_a_short_secret() -> None:
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(jwt_secret="short")
    assert Settings(jwt_secret=GOOD).hmac_secret() == GOOD


def test_development_allows_a_short_secret_but_never_an_empty_one() -> None:
    assert Settings(jwt_secret="short", env="development").hmac_secret() == "short"
    with pytest.raises(ValidationError, match="empty"):
        Settings(jwt_secret="", env="development")


def test_development_generates_one_secret_and_keeps_it_private(tmp_path: Path) -> None:
    path = tmp_path / "dev-secret"
    first = Settings(env="development", dev_secret_file=path).hmac_secret()
    second = Settings(env="development", dev_secret_file=path).hmac_secret()
    assert first == second and len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_environment_variables_and_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITEMROOMS_JWT_SECRET", GOOD)
    monkeypatch.setenv("ITEMROOMS_JWT_ALGORITHMS", "HS256, RS256")
    monkeypatch.setenv("ITEMROOMS_JWT_PUBLIC_KEY", "PEM")
    monkeypatch.setenv("ITEMROOMS_ALLOWED_ORIGINS", "https://a.example,https://b.example")
    monkeypatch.setenv("ITEMROOMS_SEND_QUEUE", "64")
    settings = Settings()
    assert settings.jwt_algorithms == ["HS256", "RS256"]
    assert settings.allowed_origins == ["https://a.example", "https://b.example"]
    assert settings.send_queue == 64


def test_defaults_match_the_operating_contract() -> None:
    s = Settings(jwt_secret=GOOD)
    assert (s.jwt_algorithms, s.jwt_leeway_s, s.backend, s.redis_url) == (
        ["HS256"],
        30,
        "memory",
        "redis://127.0.0.1:6379/0",
    )
    assert (s.history_size, s.max_message_bytes, s.send_queue, s.rate_limit) == (
        1000,
        65536,
        1024,
        50,
    )
    # docs/PROTOCOL.md's v1.2 presence: batches of 500 ms, large above 100 users, 5 s grace.
    presence = (s.presence_interval_ms, s.presence_list_max, s.presence_grace_s)
    assert presence == (500, 100, 5.0)


@pytest.mark.parametrize("algorithms", ["none", "HS256,none", ""])
def test_unknown_algorithms_are_refused(algorithms: str) -> None:
    with pytest.raises(ValidationError):
        Settings(jwt_secret=GOOD, jwt_algorithms=algorithms)


def test_public_key_only_needs_no_secret() -> None:
    assert Settings(jwt_algorithms="RS256", jwt_public_key="PEM").jwt_secret is None
    assert Settings(jwt_algorithms="ES256", jwks_url="https://idp/jwks").jwt_secret is None


def test_public_key_algorithms_need_a_key_source() -> None:
    with pytest.raises(ValidationError, match="ITEMROOMS_JWT_PUBLIC_KEY or ITEMROOMS_JWKS_URL"):
        Settings(jwt_algorithms="RS256")


@pytest.mark.parametrize("on", [False, True])
def test_fastapi_opentelemetry_follows_the_setting(on: bool) -> None:
    """Off by default: FastAPI would otherwise look for providers on every handshake."""
    from itemrooms.api.app import create_app

    app = create_app(Settings(jwt_secret=GOOD, opentelemetry=on))
    config = app._telemetry  # FastAPI keeps what it was given here
    assert (config["tracing"], config["metrics"], config["logs"]) == (on, on, on)
