"""ASGI type aliases and the one protocol the layers share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol, runtime_checkable

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@runtime_checkable
class FrameBatches(Protocol):
    """A source that hands over every frame ready at once, already encoded.

    A channel's listener implements it, so that `EventStreamResponse` wakes once per batch
    and sends it in one body message, with no task between the channel and the socket.
    Any other async or sync iterable is streamed too; this is only the fast path.
    """

    async def next_frames(self) -> bytes:
        """Wait for at least one frame; return all ready ones. `StopAsyncIteration` at the end."""
        ...

    def use_heartbeat(self, interval: float) -> None:
        """Emit `: heartbeat` frames when idle for `interval` seconds (the response asks)."""
        ...

    async def aclose(self) -> None: ...

    def close(self) -> None:
        """Leave the source now; it neither blocks nor waits (so needs no shield or bound)."""
        ...
