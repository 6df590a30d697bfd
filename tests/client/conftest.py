"""Nothing to import: the plugin's fixtures come from its pytest11 entry point
(pyproject.toml), exactly as a user's project gets them."""
