"""`SSEChannel`: a named fan-out of events with replay, where a subscriber is a cursor.

A channel is a bounded ring of encoded events, each with a sequence number. Publishing
encodes once, stores the event in the ring and wakes the listeners waiting on one shared
event: its cost does not depend on how many listeners there are, and it never waits for
any of them. A listener only remembers the next sequence number it wants; it reads the
ring when it wakes. A listener that falls more than the ring's capacity behind is handled
by the channel's lag policy, never by buffering without bound.

Heartbeats come from one clock per channel and interval: whichever listener is first to
wait while no other is timing the channel waits with a deadline; the rest wait plainly.
When the deadline passes on an idle channel, it wakes every listener to send a heartbeat.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import anyio
import anyio.from_thread
import anyio.lowlevel

from ._concurrency import call_soon
from .frames import HEARTBEAT, ServerSentEvent, as_event

if TYPE_CHECKING:
    from .backends.base import Backend
    from .manager import ChannelManager

__all__ = [
    "LAGGED_EVENT",
    "RESET_EVENT",
    "ChannelClosed",
    "ChannelStats",
    "LagPolicy",
    "SSEChannel",
]

LagPolicy = Literal["skip", "close"]

RESET_EVENT: Final = "sse.reset"
"""Sent to a listener whose ``last_event_id`` is unknown or already evicted, before it
goes on live: what it missed cannot be replayed, so the client should refetch its state."""

LAGGED_EVENT: Final = "sse.lagged"
"""Sent to a listener that fell behind the ring (``lag_policy="skip"``), with
``{"channel": name, "missed": n}``: that many events were dropped for it and it resumes at
the oldest one still retained."""

DEFAULT_CAPACITY: Final = 1024
_MAX_BATCH_BYTES: Final = 256 * 1024  # one body message at most, so one wake-up stays short
_HEARTBEAT_FRAME: Final = HEARTBEAT.encode()


class ChannelClosed(RuntimeError):
    """Raised by publishing to a channel that was closed."""


@dataclass
class ChannelStats:
    name: str
    subscribers: int
    published: int
    dropped: int
    """Events a lagging listener skipped, summed over listeners."""
    lagged: int
    """Times a listener fell behind the ring."""
    resets: int
    """Listeners told their ``last_event_id`` could not be replayed."""
    retained: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _HeartbeatClock:
    __slots__ = ("beat", "interval", "last_beat", "leader")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.beat = 0  # bumped each time idle listeners are told to send a heartbeat
        self.last_beat = time.monotonic()  # the first beat comes a full interval after
        self.leader: _Listener | None = None


class SSEChannel:
    """A named channel: ``await ch.broadcast(msg)`` to publish, ``ch.listen()`` to subscribe.

    ``capacity`` bounds the replay history and how far a listener may fall behind;
    ``lag_policy`` says what happens to a listener that falls further: ``"skip"`` (default)
    jumps it to the oldest retained event and sends it a `LAGGED_EVENT`, ``"close"`` ends
    its stream so the client reconnects with ``Last-Event-ID``.
    """

    def __init__(
        self,
        name: str,
        *,
        capacity: int = DEFAULT_CAPACITY,
        lag_policy: LagPolicy = "skip",
        backend: Backend | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"channel name must be a non-empty str, not {name!r}")
        if type(capacity) is not int or capacity < 1:
            raise ValueError(f"capacity must be a positive int, not {capacity!r}")
        if lag_policy not in ("skip", "close"):
            raise ValueError(f"lag_policy must be 'skip' or 'close', not {lag_policy!r}")
        self.name = name
        self.capacity = capacity
        self.lag_policy: LagPolicy = lag_policy
        self._backend = backend
        self._ring: list[ServerSentEvent | None] = [None] * capacity
        self._seq = 0  # sequence number of the newest event; the first is 1
        self._ids: dict[str, int] = {}  # id -> sequence number, for retained events
        # Ids this channel makes are "<epoch>-<seq>": after a restart, an old id is not
        # mistaken for a new event with the same number.
        self._epoch = str(int(time.time() * 1000))
        self._wakeup: anyio.Event | None = None  # created by the first waiter, set by a publish
        self._linked: set[anyio.Event] = set()  # waits spanning several channels (merge.py)
        self._joined_key: tuple[int, int] | None = None  # see _frames_from
        self._joined: tuple[bytes, int] = (b"", 0)
        self._clocks: dict[float, _HeartbeatClock] = {}
        self._last_publish = -math.inf
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._closed = False
        self._subscribers = 0
        self._published = 0
        self._dropped = 0
        self._lagged = 0
        self._resets = 0
        # Set by a manager: called when the last listener leaves; and, once the manager
        # evicted this channel, the manager to rejoin if this object is used again.
        self._on_idle: Callable[[SSEChannel], None] | None = None
        self._evicted_from: ChannelManager | None = None

    # -- publishing ------------------------------------------------------------------------

    async def broadcast(self, message: ServerSentEvent | dict[str, Any] | str) -> ServerSentEvent:
        """Publish to every listener; return the stored event, with its id.

        Never waits for a listener. With the in-memory backend it does not yield to the
        event loop either, so a tight publishing loop should await something between calls.
        """
        event = as_event(message)
        if self._evicted_from is not None:
            successor = self._evicted_from._readopt(self)
            if successor is not self:
                return await successor.broadcast(event)
        if self._token is None:  # for broadcast_from_thread; renewed once nobody listens
            self._token = anyio.lowlevel.current_token()
        if self._backend is not None:
            return await self._backend.publish(self, event)
        return self._store(event)

    def broadcast_nowait(self, message: ServerSentEvent | dict[str, Any] | str) -> ServerSentEvent:
        """Publish from synchronous code running in the event loop's thread."""
        if self._backend is not None:
            raise RuntimeError(
                "broadcast_nowait() needs the in-memory backend; await broadcast() instead"
            )
        if self._evicted_from is not None:
            return self._evicted_from._readopt(self).broadcast_nowait(message)
        return self._store(as_event(message))

    def broadcast_from_thread(
        self, message: ServerSentEvent | dict[str, Any] | str
    ) -> ServerSentEvent:
        """Publish from another thread; blocks until the event is stored and returns it."""
        event = as_event(message)  # bad input raises here, in the caller's thread
        token = self._token
        if token is not None:
            try:
                return anyio.from_thread.run(self.broadcast, event, token=token)
            except anyio.RunFinishedError:
                self._token = None  # that event loop is gone
        if self._backend is not None:
            raise RuntimeError("use the channel from its event loop once before publishing")
        return self._store(event)  # no running loop uses the channel: nobody to wake

    def _store(self, event: ServerSentEvent) -> ServerSentEvent:
        """Append an event to the ring and wake the listeners (backends call this too)."""
        if self._closed:
            raise ChannelClosed(f"channel {self.name!r} is closed")
        seq = self._seq + 1
        if event.id is None:
            event = event._with_id(f"{self._epoch}-{seq}")
        capacity = self.capacity
        slot = seq % capacity
        evicted = self._ring[slot]
        if evicted is not None and self._ids.get(evicted.id) == seq - capacity:  # type: ignore[arg-type]
            del self._ids[evicted.id]  # type: ignore[arg-type]
        self._ring[slot] = event
        if event.id:
            self._ids[event.id] = seq
        self._seq = seq
        self._published += 1
        self._last_publish = time.monotonic()
        self._wake_all()
        return event

    def _frames_from(self, start: int) -> tuple[bytes, int]:
        """The retained frames from sequence ``start`` on (one batch), joined, and the
        next sequence number.

        Listeners woken by the same publish stand at the same place: the first one joins
        the frames, the rest reuse its bytes (the cache is keyed by the newest sequence
        number too, so a publish invalidates it).
        """
        key = (start, self._seq)
        if self._joined_key != key:
            events = self._batch_from(start)
            frames = (
                events[0]._encoded
                if len(events) == 1
                else b"".join([event._encoded for event in events])
            )
            self._joined_key, self._joined = key, (frames, start + len(events))
        return self._joined

    def _batch_from(self, start: int) -> list[ServerSentEvent]:
        """The retained events from sequence ``start`` on, about 256 KiB at most."""
        ring, capacity, end = self._ring, self.capacity, self._seq
        events: list[ServerSentEvent] = []
        size = 0
        seq = start
        while seq <= end and size < _MAX_BATCH_BYTES:
            event: ServerSentEvent = ring[seq % capacity]  # type: ignore[assignment]
            events.append(event)
            size += len(event._encoded)
            seq += 1
        return events

    def _wake_all(self) -> None:
        """Wake every waiting listener, on the event loop's next turn.

        Waking N waiters is O(N) work for the loop, whoever does it; deferring it keeps
        ``broadcast`` itself O(1) (the caller does not pay for the fan-out), and a listener
        that looks before then finds the new event in the ring anyway.
        """
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            call_soon(wakeup.set)
        if self._linked:
            for linked in self._linked:
                call_soon(linked.set)
            self._linked.clear()

    # -- subscribing -----------------------------------------------------------------------

    def listen(
        self,
        *,
        heartbeat_interval: float | None = None,
        last_event_id: str | None = None,
        from_oldest: bool = False,
    ) -> _Listener:
        """Subscribe: an async iterator of `ServerSentEvent`s, from now on.

        With ``last_event_id``, first replays the retained events after it (or sends a
        `RESET_EVENT` if it cannot); with ``from_oldest``, replays every retained event
        (for a client that subscribed before the channel's first event). With
        ``heartbeat_interval``, yields the comment frame
        `HEARTBEAT` whenever the channel was idle that long. The subscription is counted
        from this call until the iterator ends, is closed, or is cancelled while waiting.
        """
        if heartbeat_interval is not None and not heartbeat_interval > 0:
            raise ValueError(f"heartbeat_interval must be > 0 or None, not {heartbeat_interval!r}")
        if self._evicted_from is not None:
            successor = self._evicted_from._readopt(self)
            if successor is not self:
                return successor.listen(
                    heartbeat_interval=heartbeat_interval,
                    last_event_id=last_event_id,
                    from_oldest=from_oldest,
                )
        listener = _Listener(self)
        if from_oldest:
            listener._next = max(1, self._seq - self.capacity + 1)
        elif last_event_id is not None:
            start = self._ids.get(last_event_id)
            if start is None:
                self._resets += 1
                listener._pending_reset = last_event_id
            else:
                listener._next = start + 1
        if heartbeat_interval is not None:
            listener.use_heartbeat(heartbeat_interval)
        return listener

    @property
    def subscriber_count(self) -> int:
        return self._subscribers

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def last_id(self) -> str | None:
        """The id of the newest event, or None before the first."""
        newest = self._ring[self._seq % self.capacity] if self._seq else None
        return newest.id if newest is not None else None

    def history(self, after_id: str | None = None) -> list[ServerSentEvent] | None:
        """The retained events after ``after_id`` (all, if None); None if it is unknown."""
        start = 1 if after_id is None else self._ids.get(after_id)
        if start is None:
            return None
        first = max(start + (after_id is not None), self._seq - self.capacity + 1, 1)
        ring, capacity = self._ring, self.capacity
        return [ring[seq % capacity] for seq in range(first, self._seq + 1)]  # type: ignore[misc]

    def stats(self) -> ChannelStats:
        return ChannelStats(
            name=self.name,
            subscribers=self._subscribers,
            published=self._published,
            dropped=self._dropped,
            lagged=self._lagged,
            resets=self._resets,
            retained=min(self._seq, self.capacity),
        )

    async def cleanup(self) -> int:
        """Kept for Lilya compatibility: listeners leave the moment they disconnect (on a
        cancelled wait, ``aclose()``, or when dropped), so there is nothing left to sweep.
        Returns the number of listeners removed: always 0."""
        await anyio.lowlevel.checkpoint()
        return 0

    async def close(self) -> None:
        """End every listener's stream (after what is already published); refuse publishes."""
        self._closed = True
        self._wake_all()
        await anyio.lowlevel.checkpoint()

    def _register(self, listener: _Listener) -> None:
        self._subscribers += 1

    def _unregister(self, listener: _Listener) -> None:
        self._subscribers -= 1
        clock = listener._clock
        if clock is not None and clock.leader is listener:
            clock.leader = None
            self._wake_all()  # someone else must take over timing the heartbeats
        if self._subscribers == 0:
            # Nobody waits now: drop the wake-up event and loop token, which belong to one
            # event loop, so that the next user (maybe on another loop) makes its own.
            self._wake_all()
            self._token = None
            if self._on_idle is not None:
                self._on_idle(self)

    def _clock_for(self, interval: float) -> _HeartbeatClock:
        clock = self._clocks.get(interval)
        if clock is None:
            clock = self._clocks[interval] = _HeartbeatClock(interval)
        return clock

    def __repr__(self) -> str:
        counts = f"subscribers={self._subscribers} published={self._published}"
        return f"<SSEChannel {self.name!r} {counts}>"


