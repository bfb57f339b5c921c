"""sse-toolkit: Server-Sent Events for any ASGI application.

The public names live here; the modules behind them (``frames``, ``response``,
``channel``, ``manager``, ``backends``) hold one concept each.
"""

from .channel import LAGGED_EVENT, RESET_EVENT, ChannelClosed, ChannelStats, SSEChannel
from .frames import HEARTBEAT, ServerSentEvent, encode
from .manager import ChannelManager, TooManyChannels, sse_manager
from .response import EventStreamResponse

__all__ = [
    "HEARTBEAT",
    "LAGGED_EVENT",
    "RESET_EVENT",
    "ChannelClosed",
    "ChannelManager",
    "ChannelStats",
    "EventStreamResponse",
    "SSEChannel",
    "ServerSentEvent",
    "TooManyChannels",
    "encode",
    "sse_manager",
]

__version__ = "0.1.0"
