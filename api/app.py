"""The application factory: settings in, FastAPI app out; the lifespan owns the hub."""

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from itemrooms.api.connection_limits import ConnectionLimits
from itemrooms.api.dev_secret import warn_development
from itemrooms.api.hub.backends import make_backend
from itemrooms.api.hub.hub import Hub
from itemrooms.api.log_redaction import install_redaction
from itemrooms.api.metrics import Metrics
from itemrooms.api.rejections import install_rejection_handlers
from itemrooms.api.routes import demo, health, items, protocol_docs, rooms
from itemrooms.api.routes.demo import STATIC_DIR
from itemrooms.api.settings import Settings, get_settings
from itemrooms.auth.jwks import JwksCache
from itemrooms.auth.tokens import TokenVerifier


def make_jwks(settings: Settings) -> JwksCache | None:
    if not settings.jwks_url:
        return None
    return JwksCache(
        settings.jwks_url,
        min_refetch_s=settings.jwks_min_refetch_s,
        max_age_s=settings.jwks_max_age_s,
    )


def make_verifier(settings: Settings) -> TokenVerifier:
    uses_hmac = any(alg.startswith("HS") for alg in settings.jwt_algorithms)
    return TokenVerifier(
        algorithms=tuple(settings.jwt_algorithms),
        hmac_secret=settings.hmac_secret() if uses_hmac else None,
        public_key=settings.jwt_public_key,
        jwks=make_jwks(settings),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_s=settings.jwt_leeway_s,
        max_token_bytes=settings.max_token_bytes,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    install_redaction()
    if settings.env == "development":
        warn_development(settings.dev_secret_file)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub = Hub(make_backend(settings), Metrics())
        await hub.start()
        app.state.hub = hub
        app.state.connection_limits = ConnectionLimits(
            settings.max_connections, settings.max_connections_per_user
        )
        # What exists now (modules, the app, its routes) lives as long as the process:
        # moved out of the collector's generations, it no longer lengthens every full
        # collection, a pause that every connection feels as latency.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await hub.stop()

    app = FastAPI(
        title="itemrooms",
        summary="An authenticated WebSocket room for every item of your application.",
        description=(
            "The HTTP API for application backends. Clients connect over WebSocket to "
            "`/items/{item_id}/ws`: see **[the WebSocket protocol](/docs/websocket)** "
            "(rendered) and [asyncapi.yaml](/asyncapi.yaml) (AsyncAPI 3.0)."
        ),
        version="0.1.0",
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry looks for configured providers on every request
        # and handshake: opt-in (ITEMROOMS_OPENTELEMETRY), as /metrics covers the basics.
        telemetry={
            "tracing": settings.opentelemetry,
            "metrics": settings.opentelemetry,
            "logs": settings.opentelemetry,
        },
    )
    app.state.settings = settings
    app.state.verifier = make_verifier(settings)
    install_rejection_handlers(app)
    if settings.allowed_origins:
        # Pages on the allowed origins may load /static/itemrooms.js as a module (a
        # cross-origin module script needs CORS). No credentials: tokens are bearer.
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.allowed_origins, allow_methods=["GET"]
        )
    app.include_router(rooms.router)
    app.include_router(items.router)
    app.include_router(health.router)
    app.include_router(demo.router)
    app.include_router(protocol_docs.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
