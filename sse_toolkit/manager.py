"""`ChannelManager`: channels by name, created on demand, bounded in number, evicted when idle.

The manager owns the life cycle of its channels outright; a channel never knows its
manager. Creation is single-flight per name: concurrent callers wait for the one creation
and get its channel, or all get its error, and nobody sees a channel before its backend
has attached it (its history loaded). Eviction happens only when no listener object of
the channel exists (a listener whose read timed out still exists, and resumes on the same
channel), by the retention rule below.
"""

from __future__ import annotations

import math
import time
import weakref
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.lowlevel

from .backends.base import Backend
from .backends.memory import MemoryBackend
from .channel import ChannelStats, SSEChannel

if TYPE_CHECKING:
    from .presence import Presence

__all__ = ["ChannelManager", "TooManyChannels", "sse_manager"]

DEFAULT_MAX_CHANNELS: Final = 10_000
DEFAULT_RETENTION: Final = 300.0
_SWEEP_EVERY: Final = 256  # creations between sweeps for channels idle past retention
_FIRST_SUBSCRIBER_GRACE: Final = 1.0
"""A channel nobody published to stays this long (at most ``retention``) after
`get_or_create` handed it out, so that its caller has the time to subscribe."""


class TooManyChannels(RuntimeError):
    """Raised by `ChannelManager.get_or_create` past ``max_channels`` live channels (or past
    ``max_subscriber_channels`` for a subscriber)."""


class _Creation:
    """One creation in flight: the callers for the same name wait on ``done``."""

    __slots__ = ("channel", "done", "error", "for_subscriber")

    def __init__(self, for_subscriber: bool) -> None:
        self.done = anyio.Event()
        self.channel: SSEChannel | None = None
        self.error: BaseException | None = None
        self.for_subscriber = for_subscriber


