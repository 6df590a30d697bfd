"""The application factory: settings in, FastAPI app out (what ``itemrooms serve`` runs).

The service itself is api/embedding.py's router and lifespan; this app adds what only
a standalone server has: the demo page, the protocol's docs, ``/static`` and CORS.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from itemrooms.api.embedding import Itemrooms
from itemrooms.api.routes import demo, protocol_docs
from itemrooms.api.settings import Settings
from itemrooms.api.version import VERSION


def create_app(settings: Settings | None = None) -> FastAPI:
    rooms = Itemrooms(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with rooms.lifespan(app):
            yield

    app = FastAPI(
        title="itemrooms",
        summary="An authenticated WebSocket room for every item of your application.",
        description=(
            "The HTTP API for application backends. Clients connect over WebSocket to "
            "`/items/{item_id}/ws`: see **[the WebSocket protocol](/docs/websocket)** "
            "(rendered) and [asyncapi.yaml](/asyncapi.yaml) (AsyncAPI 3.0)."
        ),
        version=VERSION,
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry looks for configured providers on every request
        # and handshake: opt-in (ITEMROOMS_OPENTELEMETRY), as /metrics covers the basics.
        telemetry={
            "tracing": rooms.settings.opentelemetry,
            "metrics": rooms.settings.opentelemetry,
            "logs": rooms.settings.opentelemetry,
        },
    )
    if rooms.settings.allowed_origins:
        # Pages on the allowed origins may load /static/itemrooms.js as a module (a
        # cross-origin module script needs CORS). No credentials: tokens are bearer.
        app.add_middleware(
            CORSMiddleware, allow_origins=rooms.settings.allowed_origins, allow_methods=["GET"]
        )
    app.include_router(rooms.router)
    app.include_router(demo.router)
    app.include_router(protocol_docs.router)
    app.mount("/static", StaticFiles(directory=rooms.static_dir), name="static")
    return app
