"""sse-toolkit: Server-Sent Events for any ASGI application.

The public names live here; the modules behind them are private to the package layout
(``frames``, ``response``, ``channel``, ``manager``, ``app``) and may move.
"""

from .frames import HEARTBEAT, ServerSentEvent, encode
from .response import EventStreamResponse

__all__ = [
    "HEARTBEAT",
    "EventStreamResponse",
    "ServerSentEvent",
    "encode",
]

__version__ = "0.1.0"
