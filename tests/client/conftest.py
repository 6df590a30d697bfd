"""The plugin's fixtures, imported so that these tests exercise them.

Not ``pytest_plugins = ["api.testing"]``: pytest refuses that outside the top-level
conftest, and tests/conftest.py belongs to the suite at large.
"""

from api.testing import (  # noqa: F401  (fixtures and the marker, registered by importing)
    _itemrooms_shared_server,
    itemrooms_client,
    itemrooms_server,
    itemrooms_server_factory,
    itemrooms_token,
    pytest_configure,
)
