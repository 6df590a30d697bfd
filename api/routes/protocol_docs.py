"""The WebSocket protocol for humans and generators: ``/asyncapi.yaml`` and a plain
rendered page at ``/docs/websocket``, linked from the interactive docs at ``/docs``
(OpenAPI cannot describe a WebSocket channel)."""

import html
import json
from typing import Any

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from itemrooms.api.asyncapi import build_asyncapi

router = APIRouter(include_in_schema=False)


def document(request: Request) -> dict[str, Any]:
    app = request.app
    cached: dict[str, Any] | None = getattr(app.state, "asyncapi", None)
    if cached is None:
        cached = app.state.asyncapi = build_asyncapi(app.version, app.summary or app.title)
    return cached


@router.get("/asyncapi.yaml")
async def asyncapi_yaml(request: Request) -> Response:
    body = yaml.safe_dump(document(request), sort_keys=False, allow_unicode=True)
    return Response(body, media_type="application/yaml")


def section(title: str, text: str | None, schema: Any = None) -> str:
    parts = [f"<h3>{html.escape(title)}</h3>"]
    if text:
        parts.append(f"<pre class='text'>{html.escape(text)}</pre>")
    if schema is not None:
        parts.append(f"<pre class='schema'>{html.escape(json.dumps(schema, indent=2))}</pre>")
    return "\n".join(parts)


@router.get("/docs/websocket", response_class=HTMLResponse)
async def websocket_docs(request: Request) -> HTMLResponse:
    doc = document(request)
    info = doc["info"]
    title = html.escape(f"{info['title']} {info['version']}")
    parts = [
        f"<h1>{title}: the WebSocket protocol</h1>",
        "<p>Machine-readable: <a href='/asyncapi.yaml'>/asyncapi.yaml</a> (AsyncAPI 3.0). "
        "HTTP API: <a href='/docs'>/docs</a>.</p>",
    ]
    for name, channel in doc["channels"].items():
        parts.append(section(f"Channel {name}: {channel['address']}", channel.get("description")))
    for name, operation in doc["operations"].items():
        parts.append(section(f"{operation['action']} · {name}", operation.get("summary")))
    for name, message in doc["components"]["messages"].items():
        text = "\n\n".join(t for t in (message.get("summary"), message.get("description")) if t)
        parts.append(section(f"Message {name}", text, message.get("payload")))
    style = (
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "pre{white-space:pre-wrap;background:#f6f6f6;padding:.6rem;border-radius:4px}"
        "pre.schema{font-size:.8rem}"
    )
    page = (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(info['title'])} protocol</title>"
    )
    return HTMLResponse(f"{page}<style>{style}</style>" + "\n".join(parts))