class ChannelManager:
    """Named channels on one backend.

    ``max_channels`` bounds how many exist at once. A channel is evicted only when no
    listener object of it exists (a listener whose read timed out still exists), when the
    manager sweeps (when full, every few hundred creations, or on `sweep()`): at once if
    it holds nothing to replay (it never published; at most a second after it was last
    handed out, so its caller can subscribe), or once its newest event is older than
    ``retention`` seconds; so per-user or per-room channels cannot grow memory without
    bound. An evicted channel object that is still referenced somewhere is the one
    `get_or_create` brings back: there is never a second channel of one name while the
    first is alive.

    ``max_subscriber_channels`` (default ``max_channels // 2``) bounds the channels that
    subscribers alone can make exist: ``get_or_create(name, for_subscriber=True)`` creates
    a new channel only while fewer channels created for subscribers and never published to
    exist, so subscribing can never fill the manager and make publishing fail.
    Other keyword options (``capacity``, ``lag_policy``, ``max_bytes``) go to every channel.
    """

    def __init__(
        self,
        *,
        backend: Backend | None = None,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        max_subscriber_channels: int | None = None,
        retention: float = DEFAULT_RETENTION,
        **channel_options: Any,
    ) -> None:
        if type(max_channels) is not int or max_channels < 1:
            raise ValueError(f"max_channels must be a positive int, not {max_channels!r}")
        if max_subscriber_channels is None:
            max_subscriber_channels = max_channels // 2
        if (
            type(max_subscriber_channels) is not int
            or not 0 <= max_subscriber_channels <= max_channels
        ):
            raise ValueError(
                "max_subscriber_channels must be an int from 0 to max_channels, "
                f"not {max_subscriber_channels!r}"
            )
        if isinstance(retention, bool) or not isinstance(retention, int | float):
            raise ValueError(f"retention must be >= 0 seconds, not {retention!r}")
        if not retention >= 0 or math.isnan(retention):
            raise ValueError(f"retention must be >= 0 seconds, not {retention!r}")
        unknown = set(channel_options) - {"capacity", "lag_policy", "max_bytes"}
        if unknown:
            raise TypeError(f"unknown ChannelManager option(s): {', '.join(sorted(unknown))}")
        SSEChannel("probe", **channel_options)  # validate the options once, up front
        self.backend: Backend = backend if backend is not None else MemoryBackend()
        self.max_channels = max_channels
        self.max_subscriber_channels = max_subscriber_channels
        self.retention = retention
        self._channel_options = channel_options
        self._channels: dict[str, SSEChannel] = {}
        self._creating: dict[str, _Creation] = {}
        # Evicted channels someone still holds: brought back rather than duplicated.
        self._evicted: weakref.WeakValueDictionary[str, SSEChannel] = weakref.WeakValueDictionary()
        # Channels created for subscribers; pruned of those published to (or gone) lazily.
        self._for_subscribers: set[str] = set()
        self._handed_out: dict[str, float] = {}  # name -> when get_or_create last returned it
        self._created_since_sweep = 0
        self._closed = False  # close() was called, and nothing used the manager since
        self._presence: Presence | None = None

    async def get_or_create(self, name: str, *, for_subscriber: bool = False) -> SSEChannel:
        """The channel called ``name``, created if it does not exist yet.

        With ``for_subscriber=True`` (a subscriber asks, not a publisher), a new channel
        counts against ``max_subscriber_channels`` until it is published to.
        """
        self._closed = False  # (a closed manager starts afresh)
        while True:
            channel = self._channels.get(name)
            if channel is not None:
                await anyio.lowlevel.checkpoint()
                self._handed_out[name] = time.monotonic()
                return channel
            creation = self._creating.get(name)
            if creation is None:
                return await self._create(name, for_subscriber)
            await creation.done.wait()
            if creation.error is not None:
                raise creation.error
            # Created (return it from the table, unless already removed again), or its
            # creator was cancelled: look again, and maybe create it ourselves.

    async def get(self, name: str) -> SSEChannel | None:
        await anyio.lowlevel.checkpoint()
        return self._channels.get(name)

    async def list_channels(self) -> list[str]:
        await anyio.lowlevel.checkpoint()
        return list(self._channels)

    def sweep(self) -> int:
        """Evict the channels idle by the rules above now; return how many went."""
        return self._sweep()

    async def remove(self, name: str) -> bool:
        """Close the channel (its listeners' streams end) and forget it."""
        channel = self._channels.pop(name, None)
        self._for_subscribers.discard(name)
        self._handed_out.pop(name, None)
        if channel is None:
            channel = self._evicted.pop(name, None)
            if channel is not None:
                await channel.close()
            await anyio.lowlevel.checkpoint()
            return False
        await channel.close()
        await self.backend.detach(channel)
        return True

    async def close(self) -> None:
        """Close every channel (their listeners' streams end) and the backend.

        The manager is empty afterwards, not dead: a later `get_or_create` starts afresh
        (and a shared backend reconnects), as when a server restarts in the same process.
        Presence (if any) stops first: this process's entries leave the backend.
        """
        self._closed = True
        if self._presence is not None:
            await self._presence.close()
        for name in list(self._channels):
            await self.remove(name)
        for name in list(self._evicted):
            await self.remove(name)
        await self.backend.close()

    def __len__(self) -> int:
        return len(self._channels)

    # -- health and presence ---------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether `close` was called and nothing used the manager since."""
        return self._closed

    def reopen(self) -> None:
        """Mark a closed manager as serving again (an app's lifespan startup does; so
        does the next `get_or_create`)."""
        self._closed = False

    async def health(self) -> str | None:
        """None if the manager can serve now, else why not (``GET /_health`` answers 503):
        it is closed, or its backend does not answer (`Backend.health`)."""
        if self._closed:
            await anyio.lowlevel.checkpoint()
            return "the channel manager is closed"
        try:
            return await self.backend.health()
        except Exception as exc:  # a backend's own failure is an answer too
            return f"the backend's health check failed: {exc!r}"

    def presence(self, *, ttl: float | None = None) -> Presence:
        """The manager's `Presence` (made on first call; ``ttl``: see `Presence`).

        Every app on this manager shares it; asking for another ``ttl`` than the one it
        runs with raises `ValueError`.
        """
        from .presence import DEFAULT_PRESENCE_TTL, Presence

        if self._presence is None:
            self._presence = Presence(self, ttl=DEFAULT_PRESENCE_TTL if ttl is None else ttl)
        elif ttl is not None and ttl != self._presence.ttl:
            raise ValueError(
                f"this manager's presence runs with ttl={self._presence.ttl:g}, not {ttl!r}"
            )
        return self._presence

    def stats(self) -> dict[str, Any]:
        """Totals and per-channel `ChannelStats`, as plain data: the channels clients use,
        not presence's internal ``_presence.*`` ones (their joins and leaves are no
        channel of the app's, and no client can subscribe to them by name)."""
        from .presence import PRESENCE_CHANNEL_PREFIX

        channels = [
            channel.stats()
            for name, channel in self._channels.items()
            if not name.startswith(PRESENCE_CHANNEL_PREFIX)
        ]
        return {
            "channels": len(channels),
            "subscribers": sum(s.subscribers for s in channels),
            "published": sum(s.published for s in channels),
            "dropped": sum(s.dropped for s in channels),
            "lagged": sum(s.lagged for s in channels),
            "gaps": sum(s.gaps for s in channels),
            "per_channel": {s.name: s.as_dict() for s in channels},
        }

    def channel_stats(self, name: str) -> ChannelStats | None:
        channel = self._channels.get(name)
        return channel.stats() if channel is not None else None

    # -- lifecycle of channels -------------------------------------------------------------

    async def _create(self, name: str, for_subscriber: bool) -> SSEChannel:
        creation = self._creating[name] = _Creation(for_subscriber)
        try:
            channel = self._evicted.pop(name, None)
            if channel is not None and channel.closed:
                channel = None
            self._make_room(name, for_subscriber and channel is None)
            if channel is None:
                backend = None if isinstance(self.backend, MemoryBackend) else self.backend
                channel = SSEChannel(name, backend=backend, **self._channel_options)
            try:
                await self.backend.attach(channel)
            except BaseException:
                # Not attached (the backend is down, say): nobody gets a channel that would
                # never hear its events; the next get_or_create tries again.
                if channel.published:
                    self._evicted[name] = channel
                raise
            if self._creating.get(name) is creation:  # not removed meanwhile
                self._channels[name] = channel
                self._handed_out[name] = time.monotonic()
                if for_subscriber and not channel.published:
                    self._for_subscribers.add(name)
            creation.channel = channel
            return channel
        except anyio.get_cancelled_exc_class():
            raise  # the callers waiting on this creation look again
        except BaseException as exc:
            creation.error = exc
            raise
        finally:
            if self._creating.get(name) is creation:
                del self._creating[name]
            creation.done.set()

    def _make_room(self, name: str, for_subscriber: bool) -> None:
        """Raise TooManyChannels unless one more channel (for a subscriber) may exist."""
        self._created_since_sweep += 1
        in_flight = len(self._creating) - 1  # this creation is in the table already
        if (
            len(self._channels) + in_flight >= self.max_channels
            or self._created_since_sweep >= _SWEEP_EVERY
        ):
            self._sweep()
        if len(self._channels) + in_flight >= self.max_channels:
            raise TooManyChannels(
                f"cannot create channel {name!r}: {self.max_channels} channels exist and "
                "none is idle (raise max_channels, or lower retention)"
            )
        if for_subscriber:
            limit = self.max_subscriber_channels
            if len(self._for_subscribers) + in_flight >= limit and (
                self._subscriber_channels() >= limit
            ):
                self._sweep()
                if self._subscriber_channels() >= limit:
                    raise TooManyChannels(
                        f"cannot create channel {name!r} for a subscriber: "
                        f"{limit} channels nobody published to exist "
                        "(max_subscriber_channels)"
                    )

    def _subscriber_channels(self) -> int:
        """Channels created for subscribers and never published to, in flight included."""
        channels = self._channels
        for name in list(self._for_subscribers):
            channel = channels.get(name)
            if channel is None or channel.published:
                self._for_subscribers.discard(name)
        in_flight = sum(
            1
            for name, creation in self._creating.items()
            if creation.for_subscriber and name not in channels
        )
        return len(self._for_subscribers) + in_flight - 1  # not counting this creation

    def _evictable(self, name: str, channel: SSEChannel, now: float) -> bool:
        if channel.open_listeners:
            return False
        idle = now - self._handed_out.get(name, -math.inf)
        if channel.published == 0:
            return idle >= min(self.retention, _FIRST_SUBSCRIBER_GRACE)
        return min(idle, now - channel.last_published_at) >= self.retention

    def _sweep(self) -> int:
        self._created_since_sweep = 0
        now = time.monotonic()
        evicted = 0
        for name, channel in list(self._channels.items()):
            if self._evictable(name, channel, now):
                self._evict(name, channel)
                evicted += 1
        return evicted

    def _evict(self, name: str, channel: SSEChannel) -> None:
        del self._channels[name]
        self._for_subscribers.discard(name)
        self._handed_out.pop(name, None)
        # Not closed: a caller may still hold this object; get_or_create brings it back.
        self._evicted[name] = channel
        self.backend.forget(channel)


sse_manager = ChannelManager()
"""The process-wide manager, as in Lilya: ``await sse_manager.get_or_create("chat")``."""
