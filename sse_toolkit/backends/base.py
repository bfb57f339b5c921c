"""The seam between a `ChannelManager` and where its events live."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import anyio.lowlevel

if TYPE_CHECKING:
    from ..channel import SSEChannel
    from ..frames import ServerSentEvent


class BackendUnavailable(ConnectionError):
    """The backend cannot take a publish right now (its server is down or unreachable).

    Nothing was stored: the caller may retry. `SSEApp` answers 503.
    """


class Backend(ABC):
    """Moves a channel's publishes (and, for shared backends, its history) between processes.

    A channel keeps its ring and its listeners' cursors locally. ``publish`` must store the
    event durably enough for the backend's promise, assign its id, make it reach
    ``channel.deliver()`` in every process attached to the channel (this one included), and
    return the stored event. A local backend can simply return ``channel.deliver(event)``.
    When events were lost on the way (trimmed upstream while this process was cut off),
    call ``channel.note_gap(missed)`` before delivering the next one: listeners are told.
    The manager calls ``attach`` before anyone sees a new channel (and again when it
    brings back an evicted channel object that is still referenced; ``channel.last_id``
    is then not None), and ``forget`` when it evicts one.
    """

    #: False for backends that need the network: then `SSEChannel.broadcast_nowait` refuses.
    local: bool = True

    @abstractmethod
    async def publish(self, channel: SSEChannel, event: ServerSentEvent) -> ServerSentEvent:
        """Store and deliver ``event``; return it as stored (with its id)."""

    async def attach(self, channel: SSEChannel) -> None:
        """Start delivering the shared channel's events into ``channel`` (in this process)."""
        return None

    async def detach(self, channel: SSEChannel) -> None:
        """Stop delivering into ``channel`` (it was removed or evicted)."""
        return None

    def forget(self, channel: SSEChannel) -> None:
        """The manager evicted ``channel``: stop delivering into it (no I/O here)."""
        return None

    def remember(self, channel: SSEChannel) -> None:
        """Deprecated: the manager now calls ``attach`` again for a channel it brings back."""
        return None

    def loop_token(self) -> anyio.lowlevel.EventLoopToken | None:
        """The event loop publishes must run on, if the backend is bound to one."""
        return None

    async def close(self) -> None:
        """Release connections and tasks; called by `ChannelManager.close()`."""
        return None
