"""``make run``'s mode: a generated secret with a loud warning, and printed demo
links whose tokens open the room."""

import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from jose import jwt

from tests.support.client import join
from tests.support.server import ServerProcess


async def test_development_server_prints_working_demo_links(tmp_path: Path) -> None:
    secret_file = tmp_path / "dev-secret"
    server = ServerProcess(
        {"ITEMROOMS_ENV": "development", "ITEMROOMS_DEV_SECRET_FILE": str(secret_file)},
        cwd=tmp_path,
    ).start()
    try:
        assert "DEVELOPMENT MODE" in server.output
        links = dict(re.findall(r"(alice|bob):\s+(http://\S+)", server.output))
        assert set(links) == {"alice", "bob"}
        for user, link in links.items():
            parts = urlsplit(link)
            assert parts.netloc == f"127.0.0.1:{server.port}" and parts.path == "/"
            fragment = parse_qs(
                parts.fragment
            )  # the token is in the fragment, never sent to servers
            token, item = fragment["token"][0], fragment["item"][0]
            claims = jwt.get_unverified_claims(token)
            assert claims["exp"] - claims["iat"] == 3600
            ws, welcome = await join(server, item, token)
            async with ws:
                assert welcome["user"] == user
        assert server.get("/").status_code == 200
        assert secret_file.read_text().strip()
    finally:
        server.stop()
