"""Which browser origins may open a room: the defence against Cross-Site WebSocket
Hijacking.

A browser sends the ``session`` cookie with a WebSocket handshake from any site,
and WebSockets are not covered by CORS, so without this check any page the user
visits could open a room as the user. A handshake that carries an ``Origin`` must
name an allowed one: those of ``ITEMROOMS_ALLOWED_ORIGINS`` or, when that is unset,
the server's own (same scheme, host and port as the request). A cookie only counts
with an allowed ``Origin``; the header, subprotocol and query credentials also work
without one (native apps and services send none).
"""

from collections.abc import Sequence

from starlette.requests import HTTPConnection

NULL_ORIGIN = "null"  # sandboxed frames, file: pages, some redirects: never trusted


def normalize(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def own_origin(conn: HTTPConnection) -> str | None:
    """``scheme://host[:port]`` of this request as the browser saw it.

    Behind a proxy that terminates TLS, the request arrives as plain ``ws``: set
    ``ITEMROOMS_ALLOWED_ORIGINS`` (or run uvicorn with trusted proxy headers).
    """
    host = conn.headers.get("host")
    if not host:
        return None
    scheme = "https" if conn.url.scheme in ("wss", "https") else "http"
    default_port = ":443" if scheme == "https" else ":80"
    return normalize(f"{scheme}://{host.removesuffix(default_port)}")


def origin_allowed(origin: str, conn: HTTPConnection, allowed: Sequence[str]) -> bool:
    origin = normalize(origin)
    if origin == NULL_ORIGIN:
        return False
    if allowed:
        return origin in {normalize(a) for a in allowed}
    return origin == own_origin(conn)
