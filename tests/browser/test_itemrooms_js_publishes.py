"""itemrooms.js in Chromium against a scripted server (tests/client/fake_server.py): an id
on every publish; ``outcome_unknown`` retried with the same id; a ``duplicate`` copy
settling the publish without being a message; what a lost connection left unanswered
settled once after the reconnect; 1012 ``epoch_changed`` answered by an immediate
reconnect with since and epoch, and ``recovered: false`` in the status."""

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Page

from tests.browser.test_itemrooms_js import JOIN, wait_for
from tests.client.fake_server import FakeConnection, FakeServer, message_frame, welcome_frame

pytestmark = pytest.mark.asyncio(loop_scope="module")

ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# A backoff far longer than any wait here: a test that passes did not wait for one.
NO_HURRY = {"baseDelayMs": 1_000_000, "maxDelayMs": 1_000_000}
QUICK = {"baseDelayMs": 10, "maxDelayMs": 50, "retryBaseMs": 10, "retryMaxMs": 20}

# Starts a publish without awaiting it; its outcome lands in window.__outcomes[name].
PUBLISH = """
([name, data, options]) => {
  window.__outcomes = window.__outcomes ?? {};
  window.__room.publish(data, options).then(
    (frame) => { window.__outcomes[name] = { frame }; },
    (err) => { window.__outcomes[name] = { code: err.code, detail: err.detail }; });
}
"""


@pytest_asyncio.fixture(loop_scope="module")
async def fake() -> AsyncIterator[FakeServer]:
    async with FakeServer().running() as server:
        yield server


async def joined(page: Page, fake: FakeServer, **options: Any) -> FakeConnection:
    """itemrooms.js in ``page`` joined to the fake; the fake's side of the connection."""
    await page.evaluate(JOIN, ["42", "t", {"url": fake.url, **options}])
    await wait_for(page, "window.__log.welcome.length > 0")
    return await fake.accept()


async def publish(page: Page, name: str, data: Any, **options: Any) -> None:
    await page.evaluate(PUBLISH, [name, data, options])


async def outcome(page: Page, name: str) -> dict[str, Any]:
    await wait_for(page, f"window.__outcomes?.[{json.dumps(name)}] !== undefined")
    result: dict[str, Any] = await page.evaluate(f"window.__outcomes[{json.dumps(name)}]")
    return result


async def error_for(conn: FakeConnection, publish: dict[str, Any], code: str) -> None:
    await conn.send({"type": "error", "code": code, "detail": code, "ref": publish["ref"]})


def answer(publish: dict[str, Any], seq: int, **fields: Any) -> dict[str, Any]:
    return message_frame(seq, publish["data"], id=publish["id"], ref=publish["ref"], **fields)


async def messages(page: Page) -> list[Any]:
    got: list[Any] = await page.evaluate("window.__log.message.map((m) => [m.seq, m.data])")
    return got


@pytest.mark.browser
async def test_every_publish_carries_its_own_id_and_a_ref(open_page: Any, fake: FakeServer) -> None:
    ids = []
    for _ in range(2):  # two pages: their ids differ too
        page = await open_page("/")
        conn = await joined(page, fake)
        for n in range(2):
            await publish(page, str(n), n)
            sent = await conn.recv_publish()
            assert set(sent) == {"type", "data", "ref", "id"} and sent["ref"], sent
            assert ID.fullmatch(sent["id"]), sent
            ids.append(sent["id"])
            await conn.send(answer(sent, n + 1))
            assert (await outcome(page, str(n)))["frame"]["seq"] == n + 1
        await page.close()
    assert len(set(ids)) == 4, ids


@pytest.mark.browser
async def test_outcome_unknown_is_retried_with_the_same_id_and_a_duplicate_settles_it(
    open_page: Any, fake: FakeServer
) -> None:
    page = await open_page("/")
    conn = await joined(page, fake, **QUICK)
    await publish(page, "p", {"text": "hi"})
    first = await conn.recv_publish()
    await error_for(conn, first, "outcome_unknown")
    assert await conn.recv_publish() == first  # the same id, ref and data
    await conn.send(answer(first, 4, duplicate=True))  # it had been stored, as seq 4
    settled = await outcome(page, "p")
    assert (settled["frame"]["seq"], settled["frame"]["duplicate"]) == (4, True), settled
    # Neither the error nor the copy reached the application as such.
    await conn.send(message_frame(5, "next", user="bob"))
    await wait_for(page, "window.__log.message.length > 0")
    assert await messages(page) == [[5, "next"]]
    assert await page.evaluate("window.__log.error") == []


@pytest.mark.browser
async def test_unavailable_is_definite_unless_an_earlier_attempt_was_unknown(
    open_page: Any, fake: FakeServer
) -> None:
    page = await open_page("/")
    conn = await joined(page, fake, **QUICK)
    await publish(page, "one", 1)
    sent = await conn.recv_publish()
    await error_for(conn, sent, "unavailable")
    assert (await outcome(page, "one"))["code"] == "unavailable"

    await publish(page, "two", 2)
    sent = await conn.recv_publish()
    await error_for(conn, sent, "outcome_unknown")
    assert await conn.recv_publish() == sent
    await error_for(conn, sent, "unavailable")
    assert await conn.recv_publish() == sent  # that attempt failed; the first may not have
    await conn.send(answer(sent, 1))
    assert (await outcome(page, "two"))["frame"]["seq"] == 1


