"""A team's own FastAPI app with itemrooms embedded, as README "Embedding" shows it."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from itemrooms.api import Itemrooms

rooms = Itemrooms()  # settings from ITEMROOMS_* variables


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.greeting = "hello from the host"  # the host's own startup
    async with rooms.lifespan(app):
        yield
    app.state.greeting = None  # and its own shutdown


app = FastAPI(title="host", lifespan=lifespan)
app.include_router(rooms.router, prefix="/rt")


@app.get("/hello")
async def hello(request: Request) -> dict[str, str]:
    return {"greeting": request.app.state.greeting}
