"""sse-toolkit: Server-Sent Events for any ASGI application.

The public names live here; the modules behind them (``frames``, ``response``,
``channel``, ``manager``, ``backends``) hold one concept each.
"""

from .app import SSEApp
from .backends import BackendUnavailable
from .channel import LAGGED_EVENT, RESET_EVENT, ChannelClosed, ChannelStats, SSEChannel
from .frames import HEARTBEAT, ServerSentEvent, encode
from .lifecycle import ShutdownReport, shutdown
from .manager import ChannelManager, TooManyChannels, sse_manager
from .merge import MergedListener
from .policy import CORS, Auth, Limits
from .response import EventStreamResponse
from .runner import run
from .tokens import InvalidToken, TokenClaims, TokenVerifier, create_token, verify_token

__all__ = [
    "CORS",
    "HEARTBEAT",
    "LAGGED_EVENT",
    "RESET_EVENT",
    "Auth",
    "BackendUnavailable",
    "ChannelClosed",
    "ChannelManager",
    "ChannelStats",
    "EventStreamResponse",
    "InvalidToken",
    "Limits",
    "MergedListener",
    "SSEApp",
    "SSEChannel",
    "ServerSentEvent",
    "ShutdownReport",
    "TokenClaims",
    "TokenVerifier",
    "TooManyChannels",
    "create_token",
    "encode",
    "run",
    "shutdown",
    "sse_manager",
    "verify_token",
]

__version__ = "0.1.0"
