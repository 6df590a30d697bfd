"""Two itemrooms processes sharing rooms through PostgreSQL (ITEMROOMS_BACKEND=postgres),
as a FastAPI team without Redis runs them: messages, presence, resume and moderation
across processes, and `itemrooms check` saying when the database cannot be used."""

from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.api.test_cli import run
from tests.conftest import POSTGRES_URL, SECRET, Mint, assert_healthy
from tests.support.client import (
    bearer,
    closed_with,
    drain_until_closed,
    join,
    open_room,
    recv_type,
    send_json,
)
from tests.support.server import ServerProcess, free_port

Starter = Callable[..., ServerProcess]


async def test_two_processes_share_a_room_through_postgres(
    start_server: Starter, postgres_schema: str, mint: Mint, item: str
) -> None:
    one, two = (
        start_server(backend="postgres", postgres_url=POSTGRES_URL, postgres_schema=postgres_schema)
        for _ in range(2)
    )
    alice, _ = await join(one, item, mint("alice"))
    async with alice:
        bob, welcome = await join(two, item, mint("bob"))
        async with bob:
            assert [m["user"] for m in welcome["members"]] == ["alice"]
            assert (await recv_type(alice, "presence"))["user"] == "bob"
            await send_json(bob, {"type": "publish", "data": "from two", "ref": "r"})
            assert (await recv_type(alice, "message"))["data"] == "from two"
            assert (await recv_type(bob, "message"))["ref"] == "r"
        # Resume on the other process: the history is the database's.
        again, resumed = await join(one, item, mint("bob"), since=0)
        async with again:
            assert resumed["recovered"] is True
            assert (await recv_type(again, "message"))["data"] == "from two"
        async with httpx.AsyncClient(timeout=5) as http:
            admin = bearer(mint("admin", scope=["items:admin"]))
            kicked = await http.post(
                f"{two.http_url}/items/{item}/kick", json={"sub": "alice"}, headers=admin
            )
            assert kicked.status_code == 202
        assert (await drain_until_closed(alice))[1:] == (1008, "forbidden")
    refused = await open_room(two, item, mint("alice"))
    assert await closed_with(refused) == (1008, "forbidden")  # the ban holds on both
    await assert_healthy(one)
    await assert_healthy(two)


def test_check_says_when_postgres_is_unreachable(tmp_path: Path) -> None:
    url = f"postgresql://postgres:sekret@127.0.0.1:{free_port()}/test"  # nobody listens
    result = run(
        "check",
        cwd=tmp_path,
        ITEMROOMS_JWT_SECRET=SECRET,
        ITEMROOMS_BACKEND="postgres",
        ITEMROOMS_POSTGRES_URL=url,
    )
    assert result.returncode == 1
    assert "cannot reach PostgreSQL at postgresql://postgres:***@127.0.0.1:" in result.stderr
    assert "sekret" not in result.stdout + result.stderr
    good = run(
        "check",
        cwd=tmp_path,
        ITEMROOMS_JWT_SECRET=SECRET,
        ITEMROOMS_BACKEND="postgres",
        ITEMROOMS_POSTGRES_URL=POSTGRES_URL,
    )
    assert good.returncode == 0, good.stderr


async def test_check_says_when_the_role_may_not_create_the_schema(
    tmp_path: Path, postgres_schema: str
) -> None:
    role = f"{postgres_schema}_role"  # may connect (trust), may create nothing
    admin = await asyncpg.connect(POSTGRES_URL)
    await admin.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        result = run(
            "check",
            cwd=tmp_path,
            ITEMROOMS_JWT_SECRET=SECRET,
            ITEMROOMS_BACKEND="postgres",
            ITEMROOMS_POSTGRES_URL=f"postgresql://{role}@127.0.0.1:5432/test",
            ITEMROOMS_POSTGRES_SCHEMA=postgres_schema,
        )
    finally:
        await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()
    assert result.returncode == 1
    assert f"may not create or use schema '{postgres_schema}'" in result.stderr
    assert "grant it CREATE on the database or the schema" in result.stderr


async def test_check_and_serve_refuse_a_schema_of_another_version(
    tmp_path: Path, start_server: Starter, postgres_schema: str
) -> None:
    admin = await asyncpg.connect(POSTGRES_URL)
    try:  # what an earlier itemrooms left
        await admin.execute(f'CREATE SCHEMA "{postgres_schema}"')
        await admin.execute(f'CREATE TABLE "{postgres_schema}".rooms (item text)')
    finally:
        await admin.close()
    settings = {"backend": "postgres", "postgres_url": POSTGRES_URL}
    settings["postgres_schema"] = postgres_schema
    result = run(
        "check",
        cwd=tmp_path,
        ITEMROOMS_JWT_SECRET=SECRET,
        **{f"ITEMROOMS_{k.upper()}": v for k, v in settings.items()},
    )
    assert result.returncode == 1
    assert "holds tables of another itemrooms version" in result.stderr
    with pytest.raises(RuntimeError, match=f'DROP SCHEMA "{postgres_schema}" CASCADE'):
        start_server(**settings)
