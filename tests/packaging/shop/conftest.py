# The shop's own conftest: its own fixtures, and no pytest_plugins line for itemrooms.
import pytest

from api.main import app


@pytest.fixture
def shop_app():
    return app
