"""The shop's own authentication."""
