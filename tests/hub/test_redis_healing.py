"""The Redis backend under trouble, one fault at a time, at the backend's own level:
no publish applied twice, no ack lost to a gap, a lost room announced as a new epoch,
and presence that repairs itself (issue 11's reproductions 1, 3, 7)."""

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from itemrooms.api.hub.backends.base import (
    BackendUnavailable,
    EpochChange,
    Message,
    OutcomeUnknown,
    Sender,
)
from itemrooms.api.hub.backends.redis import RedisBackend
from tests.hub.conftest import REDIS_URL, WAIT_S, Recorder, RedisFactory, lapse_of, present, until
from tests.support.redis_server import PrivateRedis

ALICE = Sender("alice", "c_a")
BOB = Sender("bob", "c_b")


async def test_a_publish_redis_stalls_on_is_outcome_unknown_and_its_retry_applies_once(
    private_redis: PrivateRedis,
) -> None:
    node = RedisBackend(private_redis.url, command_timeout_s=0.5)
    await node.start(Recorder())
    control = aioredis.Redis.from_url(private_redis.url)
    try:
        await node.publish("warm", ALICE, b"0", None)  # a pooled connection, already open
        # Redis holds every client's commands (as a stall does) once this returns.
        await control.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        with pytest.raises(OutcomeUnknown):  # sent, then no answer in time: never retried
            await node.publish("r", ALICE, b'"x"', "r1", "m-1")

        async def answering() -> bool:
            try:
                return bool(await control.ping())
            except aioredis.RedisError:
                return False

        await until(answering, "Redis never came back from the pause")
        # Applied or not, the retry with the same id leaves exactly one message.
        retry = await node.publish("r", ALICE, b'"x"', "r2", "m-1")
        assert retry.seq == 1
        snap = await node.snapshot("r", 0)
        assert [(m.seq, m.id) for m in snap.messages] == [(1, "m-1")] and snap.seq == 1
    finally:
        await control.aclose()
        await node.stop()


async def test_a_publish_that_cannot_reach_redis_is_certainly_not_published(
    private_redis: PrivateRedis,
) -> None:
    node = RedisBackend(private_redis.url, command_timeout_s=0.5)
    await node.start(Recorder())
    private_redis.stop()  # no connection to be had: the publish never leaves this process
    try:
        with pytest.raises(BackendUnavailable):
            await node.publish("r", ALICE, b'"x"', None, "m-1")
    finally:
        await node.stop()


