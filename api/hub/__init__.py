"""This process's rooms and members (hub) and what crosses processes (backends)."""
