"""`ChannelManager`: channels by name, created on demand, bounded in number, evicted when idle."""

from __future__ import annotations

import time
from typing import Any, Final

import anyio
import anyio.lowlevel

from .backends.base import Backend
from .backends.memory import MemoryBackend
from .channel import ChannelStats, SSEChannel

__all__ = ["ChannelManager", "TooManyChannels", "sse_manager"]

DEFAULT_MAX_CHANNELS: Final = 10_000
DEFAULT_RETENTION: Final = 300.0
_SWEEP_EVERY: Final = 256  # creations between sweeps for channels idle past retention


class TooManyChannels(RuntimeError):
    """Raised by `ChannelManager.get_or_create` past ``max_channels`` live channels."""


class ChannelManager:
    """Named channels on one backend.

    ``max_channels`` bounds how many exist at once. A channel with no listeners is evicted
    as soon as it holds nothing to replay (it never published), or once its newest event
    is older than ``retention`` seconds, so per-user or per-room channels cannot grow
    memory without bound. An evicted channel object that is still referenced somewhere
    comes back (or forwards to its successor) the next time it is used through the
    manager. Other keyword options (``capacity``, ``lag_policy``) go to every channel.
    """

    def __init__(
        self,
        *,
        backend: Backend | None = None,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        retention: float = DEFAULT_RETENTION,
        **channel_options: Any,
    ) -> None:
        if type(max_channels) is not int or max_channels < 1:
            raise ValueError(f"max_channels must be a positive int, not {max_channels!r}")
        if not retention >= 0:
            raise ValueError(f"retention must be >= 0 seconds, not {retention!r}")
        unknown = set(channel_options) - {"capacity", "lag_policy"}
        if unknown:
            raise TypeError(f"unknown ChannelManager option(s): {', '.join(sorted(unknown))}")
        SSEChannel("probe", **channel_options)  # validate the options once, up front
        self.backend: Backend = backend if backend is not None else MemoryBackend()
        self.max_channels = max_channels
        self.retention = retention
        self._channel_options = channel_options
        self._channels: dict[str, SSEChannel] = {}
        self._created_since_sweep = 0

    async def get_or_create(self, name: str) -> SSEChannel:
        """The channel called ``name``, created if it does not exist yet."""
        channel = self._channels.get(name)
        if channel is None:
            channel = await self._create(name)
        await anyio.lowlevel.checkpoint()
        return channel

    async def get(self, name: str) -> SSEChannel | None:
        await anyio.lowlevel.checkpoint()
        return self._channels.get(name)

    async def list_channels(self) -> list[str]:
        await anyio.lowlevel.checkpoint()
        return list(self._channels)

    async def remove(self, name: str) -> bool:
        """Close the channel (its listeners' streams end) and forget it."""
        channel = self._channels.pop(name, None)
        if channel is None:
            await anyio.lowlevel.checkpoint()
            return False
        channel._on_idle = None
        await channel.close()
        await self.backend.detach(channel)
        return True

    async def close(self) -> None:
        """Close every channel (their listeners' streams end) and the backend.

        The manager is empty afterwards, not dead: a later `get_or_create` starts afresh
        (and a shared backend reconnects), as when a server restarts in the same process.
        """
        for name in list(self._channels):
            await self.remove(name)
        await self.backend.close()

    def __len__(self) -> int:
        return len(self._channels)

    def stats(self) -> dict[str, Any]:
        """Totals and per-channel `ChannelStats`, as plain data."""
        channels = [channel.stats() for channel in self._channels.values()]
        return {
            "channels": len(channels),
            "subscribers": sum(s.subscribers for s in channels),
            "published": sum(s.published for s in channels),
            "dropped": sum(s.dropped for s in channels),
            "lagged": sum(s.lagged for s in channels),
            "per_channel": {s.name: s.as_dict() for s in channels},
        }

    def channel_stats(self, name: str) -> ChannelStats | None:
        channel = self._channels.get(name)
        return channel.stats() if channel is not None else None

    # -- lifecycle of channels -------------------------------------------------------------

    async def _create(self, name: str) -> SSEChannel:
        self._created_since_sweep += 1
        if len(self._channels) >= self.max_channels or self._created_since_sweep >= _SWEEP_EVERY:
            self._sweep()
        if len(self._channels) >= self.max_channels:
            raise TooManyChannels(
                f"cannot create channel {name!r}: {self.max_channels} channels exist and "
                "none is idle (raise max_channels, or lower retention)"
            )
        backend = None if isinstance(self.backend, MemoryBackend) else self.backend
        channel = SSEChannel(name, backend=backend, **self._channel_options)
        channel._on_idle = self._on_idle
        self._channels[name] = channel
        try:
            await self.backend.attach(channel)
        except BaseException:
            # Not attached (the backend is down, say): do not keep a channel that would
            # never hear its events; the next get_or_create tries again.
            if self._channels.get(name) is channel:
                del self._channels[name]
            raise
        return channel

    def _evictable(self, channel: SSEChannel, now: float) -> bool:
        if channel._subscribers:
            return False
        return channel._published == 0 or now - channel._last_publish >= self.retention

    def _sweep(self) -> None:
        self._created_since_sweep = 0
        now = time.monotonic()
        for name, channel in list(self._channels.items()):
            if self._evictable(channel, now):
                self._evict(name, channel)

    def _on_idle(self, channel: SSEChannel) -> None:
        # The last listener left: a channel that never published holds nothing worth
        # keeping (a per-user channel nobody wrote to), so it goes at once.
        if self._channels.get(channel.name) is channel and channel._published == 0:
            self._evict(channel.name, channel)

    def _evict(self, name: str, channel: SSEChannel) -> None:
        del self._channels[name]
        channel._on_idle = None
        # Not closed: a caller may still hold this object and publish to it, so it keeps a
        # way back (see _readopt).
        channel._evicted_from = self
        self.backend.forget(channel)

    def _readopt(self, channel: SSEChannel) -> SSEChannel:
        """An evicted channel is used again: put it back, or hand over to its successor."""
        current = self._channels.get(channel.name)
        if current is not None:
            return current
        if len(self._channels) >= self.max_channels:
            self._sweep()
            if len(self._channels) >= self.max_channels:
                raise TooManyChannels(
                    f"cannot bring back channel {channel.name!r}: {self.max_channels} exist"
                )
        channel._evicted_from = None
        channel._on_idle = self._on_idle
        self._channels[channel.name] = channel
        self.backend.remember(channel)
        return channel


sse_manager = ChannelManager()
"""The process-wide manager, as in Lilya: ``await sse_manager.get_or_create("chat")``."""
