"""An asyncio client for item rooms, on the ``websockets`` library.

For Python apps that behave like mobile clients or services, and for integration
tests. It speaks the protocol of docs/PROTOCOL.md (v1.1) with the token in the
``Authorization: Bearer`` header::

    async with connect("ws://127.0.0.1:8000/items/42/ws", token=token, reconnect=True) as room:
        ack = await room.publish({"text": "hi"})      # your own copy, with its seq
        async for frame in room:                      # messages, presence, errors
            print(frame)

Design choices, and why:

- **One reader task** reads every frame and dispatches it: replies to the client's own
  requests (a publish's ``ref``, ``pong``, ``refreshed``) resolve the awaiting call, and
  room traffic goes to a queue that ``async for`` drains. Nothing else reads the socket,
  so a publish can await its ack while the application iterates.
- **Publishes are exactly once.** Each carries an ``id`` of its own. One the server has
  not answered when the connection drops, or answered ``outcome_unknown``, is sent again
  with the same ``id`` (after a reconnect, or a short backoff): the server answers an id
  it already published with that message (``"duplicate": true``), never a second one,
  and a resume's replay carrying the id settles it too. So :meth:`Room.publish` returns
  the message (its ``seq``) or raises an error whose outcome is known.
- **Reconnecting is opt-in** (``reconnect=True``): after any close that a retry can fix,
  the room reconnects with exponential backoff and full jitter (at once after 1012
  ``epoch_changed``), resuming with ``since`` and ``epoch``; iteration goes on across
  reconnects with every message once and in order, and yields each reconnection's
  ``welcome``. Without it, the first close ends the room, as it always did.
- **What iteration yields**: every ``message`` (your own included: they carry the
  ``seq`` you resume from, and ``ref`` marks yours; never a ``duplicate`` copy), every
  presence frame (``presence``, and in large rooms ``presence_count`` and
  ``presence_list``; ``members``, ``member_count`` and ``presence_mode`` follow them),
  ``error`` frames that no call is awaiting, and with ``reconnect=True``
  the ``welcome`` of each reconnection. ``pong`` and ``refreshed`` answer ``ping()`` and
  ``refresh()`` and are not yielded, nor is an ``error`` that a ``publish()`` or
  ``refresh()`` raises. Binary frames (relayed by the server, never sequenced) arrive
  as ``{"type": "binary", "data": b"..."}``, a client-side frame type. Frame types and
  fields this client does not know are passed on untouched (v1.1: clients ignore them).
- **The queue is bounded** (``max_queue`` frames, default 4096). When it is full the
  reader stops reading, so the socket's buffers fill and the server eventually closes
  the connection with 1013 ``slow_consumer``: the protocol's own rule for a client that
  does not keep up, rather than unbounded memory or frames dropped silently. A client
  that only publishes and never iterates should pass ``max_queue=None``.
- **Closes are exceptions with the code and reason.** The server accepts every
  handshake and then closes a rejected one (1008 ``invalid_token``, ``forbidden``, …),
  so ``connect`` waits for the ``welcome`` and raises :class:`RoomClosed` if a close
  comes first. Iteration ends quietly only after a close you asked for; a close by the
  server that ends the room raises :class:`RoomClosed` once every frame received before
  it was yielded.

Layout. :class:`Room` is one object to its users, but its methods are grouped by concept
in a chain of private base classes, from ``_RoomState`` up to ``Room``, each building on the
one before it: so each file holds one part of the machinery, while the state they all share
is set in one place. The first three modules are plain helpers under the chain:

=====================  ================================================================
``protocol.py``        what the client takes from docs/PROTOCOL.md: codes, reasons, resume
``errors.py``          the exceptions, which carry the server's code and reason
``tokens.py``          token sources, and a token's ``exp`` read without verifying
``state.py``           ``_RoomState``: every attribute, and send / wait / enqueue
``publishes.py``       ``_Publishes``: each publish until it is settled
``reader.py``          ``_Reader``: the one reader task, every frame dispatched
``refresh.py``         ``_Refreshing``: the token refresh, by hand and ahead of expiry
``connections.py``     ``_Connections``: open, welcome, serve, reconnect
``room.py``            :class:`Room` (the public API) and :func:`connect`
=====================  ================================================================

Import everything public from here (``from itemrooms.api.client import connect, Room, ...``);
underscored names are private to the package.
"""

from .errors import ClientError, NotConnected, PublishRefused, RefreshRefused, RoomClosed
from .protocol import ABNORMAL_CLOSURE as ABNORMAL_CLOSURE
from .protocol import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from .protocol import FATAL_REASONS, Frame
from .protocol import MESSAGE_TOO_BIG as MESSAGE_TOO_BIG
from .protocol import SERVICE_RESTART as SERVICE_RESTART
from .publishes import ID_PATTERN as ID_PATTERN
from .publishes import NOT_THIS_ATTEMPT as NOT_THIS_ATTEMPT
from .room import Room, connect
from .tokens import TokenSource, token_expiry

__all__ = [
    "FATAL_REASONS",
    "ClientError",
    "Frame",
    "NotConnected",
    "PublishRefused",
    "RefreshRefused",
    "Room",
    "RoomClosed",
    "TokenSource",
    "connect",
    "token_expiry",
]