@pytest.mark.browser
async def test_an_unanswered_publish_is_settled_once_after_the_reconnect(
    open_page: Any, fake: FakeServer
) -> None:
    fake.welcomes = [welcome_frame(3, epoch="e1"), welcome_frame(4, epoch="e1")]
    page = await open_page("/")
    one = await joined(page, fake, **QUICK)
    await publish(page, "p", "hi")
    sent = await one.recv_publish()
    one.cut()  # it was stored as seq 4, but the answer is lost with the connection
    two = await fake.accept()
    assert two.query == {"since": "3", "epoch": "e1"}
    await two.send(message_frame(4, "hi", id=sent["id"]))  # the replay carries the id
    assert await two.recv_publish() == sent  # sent again meanwhile: the same id and ref
    await two.send(answer(sent, 4, duplicate=True))
    await two.send(message_frame(5, "live", user="bob"))
    await wait_for(page, "window.__log.message.length === 2")
    settled = await outcome(page, "p")
    assert settled["frame"]["seq"] == 4 and "duplicate" not in settled["frame"], settled
    assert await messages(page) == [[4, "hi"], [5, "live"]]
    statuses = await page.evaluate("window.__log.status.filter((s) => s.state === 'open')")
    assert [(s["recovered"], s["reset"]) for s in statuses] == [(True, False)] * 2


@pytest.mark.browser
async def test_a_publish_made_while_reconnecting_goes_out_after_the_welcome(
    open_page: Any, fake: FakeServer
) -> None:
    page = await open_page("/")
    one = await joined(page, fake, **QUICK)
    fake.admit.clear()  # the next connection waits for its welcome
    one.cut()
    await wait_for(page, "window.__room.state !== 'open'")
    await publish(page, "a", "a")
    await publish(page, "b", "b")
    fake.admit.set()
    two = await fake.accept()
    for seq, data in ((1, "a"), (2, "b")):
        sent = await two.recv_publish()
        assert sent["data"] == data  # in the order they were made
        await two.send(answer(sent, seq))
    assert (await outcome(page, "b"))["frame"]["seq"] == 2


@pytest.mark.browser
async def test_epoch_changed_reconnects_at_once_and_says_recovered_false(
    open_page: Any, fake: FakeServer
) -> None:
    fake.welcomes = [welcome_frame(5, epoch="e1"), welcome_frame(6, epoch="e2", recovered=False)]
    page = await open_page("/")
    one = await joined(page, fake, **NO_HURRY)
    await one.close(1012, "epoch_changed")
    two = await fake.accept()  # at once: the backoff would take far longer
    assert two.query == {"since": "5", "epoch": "e1"}
    # The new sequence, from what history holds of it: 4 and 5 are other messages than
    # the 4 and 5 of the old one, so they are new too.
    for seq in (4, 5, 6):
        await two.send(message_frame(seq, f"new {seq}", user="bob"))
    await wait_for(page, "window.__log.message.length === 3")
    assert await messages(page) == [[4, "new 4"], [5, "new 5"], [6, "new 6"]]
    last = await page.evaluate("window.__log.status.at(-1)")
    assert (last["state"], last["recovered"], last["reset"]) == ("open", False, True), last
    assert await page.evaluate("[window.__room.epoch, window.__room.seq]") == ["e2", 6]
    closes = await page.evaluate("window.__log.close")
    assert [(c["code"], c["reason"], c["willRetry"]) for c in closes] == [
        (1012, "epoch_changed", True)
    ]


@pytest.mark.browser
async def test_a_fatal_close_rejects_what_is_unsettled(open_page: Any, fake: FakeServer) -> None:
    page = await open_page("/")
    conn = await joined(page, fake, **QUICK)
    await publish(page, "p", "x")
    await conn.recv_publish()
    await conn.close(1008, "item_closed")
    assert (await outcome(page, "p"))["code"] == "closed"
    assert await page.evaluate("window.__room.state") == "closed"


@pytest.mark.browser
async def test_a_1009_refuses_the_biggest_publish_and_sends_the_others_again(
    open_page: Any, fake: FakeServer
) -> None:
    page = await open_page("/")
    one = await joined(page, fake, **QUICK)
    await publish(page, "small", "s")
    await publish(page, "big", "b" * 5000)
    await one.recv_publish()
    await one.recv_publish()
    await one.close(1009, "message_too_big")
    assert (await outcome(page, "big"))["code"] == "message_too_big"
    two = await fake.accept()
    sent = await two.recv_publish()
    assert sent["data"] == "s"
    await two.send(answer(sent, 1))
    assert (await outcome(page, "small"))["frame"]["seq"] == 1


@pytest.mark.browser
async def test_unknown_frame_types_and_fields_are_ignored(open_page: Any, fake: FakeServer) -> None:
    page = await open_page("/")
    conn = await joined(page, fake)
    await conn.send({"type": "from_the_future", "seq": 99})
    await conn.send({**message_frame(1, "hi", user="bob"), "shiny": {"new": True}})
    await wait_for(page, "window.__log.message.length === 1")
    assert await page.evaluate("window.__log.message[0].shiny") == {"new": True}
    assert await page.evaluate("[window.__room.state, window.__room.seq]") == ["open", 1]
