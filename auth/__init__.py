"""Who a client is (credentials, tokens) and what it may do (permissions)."""
