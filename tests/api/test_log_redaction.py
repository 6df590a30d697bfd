"""Credentials never reach the logs (PROTOCOL.md's operating contract)."""

import logging

import pytest

from api.log_redaction import RedactSecrets, redact
from tests.conftest import Mint
from tests.support.client import join
from tests.support.server import ServerProcess


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/items/1/ws?token=abc.def.ghi", "/items/1/ws?token=[redacted]"),
        ("/items/1/ws?since=3&token=abc&x=1", "/items/1/ws?since=3&token=[redacted]&x=1"),
        ("/x?TOKEN=abc", "/x?TOKEN=[redacted]"),
        ("/x?access_token=abc", "/x?access_token=[redacted]"),
        ("/x?mytoken=abc", "/x?mytoken=abc"),
    ],
)
def test_redact(line: str, expected: str) -> None:
    assert redact(line) == expected


def test_filter_rewrites_message_and_arguments() -> None:
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        "f",
        1,
        '%s - "WebSocket %s" ?token=a',
        ("1.2.3.4", "/ws?token=secret"),
        None,
    )
    RedactSecrets().filter(record)
    assert "secret" not in record.getMessage() and record.getMessage().count("[redacted]") == 2


async def test_a_query_token_never_reaches_the_server_log(
    server: ServerProcess, mint: Mint, item: str
) -> None:
    token = mint("logged")
    ws, _ = await join(server, item, token, via="query")
    await ws.close()
    rejected, _ = await join(server, item, mint("other"), via="query")
    await rejected.close()
    signature = token.rsplit(".", 1)[1]
    # The handshake line is logged when accepted; read it back from the server output.
    assert server.wait_for_output(f"/items/{item}/ws?token=[redacted]")
    assert signature not in server.output
