"""itemrooms' fault-injection kit: real processes, real Redis, real faults, strict checks.

Run ``python -m chaos --help``; chaos/README.md says what each fault does and which
rule is checked after it. The kit talks to the server only over the wire (WebSocket
and HTTP), so it tests the server's contract, and it imports nothing from the server
or from tests/, so it can be pointed at any installed itemrooms and configuration.
"""
