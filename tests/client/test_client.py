"""itemrooms.api.client against a real server, through the itemrooms.api.testing fixtures."""

import asyncio
import time

import pytest

from itemrooms.api.client import (
    PublishRefused,
    RefreshRefused,
    Room,
    RoomClosed,
    connect,
    token_expiry,
)
from itemrooms.api.testing import ClientFactory, ItemroomsServer, ServerFactory, TokenFactory

WAIT = 5.0


async def test_publish_returns_the_acknowledged_message(
    itemrooms_client: ClientFactory, item: str
) -> None:
    async with itemrooms_client(item) as room:
        assert room.welcome["type"] == "welcome" and room.client_id.startswith("c_")
        first = await room.publish({"text": "hi"})
        second = await room.publish([1, 2])
        assert first["type"] == "message" and first["data"] == {"text": "hi"}
        assert first["sender"] == {"user": "alice", "client_id": room.client_id}
        assert second["seq"] == first["seq"] + 1 == room.welcome["seq"] + 2
        # Your own copies are room traffic too: iteration yields them, in order.
        assert [(await room.receive())["seq"] for _ in range(2)] == [first["seq"], second["seq"]]
        assert room.seq == second["seq"]


async def test_a_read_only_token_gets_publish_refused_and_stays_connected(
    itemrooms_client: ClientFactory, item: str
) -> None:
    async with itemrooms_client(item, scope="items:read") as room:
        with pytest.raises(PublishRefused) as refused:
            await room.publish("nope")
        assert refused.value.code == "not_allowed"
        await room.ping()
        assert not room.closed


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"token": "not-a-jwt"}, "invalid_token"),
        ({"ttl": -600}, "token_expired"),
        ({"items": ["someone-else"]}, "forbidden"),
    ],
)
async def test_a_refused_connection_raises_room_closed_with_the_reason(
    itemrooms_client: ClientFactory, item: str, claims: dict[str, object], reason: str
) -> None:
    with pytest.raises(RoomClosed) as closed:
        async with itemrooms_client(item, **claims):
            pytest.fail("joined with a bad token")
    assert (closed.value.code, closed.value.reason) == (1008, reason)


async def test_a_token_source_is_called_for_the_header(
    itemrooms_server: ItemroomsServer, itemrooms_token: TokenFactory, item: str
) -> None:
    async def source() -> str:
        return itemrooms_token("carol")

    async with connect(itemrooms_server.ws_url(item), token=source, proxy=None) as room:
        assert room.user == "carol"


async def test_iteration_yields_other_members_messages_and_presence(
    itemrooms_client: ClientFactory, item: str
) -> None:
    async with itemrooms_client(item, sub="alice") as alice:
        async with itemrooms_client(item, sub="bob") as bob:
            assert bob.members == [{"user": "alice", "client_id": alice.client_id}]
            join = await alice.receive(timeout=WAIT)
            assert (join["type"], join["event"], join["user"]) == ("presence", "join", "bob")
            assert alice.members == [{"user": "bob", "client_id": bob.client_id}]
            sent = await bob.publish({"n": 1})
            async for frame in alice:
                assert frame["type"] == "message"
                assert frame["data"] == {"n": 1} and frame["seq"] == sent["seq"]
                assert "ref" not in frame  # the ref is only in the sender's copy
                break
        leave = await alice.receive("presence", timeout=WAIT)
        assert (leave["event"], leave["client_id"]) == ("leave", bob.client_id)
        assert alice.members == []


@pytest.mark.itemrooms(presence_list_max=2, presence_interval_ms=0, presence_grace_s=0)
async def test_members_and_member_count_follow_a_room_growing_large_and_small_again(
    itemrooms_client: ClientFactory, item: str
) -> None:
    async with itemrooms_client(item, sub="alice") as alice:
        assert (alice.members, alice.member_count, alice.presence_mode) == ([], 1, "list")
        async with itemrooms_client(item, sub="bob") as bob:
            assert (await alice.receive("presence", timeout=WAIT))["user"] == "bob"
            assert (alice.member_count, bob.member_count) == (2, 2)
            async with itemrooms_client(item, sub="carol") as carol:
                assert (carol.presence_mode, carol.member_count) == ("count", 3)
                counted = await alice.receive("presence_count", timeout=WAIT)
                assert (counted["joined"], counted["left"]) == (1, 0)
                assert (alice.presence_mode, alice.member_count) == ("count", 3)
                assert [m["user"] for m in alice.members] == ["bob"]  # the sample it had
            listed = await alice.receive("presence_list", timeout=WAIT)
            assert listed["member_count"] == 2
            assert (alice.presence_mode, alice.member_count) == ("list", 2)
            assert alice.members == [{"user": "bob", "client_id": bob.client_id}]
            async with itemrooms_client(item, sub="bob") as bob_again:  # a second tab
                assert bob_again.members == [{"user": "alice", "client_id": alice.client_id}]
                assert bob_again.member_count == 2
            # Bob's second tab came and went unannounced: his message is alice's next frame.
            await bob.publish("still here")
            assert (await alice.receive(timeout=WAIT))["data"] == "still here"
        left = await alice.receive(timeout=WAIT)  # bob's last tab closed
        assert (left["event"], left["client_id"]) == ("leave", bob.client_id)
        assert (alice.members, alice.member_count) == ([], 1)


