"""itemrooms.api.client's publishes against a scripted server: an id on every publish, and every
publish ending with the message or a definite error (``outcome_unknown`` retried with
the same id, a ``duplicate`` copy settling it and never delivered as a new message)."""

import asyncio
import re
from collections.abc import AsyncIterator

import pytest

from itemrooms.api.client import PublishRefused, connect
from tests.client.fake_server import WAIT, FakeConnection, FakeServer, message_frame

ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    async with FakeServer().running() as server:
        yield server


def answer(publish: dict[str, object], seq: int, **fields: object) -> dict[str, object]:
    """The sender's copy of a publish, as the server sends it."""
    return message_frame(seq, publish["data"], id=publish["id"], ref=publish["ref"], **fields)


async def test_every_publish_carries_its_own_id_and_a_ref(fake: FakeServer) -> None:
    ids: list[object] = []
    for _ in range(2):  # two clients: their ids differ too
        async with connect(fake.url, token="t", proxy=None) as room:
            conn = await fake.accept()
            sends = [asyncio.create_task(room.publish(n)) for n in range(2)]
            for seq in (1, 2):
                publish = await conn.recv_publish()
                assert set(publish) == {"type", "data", "ref", "id"}, publish
                assert ID.fullmatch(str(publish["id"])) and publish["ref"], publish
                ids.append(publish["id"])
                await conn.send(answer(publish, seq))
            assert [(await s)["seq"] for s in sends] == [1, 2]
    assert len(set(ids)) == 4, ids


async def test_an_id_of_your_own_is_sent_as_it_is(fake: FakeServer) -> None:
    async with connect(fake.url, token="t", proxy=None) as room:
        conn = await fake.accept()
        send = asyncio.create_task(room.publish("x", id="order-17:v2"))
        publish = await conn.recv_publish()
        assert publish["id"] == "order-17:v2"
        await conn.send(answer(publish, 1))
        assert (await send)["seq"] == 1
        with pytest.raises(ValueError):
            await room.publish("x", id="not a valid id")


async def test_outcome_unknown_is_retried_with_the_same_id_until_answered(
    fake: FakeServer,
) -> None:
    async with connect(fake.url, token="t", proxy=None, retry_delay=0.01) as room:
        conn = await fake.accept()
        send = asyncio.create_task(room.publish({"text": "hi"}))
        first = await conn.recv_publish()
        for _ in range(2):
            await conn.send(
                {"type": "error", "code": "outcome_unknown", "detail": "?", "ref": first["ref"]}
            )
            again = await conn.recv_publish()
            assert again == first  # the same id, ref and data: the same message
        await conn.send(answer(first, 7))
        sent = await asyncio.wait_for(send, WAIT)
        assert (sent["seq"], sent["id"]) == (7, first["id"])
        # The errors were the publish's business, not the application's.
        assert (await room.receive(timeout=WAIT))["seq"] == 7


async def test_a_duplicate_copy_settles_the_publish_and_is_not_a_new_message(
    fake: FakeServer,
) -> None:
    async with connect(fake.url, token="t", proxy=None, retry_delay=0.01) as room:
        conn = await fake.accept()
        await conn.send(message_frame(5, "stored before", id="other"))
        assert (await room.receive(timeout=WAIT))["seq"] == 5
        send = asyncio.create_task(room.publish("mine"))
        publish = await conn.recv_publish()
        await conn.send(
            {"type": "error", "code": "outcome_unknown", "detail": "?", "ref": publish["ref"]}
        )
        assert await conn.recv_publish() == publish
        # It had been stored (seq 4); the server answers the retry with the original.
        await conn.send(answer(publish, 4, duplicate=True))
        sent = await asyncio.wait_for(send, WAIT)
        assert (sent["seq"], sent["duplicate"]) == (4, True)
        await conn.send(message_frame(6, "next", user="bob"))
        assert (await room.receive(timeout=WAIT))["seq"] == 6  # the copy was never yielded
        assert room.seq == 6


async def error_for(conn: FakeConnection, publish: dict[str, object], code: str) -> None:
    await conn.send({"type": "error", "code": code, "detail": code, "ref": publish["ref"]})


async def test_unavailable_is_definite_unless_an_earlier_attempt_was_unknown(
    fake: FakeServer,
) -> None:
    async with connect(fake.url, token="t", proxy=None, retry_delay=0.01) as room:
        conn = await fake.accept()
        send = asyncio.create_task(room.publish("one"))
        await error_for(conn, await conn.recv_publish(), "unavailable")
        with pytest.raises(PublishRefused) as refused:
            await asyncio.wait_for(send, WAIT)
        assert refused.value.code == "unavailable"

        # After outcome_unknown, "not this attempt" says nothing about the first one.
        send = asyncio.create_task(room.publish("two"))
        publish = await conn.recv_publish()
        await error_for(conn, publish, "outcome_unknown")
        await error_for(conn, await conn.recv_publish(), "unavailable")
        await error_for(conn, await conn.recv_publish(), "rate_limited")
        assert await conn.recv_publish() == publish
        await conn.send(answer(publish, 1))
        assert (await asyncio.wait_for(send, WAIT))["seq"] == 1


async def test_a_refusal_is_raised_with_its_code(fake: FakeServer) -> None:
    async with connect(fake.url, token="t", proxy=None) as room:
        conn = await fake.accept()
        send = asyncio.create_task(room.publish("no"))
        await error_for(conn, await conn.recv_publish(), "not_allowed")
        with pytest.raises(PublishRefused) as refused:
            await asyncio.wait_for(send, WAIT)
        assert refused.value.code == "not_allowed"


async def test_an_unknown_outcome_for_the_whole_dedup_window_is_said_so(
    fake: FakeServer,
) -> None:
    # A window of 0: the first retry would already be past it, where resending the id
    # could publish it twice. So the client stops and says it cannot tell.
    async with connect(fake.url, token="t", proxy=None, dedup_window=0) as room:
        conn = await fake.accept()
        send = asyncio.create_task(room.publish("x"))
        await error_for(conn, await conn.recv_publish(), "outcome_unknown")
        with pytest.raises(PublishRefused) as refused:
            await asyncio.wait_for(send, WAIT)
        assert refused.value.code == "outcome_unknown"
        # Not sent again: the next frame the server gets is the next publish.
        later = asyncio.create_task(room.publish("y"))
        publish = await conn.recv_publish()
        assert publish["data"] == "y"
        await conn.send(answer(publish, 1))
        await asyncio.wait_for(later, WAIT)


async def test_unknown_frame_types_and_fields_are_ignored(fake: FakeServer) -> None:
    async with connect(fake.url, token="t", proxy=None) as room:
        conn = await fake.accept()
        await conn.send({"type": "from_the_future", "seq": 99})
        await conn.send({**message_frame(1, "hi", user="bob"), "shiny": {"new": True}})
        frame = await room.receive(timeout=WAIT)
        assert (frame["type"], frame["seq"], frame["shiny"]) == ("message", 1, {"new": True})
        assert room.seq == 1
