"""The shop's own HTTP API."""