async def test_a_message_the_listener_missed_comes_from_history_with_its_ack(
    redis_nodes: RedisFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    node, events = await redis_nodes()
    await node.subscribe("r")
    deliver = RedisBackend._on_payload
    lost: list[bytes] = []

    async def lose_the_first(self: RedisBackend, item_id: str, room: Any, payload: bytes) -> None:
        if payload.startswith(b"m") and not lost:
            lost.append(payload)  # as if it went by while the pub/sub connection was down
            return
        await deliver(self, item_id, room, payload)

    monkeypatch.setattr(RedisBackend, "_on_payload", lose_the_first)
    await node.publish("r", ALICE, b"1", "ack-1", "m-1")
    await node.publish("r", ALICE, b"2", "ack-2")
    messages = [e for e in await events.count(2) if isinstance(e, Message)]
    assert [(m.seq, m.ref, m.id) for m in messages] == [(1, "ack-1", "m-1"), (2, "ack-2", None)]
    assert lost


async def test_a_room_redis_lost_under_its_members_is_a_new_epoch(
    redis_nodes: RedisFactory, redis_prefix: str
) -> None:
    watcher, events = await redis_nodes()
    publisher, _ = await redis_nodes()
    await watcher.subscribe("r")
    before = await publisher.publish("r", ALICE, b"1", None)
    await events.count(1)
    client = aioredis.Redis.from_url(REDIS_URL)
    await client.delete(f"{redis_prefix}meta:r", f"{redis_prefix}history:r")  # data lost
    await client.aclose()
    after = await publisher.publish("r", ALICE, b"2", None)
    assert after.epoch != before.epoch
    await events.count(2)
    assert events.events[1] == EpochChange("r", after.epoch)
    assert (await watcher.snapshot("r", None)).epoch == after.epoch


async def test_a_process_whose_heartbeat_lapsed_registers_its_members_again(
    redis_nodes: RedisFactory,
) -> None:
    stalled, _ = await redis_nodes(presence_ttl_s=1.0)
    other, events = await redis_nodes(presence_ttl_s=1.0)
    await other.subscribe("r")
    await stalled.join("r", ALICE)
    await events.until(lambda evs: lapse_of(evs, ALICE) == ["join"])
    # What the others see of a process stalled past the TTL: its heartbeat is gone, so
    # they reap its members (and announce them gone).
    await other.presence.reap(stalled.node_id, force=True)
    await events.until(lambda evs: lapse_of(evs, ALICE) == ["join", "leave"])
    # The stalled process notices at its next heartbeat and registers them again.
    await events.until(lambda evs: lapse_of(evs, ALICE) == ["join", "leave", "join"])
    assert "alice" in await present(other, "r")


async def test_a_leave_that_failed_is_done_later_without_a_reconnect(
    redis_nodes: RedisFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    node, _ = await redis_nodes(presence_ttl_s=1.0)
    await node.join("r", ALICE)
    await node.join("r", BOB)
    script = node.presence._scripts["LEAVE"]

    async def unreachable(**_: Any) -> None:
        raise ConnectionError("Redis paused")

    monkeypatch.setitem(node.presence._scripts, "LEAVE", unreachable)
    await node.leave("r", ALICE)  # never raises: the leave is owed, not forgotten
    monkeypatch.setitem(node.presence._scripts, "LEAVE", script)

    async def alice_gone() -> bool:
        return "alice" not in await present(node, "r")

    await until(alice_gone, "the failed leave was never done")
    assert "bob" in await present(node, "r")


async def failed_heartbeat(
    node: RedisBackend, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """One heartbeat that Redis never answers (a partition, a stall)."""
    script = node.presence._scripts["HEARTBEAT"]

    async def unanswered(**_: Any) -> None:
        raise error

    monkeypatch.setitem(node.presence._scripts, "HEARTBEAT", unanswered)
    with pytest.raises(BackendUnavailable):
        await node.presence.heartbeat()
    monkeypatch.setitem(node.presence._scripts, "HEARTBEAT", script)


async def test_a_failed_heartbeat_is_repaired_even_if_a_late_copy_registered_the_node(
    redis_nodes: RedisFactory, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition: the others reap this node; when the link is back, its heartbeat
    sent before the cut arrives late and registers the node again, members gone."""
    # A long TTL keeps the heartbeat loops out of the way: the beats are driven by hand.
    cut_off, _ = await redis_nodes(presence_ttl_s=30.0)
    other, events = await redis_nodes(presence_ttl_s=30.0)
    await other.subscribe("r")
    await cut_off.join("r", ALICE)
    await events.until(lambda evs: lapse_of(evs, ALICE) == ["join"])
    await failed_heartbeat(cut_off, monkeypatch, ConnectionError("partitioned"))
    await other.presence.reap(cut_off.node_id, force=True)
    await events.until(lambda evs: lapse_of(evs, ALICE) == ["join", "leave"])
    client = aioredis.Redis.from_url(REDIS_URL)  # the late copy of the old heartbeat
    await client.set(f"{redis_prefix}node:{cut_off.node_id}", b"1", px=30_000)
    await client.sadd(f"{redis_prefix}nodes", cut_off.node_id)  # type: ignore[misc]
    await client.aclose()
    await cut_off.presence.heartbeat()  # answered: the node is registered, it seems
    if cut_off.presence.dirty:  # what the heartbeat loop does next
        await cut_off.presence.reconcile()
    await events.until(lambda evs: lapse_of(evs, ALICE) == ["join", "leave", "join"])


@pytest.mark.parametrize("stall", ["failed", "late"])
async def test_after_a_stall_no_live_process_is_reaped(
    redis_nodes: RedisFactory,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    stall: str,
) -> None:
    """Heartbeat keys expire inside Redis while it stalls (DEBUG SLEEP, a slow
    command): right after, every live process looks dead to the others. A process
    whose own heartbeat failed or came late reaps nobody for a TTL, so the others
    get the time to beat again. The heartbeats are driven by hand here (a long TTL
    keeps the loops out of the way), so the race is not left to chance."""
    member_node, _ = await redis_nodes(presence_ttl_s=30.0)
    watcher, events = await redis_nodes(presence_ttl_s=30.0)
    await watcher.subscribe("r")
    await member_node.join("r", ALICE)
    await events.until(lambda evs: lapse_of(evs, ALICE) == ["join"])
    client = aioredis.Redis.from_url(REDIS_URL)
    await client.delete(f"{redis_prefix}node:{member_node.node_id}")  # expired in the stall
    await client.aclose()
    if stall == "failed":
        await failed_heartbeat(watcher, monkeypatch, TimeoutError("Timeout reading from Redis"))
    else:
        await watcher.presence.heartbeat()
        monkeypatch.setattr(watcher.presence, "_beat_at", watcher.presence._beat_at - 25.0)
    await watcher.presence.heartbeat()
    await watcher.presence.reap_dead_nodes()
    assert "alice" in await present(watcher, "r")
    await member_node.publish("r", ALICE, b'"marker"', None)
    await events.until(lambda evs: any(isinstance(e, Message) for e in evs))
    assert lapse_of(events.events, ALICE) == ["join"]


async def test_a_subscribe_under_way_when_the_connection_dropped_does_not_block_readiness(
    redis_nodes: RedisFactory,
) -> None:
    """Its first confirmation arrives after the reconnect: what it reads then is as
    fresh as a check. (Once, a process stayed not ready for good after a Redis
    restart: the room was left among those to be checked, and nothing checked it.)"""
    node, _ = await redis_nodes()
    subscribing = asyncio.ensure_future(node.subscribe("r"))
    await asyncio.sleep(0)  # the subscribe has registered the room, not yet confirmed
    # What the listener does on a lost connection, before redis-py subscribes again:
    node._live, node._resubscribing, node._unsynced = False, True, set(node._rooms)
    await node._on_subscribed(f"{node._prefix}control")  # redis-py subscribed again
    await asyncio.wait_for(subscribing, WAIT_S)  # the room's own confirmation came through

    async def ready() -> bool:
        return await node.ready()

    await until(ready, "the process never became ready again")
