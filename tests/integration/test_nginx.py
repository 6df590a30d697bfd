"""deploy/nginx/itemrooms.conf.template, run for real: Debian's nginx terminating TLS
(a certificate made here) in front of two itemrooms processes on Redis, and a real
``wss://`` client from another loopback address. Rooms work across the two processes,
close codes and reasons pass through, the same-origin check sees the client's scheme,
and the servers log the client's address, not the proxy's."""

import asyncio
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from string import Template

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import Mint
from tests.support.client import recv_type, send_json
from tests.support.server import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "nginx" / "itemrooms.conf.template"
CLIENT_ADDRESS = "127.0.0.2"  # not the proxy's 127.0.0.1: whose address is logged shows
START_TIMEOUT_S = 10.0

Starter = Callable[..., ServerProcess]


def certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=DNS:localhost"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.fixture
def nginx(
    tmp_path: Path, start_redis_server: Starter
) -> Iterator[tuple[int, Path, list[ServerProcess]]]:
    """(nginx's TLS port, the certificate, the two itemrooms processes behind it)."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    backends = [
        start_redis_server(forwarded_allow_ips="127.0.0.1", access_log=True) for _ in range(2)
    ]
    cert, key = certificate(tmp_path)
    port = free_port()
    site = Template(TEMPLATE.read_text()).safe_substitute(
        ITEMROOMS_UPSTREAM_A=f"127.0.0.1:{backends[0].port}",
        ITEMROOMS_UPSTREAM_B=f"127.0.0.1:{backends[1].port}",
        ITEMROOMS_TLS_PORT=str(port),
        ITEMROOMS_SERVER_NAME="localhost",
        ITEMROOMS_TLS_CERT=str(cert),
        ITEMROOMS_TLS_KEY=str(key),
    )
    assert "${" not in site, "a placeholder the test does not fill"
    (tmp_path / "site.conf").write_text(site)
    for temp in ("body", "proxy"):
        (tmp_path / temp).mkdir()
    (tmp_path / "nginx.conf").write_text(
        f"""
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {tmp_path}/access.log;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    include {tmp_path}/site.conf;
}}
"""
    )
    process = subprocess.Popen(
        [binary, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # bounded: nginx listens within moments, or has failed
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "error.log").read_text()
                time.sleep(0.05)
        yield port, cert, backends
    finally:
        process.terminate()
        process.wait(10)
        if process.stderr is not None:
            process.stderr.close()


async def wss(port: int, cert: Path, item: str, token: str, **options: object) -> ClientConnection:
    context = ssl.create_default_context(cafile=str(cert))
    return await connect(
        f"wss://localhost:{port}/items/{item}/ws",
        ssl=context,
        additional_headers={"Authorization": f"Bearer {token}"},
        local_addr=(CLIENT_ADDRESS, 0),
        open_timeout=5,
        **options,  # type: ignore[arg-type]
    )


async def test_rooms_through_nginx_with_tls(
    nginx: tuple[int, Path, list[ServerProcess]], mint: Mint, item: str
) -> None:
    port, cert, backends = nginx
    # Enough members that nginx's round robin puts some on each process.
    members = [await wss(port, cert, item, mint(f"u{i}")) for i in range(4)]
    for ws in members:
        assert (await recv_type(ws, "welcome"))["item_id"] == item
    for backend in backends:  # both processes took members
        assert backend.wait_for_output(f"{CLIENT_ADDRESS}:"), backend.output
    await send_json(members[0], {"type": "publish", "data": "through nginx", "ref": "r"})
    for ws in members:
        assert (await recv_type(ws, "message"))["data"] == "through nginx"
    for ws in members:
        await ws.close()

    # A close code and reason pass through the proxy untouched.
    refused = await wss(port, cert, item, "not.a.token")
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(refused.recv(), 5)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "invalid_token")

    # The same-origin check sees https and the port the browser used.
    browser = await wss(port, cert, item, mint(), origin=f"https://localhost:{port}")
    assert (await recv_type(browser, "welcome"))["item_id"] == item
    await browser.close()

    # The servers log the client's address, the proxy's never.
    logs = "".join(b.output for b in backends)
    assert f"refused invalid_token: item {item}, client {CLIENT_ADDRESS}:" in logs
    access = [line for line in logs.splitlines() if '"WebSocket /items/' in line]
    assert len(access) == 6 and all(CLIENT_ADDRESS in line for line in access), access
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(cert))) as http:
        ready = await http.get(f"https://localhost:{port}/readyz", timeout=5)
        assert ready.json() == {"status": "ready"}