class _Listener:
    """One subscriber: a cursor into its channel's ring.

    An async iterator of `ServerSentEvent`s, and a `FrameBatches` source, so that
    `EventStreamResponse` can take every ready frame in one call.
    """

    __slots__ = (
        "__weakref__",
        "_beat_seen",
        "_channel",
        "_clock",
        "_done",
        "_next",
        "_pending_reset",
        "_registered",
        "dropped",
        "lagged",
    )

    def __init__(self, channel: SSEChannel) -> None:
        self._channel = channel
        self._next = channel._seq + 1
        self._clock: _HeartbeatClock | None = None
        self._beat_seen = 0
        self._pending_reset: str | None = None
        self._done = False
        self.dropped = 0  # events this listener skipped because it lagged
        self.lagged = 0
        self._registered = True
        channel._register(self)

    def use_heartbeat(self, interval: float) -> None:
        """Send heartbeats when idle for ``interval`` s (unless listen() already set one)."""
        if self._clock is None:
            self._clock = self._channel._clock_for(interval)
            self._beat_seen = self._clock.beat

    # -- reading ---------------------------------------------------------------------------

    def __aiter__(self) -> _Listener:
        return self

    async def __anext__(self) -> ServerSentEvent:
        while True:
            notice = self._notice()
            if notice is not None:
                return notice
            channel = self._channel
            if self._next <= channel._seq:
                event = channel._ring[self._next % channel.capacity]
                self._next += 1
                return event  # type: ignore[return-value]
            if self._heartbeat_due():
                return HEARTBEAT
            await self._wait()

    async def next_frames(self) -> bytes:
        """Every frame ready now, as one bytes object (waiting for at least one)."""
        while True:
            notice = self._notice()
            channel = self._channel
            if self._next <= channel._seq:
                frames, self._next = channel._frames_from(self._next)
                return notice._encoded + frames if notice is not None else frames
            if notice is not None:
                return notice._encoded
            if self._heartbeat_due():
                return _HEARTBEAT_FRAME
            await self._wait()

    def _take_ready(self) -> list[ServerSentEvent]:
        """The events ready now, notices first, without waiting (one batch at most).

        Raises StopAsyncIteration once the listener is finished.
        """
        notice = self._notice()
        events = self._channel._batch_from(self._next)
        self._next += len(events)
        return [notice, *events] if notice is not None else events

    def _notice(self) -> ServerSentEvent | None:
        """A reset or lag notice owed to this listener; raises StopAsyncIteration at the end."""
        channel = self._channel
        if self._pending_reset is not None:
            last_event_id, self._pending_reset = self._pending_reset, None
            return ServerSentEvent(
                {
                    "channel": channel.name,
                    "reason": "unknown-last-event-id",
                    "last_event_id": last_event_id,
                },
                event=RESET_EVENT,
            )
        oldest = channel._seq - channel.capacity + 1
        if self._next < oldest:
            missed = oldest - self._next
            self.dropped += missed
            self.lagged += 1
            channel._dropped += missed
            channel._lagged += 1
            self._next = oldest
            if channel.lag_policy == "close":
                self._finish()
                raise StopAsyncIteration
            return ServerSentEvent({"channel": channel.name, "missed": missed}, event=LAGGED_EVENT)
        if self._done or (channel._closed and self._next > channel._seq):
            self._finish()
            raise StopAsyncIteration
        if not self._registered:
            self._registered = True  # back after a cancelled wait: count it again
            channel._register(self)
        return None

    def _heartbeat_due(self) -> bool:
        clock = self._clock
        if clock is None or clock.beat == self._beat_seen:
            return False
        self._beat_seen = clock.beat
        return True

    async def _wait(self) -> None:
        channel = self._channel
        if channel._token is None:
            channel._token = anyio.lowlevel.current_token()
        wakeup = channel._wakeup
        if wakeup is None:
            wakeup = channel._wakeup = anyio.Event()
        clock = self._clock
        try:
            if clock is None or clock.leader is not None:
                await wakeup.wait()
                return
            # Nobody is timing this channel's heartbeats: this listener does, for all.
            clock.leader = self
            deadline = max(channel._last_publish, clock.last_beat) + clock.interval
            with anyio.move_on_after(deadline - time.monotonic()):
                await wakeup.wait()
            if clock.leader is self:
                clock.leader = None
            now = time.monotonic()
            if now >= max(channel._last_publish, clock.last_beat) + clock.interval:
                clock.beat += 1
                clock.last_beat = now
                channel._wake_all()
        except BaseException:
            # Cancelled while waiting (the client left): leave the channel now, not when
            # the garbage collector gets round to this object. A later read re-joins.
            self._release()
            raise

    # -- leaving ---------------------------------------------------------------------------

    def _release(self) -> None:
        if self._registered:
            self._registered = False
            self._channel._unregister(self)

    def _finish(self) -> None:
        self._done = True
        self._release()

    async def aclose(self) -> None:
        self._finish()
        await anyio.lowlevel.checkpoint()

    def close(self) -> None:
        """Leave the channel now (sync)."""
        self._finish()

    async def __aenter__(self) -> _Listener:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._finish()

    def __del__(self) -> None:
        if getattr(self, "_registered", False):
            self._release()
