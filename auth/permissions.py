"""What a verified token may do in a room: plain functions over claims."""

from fnmatch import fnmatchcase

from itemrooms.auth.tokens import Claims

READ = "items:read"
WRITE = "items:write"
ADMIN = "items:admin"


def item_allowed(claims: Claims, item_id: str) -> bool:
    """``items`` absent means any item; otherwise an exact id or a glob (``sku-*``).

    Case-sensitive glob, so ``SKU-1`` does not match ``sku-*`` on any platform.
    """
    if claims.items is None:
        return True
    return any(fnmatchcase(item_id, pattern) for pattern in claims.items)


def can_join(claims: Claims, item_id: str) -> bool:
    return READ in claims.scope and item_allowed(claims, item_id)


def can_publish(claims: Claims, item_id: str) -> bool:
    return WRITE in claims.scope and item_allowed(claims, item_id)


def can_administer(claims: Claims, item_id: str) -> bool:
    return ADMIN in claims.scope and item_allowed(claims, item_id)
