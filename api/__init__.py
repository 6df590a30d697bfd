"""itemrooms: an authenticated WebSocket room for every item of an application.

``from itemrooms.api import Itemrooms, Settings, create_app``. Loaded on first use, so
that importing the Python client (itemrooms.api.client) does not load the server.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from itemrooms.api.app import create_app
    from itemrooms.api.embedding import Itemrooms
    from itemrooms.api.settings import Settings

__all__ = ["Itemrooms", "Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "Itemrooms":
        from itemrooms.api.embedding import Itemrooms

        return Itemrooms
    if name == "Settings":
        from itemrooms.api.settings import Settings

        return Settings
    if name == "create_app":
        from itemrooms.api.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
