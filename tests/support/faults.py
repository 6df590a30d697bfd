"""What the fault tests (tests/integration/test_redis_faults.py, test_redis_restarts.py)
share: bounded waits on conditions that change by themselves (a heartbeat, a
reconnect, a repair), the HTTP calls an application backend makes, and what Redis
says about the servers' pub/sub connections."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import redis
from websockets.asyncio.client import ClientConnection

from tests.support.client import bearer, recv_json
from tests.support.redis_server import PrivateRedis
from tests.support.server import ServerProcess

POLL_S = 0.05
Frame = dict[str, Any]


def on_redis(redis: PrivateRedis, **overrides: Any) -> dict[str, Any]:
    """Settings of a server on ``redis``, short enough for a test of a few seconds."""
    settings: dict[str, Any] = {"backend": "redis", "redis_url": redis.url}
    settings |= {"presence_ttl_s": 2, "redis_timeout_s": 1, "history_size": 1000}
    return settings | overrides


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(POLL_S)


async def is_ready(server: ServerProcess) -> bool:
    async with httpx.AsyncClient(timeout=5) as http:
        return (await http.get(f"{server.http_url}/readyz")).status_code == 200


async def wait_ready(server: ServerProcess, ready: bool = True, timeout: float = 15.0) -> None:
    async def reached() -> bool:
        return await is_ready(server) == ready

    await until(reached, f"/readyz of :{server.port} ready={ready}", timeout)


async def post_message(
    server: ServerProcess, item_id: str, token: str, data: Any, key: str | None = None
) -> httpx.Response:
    headers = bearer(token)
    if key is not None:
        headers["Idempotency-Key"] = key
    async with httpx.AsyncClient(timeout=10) as http:
        url = f"{server.http_url}/items/{item_id}/messages"
        return await http.post(url, json={"data": data}, headers=headers)


async def publish_when_ready(
    server: ServerProcess, item_id: str, token: str, data: Any, key: str, timeout: float = 15.0
) -> Frame:
    """Publish over HTTP as a backend does after an outage: the same Idempotency-Key
    again while the answer is 503 (not published) or 504 (maybe); any other is wrong."""
    deadline = time.monotonic() + timeout
    while True:
        response = await post_message(server, item_id, token, data, key)
        if response.status_code == 200:
            answer: Frame = response.json()
            return answer
        assert response.status_code in (503, 504), (response.status_code, response.text)
        assert time.monotonic() < deadline, f"publish {key} still refused after {timeout} s"
        await asyncio.sleep(POLL_S)


async def history(
    server: ServerProcess, item_id: str, token: str, since: int = 0, epoch: str | None = None
) -> Frame:
    params: dict[str, str | int] = {"since": since, "limit": 1000}
    if epoch is not None:
        params["epoch"] = epoch
    async with httpx.AsyncClient(timeout=10) as http:
        url = f"{server.http_url}/items/{item_id}/messages"
        response = await http.get(url, params=params, headers=bearer(token))
    assert response.status_code == 200, response.text
    answer: Frame = response.json()
    return answer


async def present(server: ServerProcess, item_id: str, token: str) -> set[str]:
    """The users ``GET /presence`` lists (one page: tests' rooms are small)."""
    async with httpx.AsyncClient(timeout=10) as http:
        url = f"{server.http_url}/items/{item_id}/presence"
        response = await http.get(url, params={"limit": 1000}, headers=bearer(token))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["next"] is None and answer["member_count"] == len(answer["members"])
    return {m["user"] for m in answer["members"]}


async def frames_until(
    ws: ClientConnection, last: Callable[[Frame], bool], timeout: float = 10.0
) -> list[Frame]:
    """Every frame up to and including the first for which ``last`` holds."""
    frames: list[Frame] = []

    async def read() -> None:
        while not frames or not last(frames[-1]):
            frames.append(await recv_json(ws, timeout))

    try:
        await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s; frames so far: {frames}") from None
    return frames


def pubsub_connections(admin: "redis.Redis") -> set[int]:
    """Redis' ids of the itemrooms connections subscribed to something: one per process."""
    return {
        int(c["id"])
        for c in admin.client_list()
        if c.get("name", "").startswith("itemrooms-") and int(c.get("sub", 0)) > 0
    }
