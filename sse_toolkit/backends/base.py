"""The seam between a `ChannelManager` and where its events live."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

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
    #: What ``GET /_health`` calls the backend ("memory", "redis"; "custom" by default).
    kind: ClassVar[str] = "custom"

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

    # -- health --------------------------------------------------------------------------

    async def health(self) -> str | None:
        """None if the backend can serve now, else why not (``GET /_health`` answers 503).

        Called often (a load balancer may poll every 100 ms): a backend that asks a server
        caches the answer briefly. The default (a local backend) is always fine.
        """
        await anyio.lowlevel.checkpoint()
        return None

    # -- presence storage (shared backends; see `sse_toolkit.presence`) ------------------

    async def write_presence(
        self, member: str, entries: Mapping[str, str | None], ttl: float
    ) -> None:
        """Store this process's (``member``'s) presence entry per channel (None: delete
        it), each channel's entries expiring ``ttl`` seconds after the last write.

        A local backend stores nothing: the process's own table is the whole story.
        """
        await anyio.lowlevel.checkpoint()

    async def read_presence(self, channel: str) -> dict[str, str]:
        """Every process's presence entry for ``channel`` (member -> entry), as stored."""
        await anyio.lowlevel.checkpoint()
        return {}

    async def drop_presence(self, channel: str, members: list[str]) -> None:
        """Delete these members' entries for ``channel`` (stale: their process is gone)."""
        await anyio.lowlevel.checkpoint()
