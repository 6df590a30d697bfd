import time

import pytest

from itemrooms.auth.permissions import can_administer, can_join, can_publish
from itemrooms.auth.tokens import Claims


def claims(scope: str, items: list[str] | None = None) -> Claims:
    return Claims.model_validate(
        {"sub": "u", "exp": int(time.time()) + 60, "scope": scope, "items": items}
    )


def test_scopes() -> None:
    reader, writer = claims("items:read"), claims("items:read items:write")
    assert can_join(reader, "1") and not can_publish(reader, "1")
    assert can_join(writer, "1") and can_publish(writer, "1")
    assert not can_join(claims("items:write"), "1")
    assert not can_administer(writer, "1") and can_administer(claims("items:admin"), "1")


@pytest.mark.parametrize(
    ("patterns", "item_id", "allowed"),
    [
        (None, "anything", True),
        ([], "42", False),
        (["42"], "42", True),
        (["42"], "420", False),
        (["sku-*"], "sku-1", True),
        (["sku-*"], "SKU-1", False),
        (["sku-*"], "xsku-1", False),
        (["doc-?"], "doc-1", True),
        (["doc-?"], "doc-12", False),
        (["a", "b:*"], "b:c:d", True),
    ],
)
def test_items_claim_with_globs(patterns: list[str] | None, item_id: str, allowed: bool) -> None:
    assert can_join(claims("items:read", patterns), item_id) is allowed
    assert can_publish(claims("items:read items:write", patterns), item_id) is allowed
