"""One presence entry per user across two real server processes, on each shared backend:
alice with a tab on each process is one member, joined with her first connection and
gone after her last, whichever process either was on."""

from collections.abc import Callable

import httpx
import pytest

from tests.conftest import POSTGRES_URL, Mint
from tests.support.client import bearer, join, recv_json
from tests.support.server import ServerProcess

Starter = Callable[..., ServerProcess]


@pytest.fixture(params=["redis", "postgres"])
def start_shared(
    request: pytest.FixtureRequest, start_server: Starter, start_redis_server: Starter
) -> Starter:
    if request.param == "redis":
        return start_redis_server
    schema: str = request.getfixturevalue("postgres_schema")

    def start(**overrides: object) -> ServerProcess:
        settings = {"backend": "postgres", "postgres_url": POSTGRES_URL}
        return start_server(**settings, postgres_schema=schema, **overrides)

    return start


async def users(server: ServerProcess, item: str, token: str) -> dict[str, int]:
    async with httpx.AsyncClient(timeout=5) as http:
        answer = await http.get(f"{server.http_url}/items/{item}/presence", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    return {m["user"]: m["connections"] for m in answer.json()["members"]}


async def test_a_user_with_a_tab_on_each_process_is_one_member(
    start_shared: Starter, mint: Mint, item: str
) -> None:
    one, two = start_shared(), start_shared()
    reader = mint("reader", scope=["items:read"])
    watcher, watching = await join(one, item, mint("watcher"))
    async with watcher:
        tab1, first = await join(one, item, mint("alice"))
        joined = await recv_json(watcher)
        assert (joined["event"], joined["user"], joined["client_id"]) == (
            "join",
            "alice",
            first["client_id"],
        )
        tab2, second = await join(two, item, mint("alice"))
        async with tab2:
            # Not told of herself, on either process; the watcher is told nothing.
            assert second["members"] == [{"user": "watcher", "client_id": watching["client_id"]}]
            assert second["member_count"] == 2
            for server in (one, two):
                assert await users(server, item, reader) == {"watcher": 1, "alice": 2}
            await tab1.close()
            bob, welcome_bob = await join(two, item, mint("bob"))
            async with bob:
                assert sorted(m["user"] for m in welcome_bob["members"]) == ["alice", "watcher"]
                # Alice's first tab closing said nothing: bob's join is the next frame.
                marker = await recv_json(watcher)
                assert (marker["event"], marker["user"]) == ("join", "bob")
                for server in (one, two):
                    assert await users(server, item, reader) == {
                        "watcher": 1,
                        "alice": 1,
                        "bob": 1,
                    }
        # Her last tab closed (on the other process): now she left, named as she joined.
        leaves = {f["user"]: f for f in [await recv_json(watcher), await recv_json(watcher)]}
        assert {u: (f["event"], f["client_id"]) for u, f in leaves.items()} == {
            "bob": ("leave", welcome_bob["client_id"]),
            "alice": ("leave", first["client_id"]),
        }
