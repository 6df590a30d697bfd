"""Credentials never reach the logs (PROTOCOL.md's operating contract), at any level."""

import logging
from collections.abc import Callable

import pytest

from itemrooms.api.log_redaction import RedactSecrets, redact
from tests.conftest import Mint
from tests.support.client import closed_with, join, open_room
from tests.support.server import ServerProcess

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        (f"/items/1/ws?token={JWT}", JWT),
        ("/items/1/ws?since=3&token=opaque-value&x=1", "opaque-value"),
        ("/x?access_token=opaque-value", "opaque-value"),
        ("< authorization: Bearer opaque-value", "opaque-value"),
        ("< Cookie: theme=dark; session=opaque-value", "opaque-value"),
        ("< sec-websocket-protocol: itemrooms.v1, bearer.opaque-value", "opaque-value"),
        ("scope={'headers': [(b'authorization', b'Bearer opaque-value')]}", "opaque-value"),
        ("scope={'query_string': b'token=opaque-value'}", "opaque-value"),
        (f"some message mentioning {JWT} in passing", JWT),
    ],
)
def test_redact(line: str, secret: str) -> None:
    assert secret not in redact(line)
    assert "[redacted" in redact(line)


def test_ordinary_text_is_left_alone() -> None:
    line = '127.0.0.1:5000 - "WebSocket /items/42/ws?since=3" [accepted]'
    assert redact(line) == line


def test_access_log_arguments_stay_a_tuple() -> None:
    """uvicorn's access formatter unpacks the arguments of its records."""
    args = ("1.2.3.4:5", "GET", f"/healthz?token={JWT}", "1.1", 200)
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, "f", 1, '%s - "%s %s HTTP/%s" %d', args, None
    )
    RedactSecrets().filter(record)
    assert isinstance(record.args, tuple) and len(record.args) == 5
    assert JWT not in record.getMessage()


def test_filter_rewrites_message_and_arguments() -> None:
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        "f",
        1,
        '%s - "WebSocket %s"',
        ("1.2.3.4", f"/ws?token={JWT}"),
        None,
    )
    RedactSecrets().filter(record)
    assert JWT not in record.getMessage() and "1.2.3.4" in record.getMessage()


@pytest.mark.parametrize("level", ["info", "trace"])
async def test_no_token_reaches_the_server_log_at_any_level(
    start_server: Callable[..., ServerProcess], mint: Mint, item: str, level: str
) -> None:
    server = start_server(log_level=level, access_log=True)
    token = mint("logged")
    for via in ("header", "subprotocol", "query", "cookie"):
        ws, _ = await join(server, item, token, via=via)  # type: ignore[arg-type]
        await ws.close()
    rejected = await open_room(server, item, token + "x")
    await closed_with(rejected)
    # An HTTP request with a token in its query goes through uvicorn's access log.
    assert server.get(f"/healthz?token={token}").status_code == 200
    assert server.wait_for_output("/healthz?token=[redacted")
    assert server.wait_for_output(f"/items/{item}/ws?token=[redacted")
    server.stop()
    signature = token.rsplit(".", 1)[1]
    assert signature not in server.output
    assert "Logging error" not in server.output
    assert token.split(".")[1] not in server.output  # nor the claims


async def test_handshakes_are_not_logged_one_by_one_unless_asked(
    start_server: Callable[..., ServerProcess], mint: Mint, item: str
) -> None:
    """ITEMROOMS_ACCESS_LOG is off by default: no line per WebSocket or HTTP request."""
    server = start_server()
    ws, _ = await join(server, item, mint("quiet"))
    await ws.close()
    assert server.get("/healthz").status_code == 200
    server.stop()
    assert "Uvicorn running on" in server.output  # the log itself is there
    assert '"WebSocket /items/' not in server.output
    assert "connection open" not in server.output
    assert "GET /healthz" not in server.output
