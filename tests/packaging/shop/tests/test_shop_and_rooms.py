"""The shop's own packages and itemrooms' fixtures and client, in one interpreter."""

from auth.tokens import shop_token

from itemrooms.api.client import connect


def test_the_shop_is_its_own(shop_app):
    assert shop_app.title == "shop"
    assert shop_token("42") == "shop-42"


async def test_a_room_for_each_product(itemrooms_server, itemrooms_token):
    url = itemrooms_server.ws_url("product-42")
    async with connect(url, token=itemrooms_token(sub="shop-backend")) as room:
        ack = await room.publish({"price": 10})
        assert ack["seq"] == 1
