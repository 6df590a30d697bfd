"""itemrooms: an authenticated WebSocket room for every item of an application."""
