"""itemrooms embedded in a host FastAPI app (README: Embedding), served by uvicorn with
a chosen WebSocket implementation: ours (``--ws itemrooms.api.ws_protocol:...``, the
direct-write fast path) or uvicorn's stock ``websockets-sansio``, to measure what a host
that leaves out the option loses."""

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from itemrooms.api import Itemrooms
from itemrooms.api.server import protocol_options

STOCK_WS = "websockets-sansio"


def host_app(rooms: Itemrooms) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with rooms.lifespan(app):
            yield

    app = FastAPI(lifespan=lifespan)
    app.include_router(rooms.router)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stock-ws", action="store_true", help=f"uvicorn's {STOCK_WS}")
    args = parser.parse_args()
    rooms = Itemrooms()  # ITEMROOMS_* from the environment, as for itemrooms serve
    options = protocol_options(rooms.settings)
    if args.stock_ws:
        options["ws"] = STOCK_WS
    uvicorn.run(
        host_app(rooms),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="info",
        access_log=False,
        **options,
    )


if __name__ == "__main__":
    main()
