# Enables the itemrooms fixtures (pip install 'itemrooms[dev]').
pytest_plugins = ["api.testing"]
