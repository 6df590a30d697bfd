"""An integration test against a real itemrooms server, started by the fixtures."""

import pytest

from itemrooms.api.client import RoomClosed

pytestmark = pytest.mark.asyncio  # or asyncio_mode = "auto" in your pytest settings


async def test_members_see_each_others_messages(itemrooms_client):
    async with (
        itemrooms_client("42", sub="alice") as alice,
        itemrooms_client("42", sub="bob", scope="items:read") as bob,
    ):
        ack = await alice.publish({"text": "hi"})  # returns once the server has it
        received = await bob.receive("message")  # the next message, waiting at most 10 s
        assert received["data"] == {"text": "hi"}
        assert received["sender"]["user"] == "alice"
        assert received["seq"] == ack["seq"]


async def test_a_bad_token_is_refused_with_its_reason(itemrooms_client):
    with pytest.raises(RoomClosed) as refused:
        async with itemrooms_client("42", token="not-a-jwt"):
            pass
    assert (refused.value.code, refused.value.reason) == (1008, "invalid_token")