async def test_resume_with_since_gets_the_missed_messages_once(
    itemrooms_client: ClientFactory, item: str
) -> None:
    async with itemrooms_client(item, sub="bob") as bob:
        seen = bob.seq
    async with itemrooms_client(item, sub="alice") as alice:
        missed = [(await alice.publish(i))["seq"] for i in range(3)]
    async with itemrooms_client(item, sub="bob", since=seen) as bob:
        assert bob.welcome["recovered"] is True
        replayed = [await bob.receive("message", timeout=WAIT) for _ in missed]
        assert [f["seq"] for f in replayed] == missed and [f["data"] for f in replayed] == [0, 1, 2]
        assert bob.seq == missed[-1]
        live = await bob.publish("live")  # nothing replayed twice: next comes the live one
        assert (await bob.receive("message", timeout=WAIT))["seq"] == live["seq"] == missed[-1] + 1


async def test_refresh_is_answered_by_refreshed(
    itemrooms_client: ClientFactory, itemrooms_token: TokenFactory, item: str
) -> None:
    issued: list[str] = []

    def source() -> str:
        issued.append(itemrooms_token(ttl=60 + 60 * len(issued)))
        return issued[-1]

    async with itemrooms_client(item, token=source) as room:
        refreshed = await room.refresh()
        assert refreshed["type"] == "refreshed" and len(issued) == 2
        assert refreshed["exp"] == token_expiry(issued[-1]) == room.token_exp
        with pytest.raises(RefreshRefused) as refused:  # expires earlier: the old one stays
            await room.refresh(itemrooms_token(ttl=30))
        assert refused.value.code == "invalid_refresh"
        await room.ping()


@pytest.mark.itemrooms(jwt_leeway_s=0)
async def test_auto_refresh_keeps_a_short_lived_token_connected(
    itemrooms_client: ClientFactory, itemrooms_token: TokenFactory, item: str
) -> None:
    def short_lived() -> str:
        return itemrooms_token(ttl=3)

    async with (
        itemrooms_client(item, token=short_lived, auto_refresh=True) as kept,
        itemrooms_client(item, token=short_lived) as control,
    ):
        first_exp = kept.token_exp
        assert first_exp is not None
        # The control, never refreshed, is closed when its token expires...
        with pytest.raises(RoomClosed) as closed:
            await asyncio.wait_for(drain(control), timeout=10)
        assert (closed.value.code, closed.value.reason) == (1008, "token_expired")
        assert (control.close_code, control.close_reason) == (1008, "token_expired")
        with pytest.raises(RoomClosed):
            await control.publish("too late")
        # ...while the refreshed one outlives its first token.
        await asyncio.sleep(max(0.0, first_exp + 1 - time.time()))
        assert kept.token_exp is not None and kept.token_exp > first_exp
        assert (await kept.publish("still here"))["data"] == "still here"
        assert not kept.closed


async def drain(room: Room) -> None:
    async for _ in room:
        pass


async def test_leaving_ends_iteration_quietly(itemrooms_client: ClientFactory, item: str) -> None:
    async with itemrooms_client(item) as room:
        await room.close()
        assert [frame async for frame in room] == []
        assert (room.closed, room.close_code) == (True, 1000)
        with pytest.raises(RoomClosed):
            await room.publish("after leaving")


async def test_the_server_going_away_ends_iteration_with_its_reason(
    itemrooms_server_factory: ServerFactory, item: str
) -> None:
    server = itemrooms_server_factory()
    async with connect(server.ws_url(item), token=server.mint(), proxy=None) as room:
        await asyncio.to_thread(server.stop)  # SIGTERM: a graceful shutdown
        with pytest.raises(RoomClosed) as closed:
            await asyncio.wait_for(drain(room), timeout=WAIT)
        assert (closed.value.code, closed.value.reason) == (1001, "going_away")


async def test_a_reconnecting_client_goes_on_across_a_server_restart(
    itemrooms_server_factory: ServerFactory, item: str
) -> None:
    server = itemrooms_server_factory()  # the memory backend: a restart forgets the room
    options = {"reconnect": True, "reconnect_delay": 0.05, "max_reconnect_delay": 0.5}
    async with connect(server.ws_url(item), token=server.mint(), proxy=None, **options) as room:
        first = await room.publish("before")
        assert (await room.receive(timeout=WAIT))["seq"] == first["seq"]
        old_epoch = room.epoch
        await asyncio.to_thread(server.restart)
        welcome = await room.receive("welcome", timeout=WAIT)
        assert welcome["recovered"] is False and welcome["epoch"] != old_epoch, welcome
        assert (room.recovered, room.epoch, room.seq) == (False, welcome["epoch"], 0)
        again = await room.publish("after")
        message = await room.receive(timeout=WAIT)
        assert (message["seq"], message["data"]) == (again["seq"], "after")
        assert room.seq == again["seq"]
