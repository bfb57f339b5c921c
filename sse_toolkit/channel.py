"""`SSEChannel`: a named fan-out of events with replay, where a subscriber is a cursor.

A channel is a bounded ring of encoded events, each with a sequence number. Publishing
encodes once, stores the event in the ring and wakes the waiting listeners with one
callback on their event loop's next turn: its cost does not depend on how many listeners
there are, and it never waits for any of them. A listener only remembers the next
sequence number it wants; it reads the ring when it wakes. A listener that falls more than
the ring's capacity behind is handled by the channel's lag policy, never by buffering
without bound.

Waiting listeners park on shared events: on the event loop of the first one to wait since
the last wake-up, in slices of at most 256 listeners (one `anyio.Event` each, filled in
turn); on any other loop, one event per loop. A publish (or a gap, or a close) sets them
all at once: every listener reads on the next turn.

Heartbeats come from one clock per channel and interval: whichever listener is first to
wait while no other is timing the channel waits with a deadline; the rest wait plainly.
When the deadline passes on an idle channel (nothing published for an interval), it
bumps the clock's beat and wakes the listeners to send a heartbeat (each sends one per
beat, whenever it next waits), but in slices: one slice per loop turn, so that however
many listeners there are, the loop runs at most one slice of them between two looks at
its timers and sockets, and a heartbeat does not stall it. The slices are woken by
callbacks of that loop, not by the listener that timed the beat: cancelling it half-way
leaves none unwoken. A publish meanwhile wakes the slices left at once. When the timing
listener leaves, the others are woken in slices too, and the first one to wait again
takes over.

The channel knows nothing of managers. What backends and merged streams may use is named
here without underscores: `SSEChannel.deliver`, `SSEChannel.note_gap`, `SSEChannel.link`
and `SSEChannel.unlink`, and on listeners `take_ready`, `ready`, `suspend` and `channel`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import os
import threading
import time
from collections.abc import Awaitable, Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import anyio
import anyio.from_thread
import anyio.lowlevel

from ._concurrency import EventLoop, current_loop, running_asyncio_loop
from .frames import HEARTBEAT, ServerSentEvent, as_event, id_line

if TYPE_CHECKING:
    from .backends.base import Backend

__all__ = [
    "BACKEND_ORIGIN",
    "LAGGED_EVENT",
    "RESET_EVENT",
    "ChannelClosed",
    "ChannelStats",
    "LagPolicy",
    "Listener",
    "SSEChannel",
    "event_filter",
]

LagPolicy = Literal["skip", "close"]

RESET_EVENT: Final = "sse.reset"
"""Sent to a listener whose ``last_event_id`` is unknown or already evicted, before it
goes on live: what it missed cannot be replayed, so the client should refetch its state."""

LAGGED_EVENT: Final = "sse.lagged"
"""Sent to a listener that fell behind the ring (``lag_policy="skip"``), with
``{"channel": name, "missed": n}``: that many events were dropped for it and it resumes at
the oldest one still retained. Also sent where the backend lost events upstream (see
`SSEChannel.note_gap`); ``missed`` is then null when the count is unknown."""

BACKEND_ORIGIN: Final = "0-0"
"""With a backend, whose event ids are its stream positions (Redis stream ids): the replay
point before a channel's first event."""

DEFAULT_CAPACITY: Final = 1024
DEFAULT_MAX_BYTES: Final = 4 * 1024 * 1024
MAX_ECHOED_ID: Final = 256
"""At most this many characters of an unknown ``last_event_id`` are echoed in `RESET_EVENT`."""
_MAX_BATCH_BYTES: Final = 256 * 1024  # one body message at most, so one wake-up stays short
_HEARTBEAT_FRAME: Final = HEARTBEAT.encode()
_WAKE_SLICE: Final = 256
"""Waiting listeners per wake-up event: a heartbeat wakes one such slice per loop turn."""


def event_filter(events: Iterable[str] | str | None) -> frozenset[str | None] | None:
    """The set a listener's filter tests ``event.event`` against, from ``listen(events=...)``.

    None (no filter) stays None. Names follow the frame rules for ``event`` (a str without
    CR, LF or NUL); a lone str is one name; an empty collection or an empty name is a
    `ValueError` naming ``events``. An event without an ``event`` field (or with an empty
    one) has the type ``"message"``, as EventSource dispatches it: with that name the set
    also holds None and "", so that the test is one lookup.
    """
    if events is None:
        return None
    if isinstance(events, str):
        names: list[object] = [events]
    elif isinstance(events, (bytes, bytearray, dict)) or not isinstance(events, Iterable):
        raise TypeError(f"events must be an iterable of str or None, not {events!r}")
    else:
        names = list(events)
    if not names:
        raise ValueError("events must name at least one event type (None: every type)")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"events must hold str event types, not {name!r}")
        if not name:
            raise ValueError('events: an empty event type is "message" (name it so)')
        if "\r" in name or "\n" in name or "\0" in name:
            raise ValueError(f"events: an event type holds no CR, LF or NUL, not {name!r}")
    types: set[str | None] = set(names)  # type: ignore[arg-type]
    if "message" in types:
        types |= {None, ""}
    return frozenset(types)


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
    """Times a listener fell behind the ring or read across a gap."""
    resets: int
    """Listeners told their ``last_event_id`` could not be replayed."""
    retained: int
    gaps: int = 0
    """Times the backend reported events lost upstream (`SSEChannel.note_gap`)."""
    retained_bytes: int = 0
    """Encoded size of the retained events (bounded by ``max_bytes``)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _HeartbeatClock:
    __slots__ = ("beat", "interval", "last_beat", "leader")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.beat = 0  # bumped each time idle listeners are told to send a heartbeat
        self.last_beat = time.monotonic()  # the first beat comes a full interval after
        self.leader: Listener | None = None


class _Slice:
    """Waiters on one event loop, woken together (`set`): a slice of a `_Wakeups`.

    On asyncio each waiter awaits a future of its own (`waiter`), held here: an
    `anyio.Event` would hold two wait coroutines per waiter for as long as it sleeps (about
    400 B per idle listener) and resume through both when woken. On trio, one anyio.Event.
    A waiter that is cancelled gives its future back (`forget`): none piles up here.
    """

    __slots__ = ("_event", "_futures", "_loop", "is_set")

    def __init__(self) -> None:
        self._loop = running_asyncio_loop()
        self._futures: list[asyncio.Future[None]] = []
        self._event = anyio.Event() if self._loop is None else None
        self.is_set = False

    def waiter(self) -> Awaitable[Any]:
        """What one waiter awaits (call it where it awaits: on asyncio it is its own)."""
        if self._event is not None:
            return self._event.wait()
        future: asyncio.Future[None] = self._loop.create_future()  # type: ignore[union-attr]
        if self.is_set:
            future.set_result(None)
        else:
            self._futures.append(future)
        return future

    def forget(self, waiter: Awaitable[Any]) -> None:
        """``waiter`` stopped waiting (cancelled, timed out)."""
        if self._event is None:
            with contextlib.suppress(ValueError):
                self._futures.remove(waiter)  # type: ignore[arg-type]

    def set(self) -> None:
        self.is_set = True
        if self._event is not None:
            self._event.set()
            return
        futures, self._futures = self._futures, []
        for future in futures:
            if not future.done():
                future.set_result(None)


class _Wakeups:
    """The listeners waiting on one event loop, in slices of at most `_WAKE_SLICE`: one
    `_Slice` each, each waiter joining the newest slice.

    Touched only from that loop's thread (``join`` by its waiters, ``set_all`` and ``step``
    as its callbacks), once the channel has let go of it (whoever does so schedules the
    callback): a waiter that took it just before still joins it before the callback runs.
    """

    __slots__ = ("events", "fill", "loop")

    def __init__(self, loop: EventLoop) -> None:
        self.loop = loop
        self.events: list[_Slice] = []
        self.fill = _WAKE_SLICE  # waiters in the newest slice (full: the next one opens one)

    def join(self) -> _Slice:
        if self.fill < _WAKE_SLICE:
            self.fill += 1
            return self.events[-1]
        self.fill = 1
        event = _Slice()
        self.events.append(event)
        return event

    def set_all(self) -> None:
        """Wake every slice left, now (a publish, a gap, a close)."""
        events, self.events = self.events, []
        for event in events:
            event.set()

    def step(self) -> None:
        """Wake one slice now and the next on the loop's next turn (a heartbeat): the loop
        runs at most one slice of listeners between two looks at its timers and sockets.
        `set_all` (a publish meanwhile) wakes the rest at once, which ends the steps."""
        events = self.events
        if events:
            events.pop().set()
            if events:
                self.loop.call_soon(self.step)


def _new_id_prefix() -> str:
    # 64 random bits: unique per channel object and per process (two channels, or two
    # processes started together, never share a prefix), 13 characters in base32.
    return base64.b32encode(os.urandom(8)).decode().rstrip("=").lower()


class SSEChannel:
    """A named channel: ``await ch.broadcast(msg)`` to publish, ``ch.listen()`` to subscribe.

    ``capacity`` bounds the replay history and how far a listener may fall behind, in
    events; ``max_bytes`` (default 4 MiB) in encoded bytes: past either, the oldest
    events leave the ring (the newest one always stays, however large);
    ``lag_policy`` says what happens to a listener that falls further: ``"skip"`` (default)
    jumps it to the oldest retained event and sends it a `LAGGED_EVENT`, ``"close"`` ends
    its stream so the client reconnects with ``Last-Event-ID``.

    Publishing is thread-safe: from another thread or another event loop, the listeners'
    loop is woken at once (through its thread-safe scheduler).
    """

    def __init__(
        self,
        name: str,
        *,
        capacity: int = DEFAULT_CAPACITY,
        lag_policy: LagPolicy = "skip",
        backend: Backend | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"channel name must be a non-empty str, not {name!r}")
        if type(capacity) is not int or capacity < 1:
            raise ValueError(f"capacity must be a positive int, not {capacity!r}")
        if type(max_bytes) is not int or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive int, not {max_bytes!r}")
        if lag_policy not in ("skip", "close"):
            raise ValueError(f"lag_policy must be 'skip' or 'close', not {lag_policy!r}")
        self.name = name
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.lag_policy: LagPolicy = lag_policy
        self._backend = backend
        self._ring: list[ServerSentEvent | None] = [None] * capacity
        self._seq = 0  # sequence number of the newest event stored; the first is 1
        # The oldest sequence number retained, raised (by the capacity or by max_bytes)
        # BEFORE its slot is overwritten or cleared: a reader whose start is below it once
        # it has read may have read a lost slot (a publisher in another thread), and reads
        # again through the lag notice.
        self._oldest = 1
        self._bytes = 0  # encoded size of the retained events
        self._lock = threading.Lock()  # publishers from several threads take turns
        self._ids: dict[str, int] = {}  # id -> sequence number, for retained events
        self._prefix = _new_id_prefix()  # auto ids are "<prefix>-<seq>"
        # Gaps the backend noted, oldest first: (sequence number of the first event after
        # the gap, events missed or None, note number); the newest `capacity` of them. A
        # listener still behind an older one is told its count is unknown.
        self._gaps: list[tuple[int, int | None, int]] = []
        self._gap_notes = 0  # note number of the newest gap
        self._gaps_forgotten = (0, 0)  # (note number, position) of the newest one dropped
        # The waiters on the loop of the first one to wait since the last wake-up, in
        # slices; let go of (and woken) by a publish, or by a heartbeat one slice a turn.
        self._wakeups: _Wakeups | None = None
        self._beating: list[_Wakeups] = []  # let go of by heartbeats, maybe still waking
        self._wakeups_elsewhere: dict[EventLoop, _Slice] = {}  # listeners on other loops
        self._linked: dict[anyio.Event, EventLoop] = {}  # waits spanning channels (merge.py)
        self._joined: tuple[int, int, bytes, int] = (0, 0, b"", 0)  # see _frames_from
        self._clocks: dict[float, _HeartbeatClock] = {}
        self._last_publish = -math.inf
        # When each ring slot's event was stored (monotonic), for the metrics' latency:
        # None until a listener asks (`Listener.batch_published_at`), so free until then.
        self._published_at: list[float] | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._closed = False
        self._subscribers = 0  # listeners counted for stats (not while a wait is cancelled)
        self._open = 0  # listener objects that exist and have not finished
        self._published = 0
        self._dropped = 0
        self._lagged = 0
        self._resets = 0

    # -- publishing ------------------------------------------------------------------------

    async def broadcast(self, message: ServerSentEvent | dict[str, Any] | str) -> ServerSentEvent:
        """Publish to every listener; return the stored event, with its id.

        Never waits for a listener. It is a checkpoint: cancellable (if cancelled, nothing
        was published) and it lets other tasks run, so a tight publishing loop starves
        nobody.
        """
        event = as_event(message)
        if self._token is None:  # for broadcast_from_thread (cleared once that loop is gone)
            self._token = anyio.lowlevel.current_token()
        # Before storing, so that a cancelled broadcast has published nothing, and so
        # that the deferred wake-up of the listeners is not paid inside this call.
        await anyio.lowlevel.checkpoint()
        if self._backend is not None:
            return await self._backend.publish(self, event)
        return self.deliver(event)

    def broadcast_nowait(self, message: ServerSentEvent | dict[str, Any] | str) -> ServerSentEvent:
        """Publish from synchronous code (any thread): the in-memory backend only."""
        if self._backend is not None:
            raise RuntimeError(
                "broadcast_nowait() needs the in-memory backend; await broadcast() instead"
            )
        return self.deliver(as_event(message))

    def broadcast_from_thread(
        self, message: ServerSentEvent | dict[str, Any] | str
    ) -> ServerSentEvent:
        """Publish from another thread; blocks until the event is stored and returns it."""
        event = as_event(message)  # bad input raises here, in the caller's thread
        if self._backend is None:
            return self.deliver(event)  # thread-safe, and wakes the listeners' loop
        for token in (self._token, self._backend.loop_token()):
            if token is None:
                continue
            try:
                return anyio.from_thread.run(self.broadcast, event, token=token)
            except anyio.RunFinishedError:
                if self._token is token:
                    self._token = None  # that event loop is gone
        raise RuntimeError(
            "broadcast_from_thread() needs the event loop this channel's backend runs on: "
            "use the channel from a running event loop first"
        )

    def deliver(self, event: ServerSentEvent) -> ServerSentEvent:
        """Store an event in the ring and wake the listeners; return it as stored.

        For backends: what ``publish`` (or a reader) calls in each process. An event
        without an id gets ``"<prefix>-<seq>"``, the prefix unique to this channel object.
        Safe from any thread.
        """
        with self._lock:
            if self._closed:
                raise ChannelClosed(f"channel {self.name!r} is closed")
            seq = self._seq + 1
            if event.id is None:
                event = event.with_id(f"{self._prefix}-{seq}")
            ring, capacity = self._ring, self.capacity
            size = self._bytes + len(event.frame)
            oldest = first = self._oldest
            if seq - oldest >= capacity:
                oldest = seq - capacity + 1
                size -= len(ring[first % capacity].frame)  # type: ignore[union-attr]
            while size > self.max_bytes and oldest < seq:  # each event leaves once: O(1)
                size -= len(ring[oldest % capacity].frame)  # type: ignore[union-attr]
                oldest += 1
            self._oldest, self._bytes = oldest, size  # before any slot changes
            for evicted_seq in range(first, oldest):
                slot = evicted_seq % capacity
                evicted = ring[slot]
                if evicted is not None and evicted.id and self._ids.get(evicted.id) == evicted_seq:
                    del self._ids[evicted.id]
                ring[slot] = None  # its memory goes now
            ring[seq % capacity] = event
            if event.id:
                self._ids[event.id] = seq
            self._seq = seq
            self._published += 1
            self._last_publish = now = time.monotonic()
            if self._published_at is not None:
                self._published_at[seq % capacity] = now
        self._wake_all()
        return event

    def note_gap(self, missed: int | None) -> None:
        """Events were lost between the newest delivered event and the next one.

        For backends (a stream trimmed while this process was cut off, say). Every
        listener that reads past this point, live or replaying, gets a `LAGGED_EVENT`
        ``{"channel": name, "missed": missed}`` (``missed`` None: unknown) before the next
        event. Under ``lag_policy="close"`` the stream of a listener that was live at the
        gap ends instead; one that subscribed after it (a reconnection replaying across
        it) gets the notice, since ending its stream would only make it reconnect again.
        """
        if missed is not None and (type(missed) is not int or missed < 0):
            raise ValueError(f"missed must be a non-negative int or None, not {missed!r}")
        with self._lock:
            if self._closed:
                return
            self._gap_notes += 1
            self._gaps.append((self._seq + 1, missed, self._gap_notes))
            if len(self._gaps) > self.capacity:
                forgotten = self._gaps.pop(0)
                self._gaps_forgotten = (forgotten[2], forgotten[0])
        self._wake_all()

    def _frames_from(self, start: int, stop: int) -> tuple[bytes, int]:
        """The frames of sequence numbers ``start`` to ``stop`` (excluded; one batch at
        most), joined, and the next sequence number to read.

        Listeners woken by the same publish stand at the same place: the first one joins
        the frames, the rest reuse its bytes.
        """
        joined = self._joined  # one tuple: readers on several loops' threads see it whole
        if joined[0] != start or joined[1] != stop:
            events = self._batch_from(start, stop)
            if not events:
                return b"", start  # evicted meanwhile (another thread): not cached
            frames = (
                events[0].frame if len(events) == 1 else b"".join([event.frame for event in events])
            )
            joined = self._joined = (start, stop, frames, start + len(events))
        return joined[2], joined[3]

    def _batch_from(self, start: int, stop: int) -> list[ServerSentEvent]:
        """The retained events from ``start`` up to ``stop`` (excluded), ~256 KiB at most."""
        ring, capacity = self._ring, self.capacity
        events: list[ServerSentEvent] = []
        size = 0
        seq = start
        while seq < stop and size < _MAX_BATCH_BYTES:
            event = ring[seq % capacity]
            if event is None:
                break  # evicted meanwhile by another thread: the caller sees it and reads again
            events.append(event)
            size += len(event.frame)
            seq += 1
        return events

    def _wake_all(self) -> None:
        """Wake every waiting listener, on its event loop's next turn.

        Waking N waiters is O(N) work for the loop, whoever does it; deferring it keeps
        ``broadcast`` itself O(1) (the caller does not pay for the fan-out), and a listener
        that looks before then finds the new event in the ring anyway. From another thread,
        the loop's thread-safe scheduler wakes it at once. The slices a heartbeat is still
        waking one a turn are woken at once too.
        """
        wakeups = self._wakeups
        if wakeups is not None:
            self._wakeups = None
            wakeups.loop.call_soon(wakeups.set_all)
        if self._beating:
            beating, self._beating = self._beating, []
            for waking in beating:
                waking.loop.call_soon(waking.set_all)
        if self._linked:
            linked, self._linked = self._linked, {}
            for event, event_loop in list(linked.items()):
                event_loop.call_soon(event.set)
        if self._wakeups_elsewhere:
            elsewhere, self._wakeups_elsewhere = self._wakeups_elsewhere, {}
            for event_loop, waking_there in list(elsewhere.items()):
                event_loop.call_soon(waking_there.set)

    def _wake_in_turns(self) -> None:
        """Wake every waiting listener for a heartbeat (or to find who times the next):
        those on the first waiter's loop one slice per loop turn, so that the loop never
        runs more than `_WAKE_SLICE` of them between two looks at its timers and sockets.

        The turns are that loop's callbacks, not a task: nothing can cancel them half-way.
        A publish meanwhile wakes the slices left at once (see `_beating`). Listeners on
        other loops are woken at once, as by `_wake_all`; waits that span channels (merged
        streams) are not: they time their own heartbeats.
        """
        wakeups = self._wakeups
        if wakeups is not None:
            beating = [waking for waking in self._beating if waking.events]  # (not done)
            loop = wakeups.loop
            # Still waking the slices of an earlier beat on this loop (and thread)? These
            # go after them, in the same turns: one slice a turn, not two.
            earlier = next((w for w in beating if w.loop == loop and loop.is_current()), None)
            if earlier is None:
                # Kept where a publish finds it before it is let go of (publishers in
                # other threads look at _wakeups, then at _beating): a publish wakes it
                # one way or the other.
                beating.append(wakeups)
                self._beating = beating
            # Let go of before its loop may run the steps: a listener they wake must not
            # join it again.
            if self._wakeups is wakeups:
                self._wakeups = None
            if earlier is None:
                loop.call_soon(wakeups.step)
            else:
                earlier.events[:0] = wakeups.events  # (no waiter joins it from this thread)
        if self._wakeups_elsewhere:
            elsewhere, self._wakeups_elsewhere = self._wakeups_elsewhere, {}
            for event_loop, event in list(elsewhere.items()):
                event_loop.call_soon(event.set)

    def _wakeup_here(self) -> _Slice:
        """The wake-up of a listener on another loop than the first waiter's."""
        loop = current_loop()
        assert loop is not None
        wakeup = self._wakeups_elsewhere.get(loop)
        if wakeup is None:
            wakeup = self._wakeups_elsewhere[loop] = _Slice()
        return wakeup

    def link(self, wakeup: anyio.Event) -> None:
        """Set ``wakeup`` (once, on the caller's event loop) at the next publish, gap or close.

        For waits that span several channels (merged streams). Check the listeners'
        `Listener.ready` after linking, before waiting: a publish from another thread may
        have come in between.
        """
        loop = current_loop()
        if loop is None:
            raise RuntimeError("link() needs a running event loop")
        self._linked[wakeup] = loop

    def unlink(self, wakeup: anyio.Event) -> None:
        self._linked.pop(wakeup, None)

    # -- subscribing -----------------------------------------------------------------------

    def listen(
        self,
        *,
        heartbeat_interval: float | None = None,
        last_event_id: str | None = None,
        from_oldest: bool = False,
        events: Iterable[str] | None = None,
    ) -> Listener:
        """Subscribe: an async iterator of `ServerSentEvent`s, from now on.

        With ``last_event_id``, first replays the retained events after it (or sends a
        `RESET_EVENT` if it cannot; ``""`` is no id, as in the spec); with
        ``from_oldest``, replays every retained event (for a client that subscribed before
        the channel's first event). With ``events``, only events of those types are
        handed over (see below). With ``heartbeat_interval``, yields the comment frame
        `HEARTBEAT` whenever the channel was idle that long. The subscription is counted
        from this call until the iterator ends, is closed, or is cancelled while waiting
        (a later read counts it again).

        ``events``: event types to receive (an event without an ``event`` field is a
        ``"message"``, as EventSource dispatches it), live and in replay; the notices
        (`RESET_EVENT`, `LAGGED_EVENT`) and heartbeats always come. A filtered-out event
        still moves the listener on, and when the last event of a batch of frames
        (`Listener.next_frames`, what `EventStreamResponse` streams) is filtered out, the
        batch ends with the id-only frame ``id: <its id>``: the client's ``Last-Event-ID``
        moves past events it never saw, so a reconnection resumes exactly, without
        replaying them or being told it lagged (an event whose id is empty gets no such
        frame: that would reset the client's id). Iterating (``async for``) and
        `Listener.take_ready` just skip them.
        """
        if heartbeat_interval is not None and not heartbeat_interval > 0:
            raise ValueError(f"heartbeat_interval must be > 0 or None, not {heartbeat_interval!r}")
        types = event_filter(events)
        listener = Listener(self)
        listener._types = types
        start = None
        if from_oldest:
            start = self._oldest
        elif last_event_id:  # "" is no id at all (the spec's reset of the last event id)
            # The channel's own positions first: a caller-set id may spell one.
            found = self._cursor_seq(last_event_id)
            if found is None:
                found = self._ids.get(last_event_id)
            if found is None:
                self._resets += 1
                listener._pending_reset = last_event_id[:MAX_ECHOED_ID]
            else:
                start = found + 1
        if start is not None:
            listener._next = listener._base = start
            if self._gap_notes:  # the gaps it replays across are news to it
                note, position = self._gaps_forgotten
                seen = note if position < start or not note else note - 1
                for gap_start, _, note in self._gaps:
                    if gap_start >= start:
                        break
                    seen = note
                listener._gaps_seen = seen
            oldest = self._oldest
            if start < oldest:
                # A cursor older than the ring: what it missed is told now, as a replay
                # (not a live lag: under "close", ending would only bring it back).
                listener._next = oldest
                listener._base += oldest - start  # skipped, not delivered
                missed, _ = listener._take_gaps(oldest, oldest - start)
                listener._pending_lag = listener._lag(missed, live=False)
        if heartbeat_interval is not None:
            listener.use_heartbeat(heartbeat_interval)
        return listener

    def _cursor_seq(self, text: str) -> int | None:
        """The sequence number a cursor of this channel names (see `position_at`), if any."""
        if self._backend is not None and text == BACKEND_ORIGIN:
            return 0
        prefix, _, seq = text.rpartition("-")
        if prefix != self._prefix or not (seq.isascii() and seq.isdigit()):
            return None
        number = int(seq)
        return number if number <= self._seq else None

    def position_at(self, seq: int) -> str:
        """A replay point for `listen` after the event of sequence number ``seq``, whatever
        id it carries (``0``: before the first event).

        In memory: the cursor ``"<prefix>-<seq>"`` of this channel object (another object,
        or another process, does not know it and resets). With a backend, event ids are
        the backend's positions, shared by every process: the event's id if it is still
        retained, `BACKEND_ORIGIN` before the first event.
        """
        if self._backend is not None:
            if seq == 0:
                return BACKEND_ORIGIN
            if seq >= self._oldest:
                event = self._ring[seq % self.capacity]
                if event is not None and event.id:
                    return event.id
        return f"{self._prefix}-{seq}"

    @property
    def subscriber_count(self) -> int:
        """Listeners subscribed now (one whose wait was cancelled counts again once it reads)."""
        return self._subscribers

    @property
    def open_listeners(self) -> int:
        """Listener objects that exist and have not finished (whether waiting or not).

        A channel with open listeners must stay where they can hear it: managers keep it.
        """
        return self._open

    @property
    def published(self) -> int:
        return self._published

    @property
    def last_published_at(self) -> float:
        """`time.monotonic()` of the newest publish (``-inf`` before the first)."""
        return self._last_publish

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
        end = self._seq
        first = max(start + (after_id is not None), self._oldest)
        ring, capacity = self._ring, self.capacity
        return [ring[seq % capacity] for seq in range(first, end + 1)]  # type: ignore[misc]

    def stats(self) -> ChannelStats:
        return ChannelStats(
            name=self.name,
            subscribers=self._subscribers,
            published=self._published,
            dropped=self._dropped,
            lagged=self._lagged,
            resets=self._resets,
            retained=self._seq - self._oldest + 1,
            gaps=self._gap_notes,
            retained_bytes=self._bytes,
        )

    async def cleanup(self) -> int:
        """Kept for Lilya compatibility: listeners leave the moment they disconnect (on a
        cancelled wait, ``aclose()``, or when dropped), so there is nothing left to sweep.
        Returns the number of listeners removed: always 0."""
        await anyio.lowlevel.checkpoint()
        return 0

    async def close(self) -> None:
        """End every listener's stream (after what is already published); refuse publishes."""
        with self._lock:
            self._closed = True
        self._wake_all()
        await anyio.lowlevel.checkpoint()

    def _register(self) -> None:
        self._subscribers += 1

    def _unregister(self, listener: Listener) -> None:
        self._subscribers -= 1
        clock = listener._clock
        if clock is not None and clock.leader is listener:
            clock.leader = None
            self._wake_in_turns()  # someone else must take over timing the heartbeats
        if self._subscribers == 0:
            # Nobody waits now: drop the wake-up event, which belongs to one event loop, so
            # that the next user (maybe on another loop) makes its own. The loop token stays
            # (broadcast_from_thread) until that loop is gone.
            self._wake_all()

    def _clock_for(self, interval: float) -> _HeartbeatClock:
        clock = self._clocks.get(interval)
        if clock is None:
            clock = self._clocks[interval] = _HeartbeatClock(interval)
        return clock

    def __repr__(self) -> str:
        counts = f"subscribers={self._subscribers} published={self._published}"
        return f"<SSEChannel {self.name!r} {counts}>"


class Listener:
    """One subscriber: a cursor into its channel's ring.

    An async iterator of `ServerSentEvent`s, and a `FrameBatches` source, so that
    `EventStreamResponse` can take every ready frame in one call. Its three ways to read
    (``__anext__``, `next_frames`, `take_ready`) are built on one primitive, `_notice`:
    every notice owed (reset, then lagged for the ring, then lagged for a gap) comes in
    that order, before any event after it.
    """

    __slots__ = (
        "__weakref__",
        "_base",
        "_beat_seen",
        "_born",
        "_channel",
        "_clock",
        "_done",
        "_gaps_seen",
        "_next",
        "_pending_lag",
        "_pending_reset",
        "_registered",
        "_types",
        "dropped",
        "filtered",
        "lagged",
    )

    def __init__(self, channel: SSEChannel) -> None:
        self._channel = channel
        self._next = self._base = channel._seq + 1
        self._types: frozenset[str | None] | None = None  # see listen(events=...)
        self._clock: _HeartbeatClock | None = None
        self._beat_seen = 0
        self._pending_reset: str | None = None
        self._pending_lag: ServerSentEvent | None = None  # a replay older than the ring
        self._gaps_seen = self._born = channel._gap_notes  # older gaps are not its news
        self._done = False
        self.dropped = 0  # events this listener skipped because it lagged
        self.lagged = 0
        self.filtered = 0  # events this listener's filter skipped (see delivered)
        self._registered = True
        channel._open += 1
        channel._register()

    def use_heartbeat(self, interval: float) -> None:
        """Send heartbeats when idle for ``interval`` s (unless listen() already set one)."""
        if self._clock is None:
            self._clock = self._channel._clock_for(interval)
            self._beat_seen = self._clock.beat

    @property
    def channel(self) -> SSEChannel:
        return self._channel

    @property
    def delivered(self) -> int:
        """Events handed over so far (notices and heartbeats not counted).

        Computed from the cursor (how far it moved, less the events skipped by lagging and
        by the filter), not counted per read: the unfiltered read path stays as it was,
        with no counter to bump per batch.
        """
        return self._next - self._base - self.filtered

    def batch_published_at(self) -> float | None:
        """When (`time.monotonic()`) the oldest event of the batch `next_frames` just
        returned was stored in the channel (for a filtered listener: the newest event it
        read); None if unknown. For metrics (`EventStreamResponse` asks right after each
        batch): the channel records publish times from the first call on."""
        channel = self._channel
        times = channel._published_at
        if times is None:
            channel._published_at = [-math.inf] * channel.capacity
            return None
        start, _, _, after = channel._joined  # the batch just joined, if it was this one's
        if after != self._next or self._types is not None:
            start = self._next - 1
        if start < channel._oldest or start < 1:
            return None
        return times[start % channel.capacity]

    def position(self, back: int = 0) -> str:
        """Where this listener stands, as a ``last_event_id`` its channel replays after:
        after the newest event it was handed (``back``: that many events before it).

        What merged streams put in their composite ids: unlike the events' own ids (which
        may be empty, or left behind by the ring), it never loses the listener's place.
        """
        return self._channel.position_at(self._next - 1 - back)

    # -- reading ---------------------------------------------------------------------------

    def __aiter__(self) -> Listener:
        return self

    async def __anext__(self) -> ServerSentEvent:
        while True:
            notice = self._notice()
            if notice is not None:
                return notice
            channel = self._channel
            start = self._next
            stop = channel._seq + 1 if channel._gap_notes == self._gaps_seen else self._stop()
            if start < stop:
                event = channel._ring[start % channel.capacity]
                if start >= channel._oldest:  # not evicted meanwhile (another thread)
                    self._next = start + 1
                    if self._types is None or event.event in self._types:  # type: ignore[union-attr]
                        return event  # type: ignore[return-value]
                    self.filtered += 1
                continue  # lapped by a publisher in another thread (the lag notice is next),
                # or filtered out
            if self._heartbeat_due():
                return HEARTBEAT
            await self._wait()

    async def next_frames(self) -> bytes:
        """Every frame ready now, as one bytes object (waiting for at least one)."""
        while True:
            notices, frames = self._take_frames()
            if frames or notices:
                return b"".join([n.frame for n in notices]) + frames if notices else frames
            if self._heartbeat_due():
                return _HEARTBEAT_FRAME
            await self._wait()

    def take_ready(self) -> list[ServerSentEvent]:
        """The events ready now, notices first, without waiting (one batch at most).

        Raises StopAsyncIteration once the listener is finished (for merged streams). With
        a filter, the events it skips are not in the list (and no id-only frame stands for
        them: the list holds events, not frames).
        """
        notices, events = self._read_batch()
        if self._types is not None and events:
            types = self._types
            kept = [event for event in events if event.event in types]
            self.filtered += len(events) - len(kept)
            events = kept
        return notices + events if notices else events

    def _take_frames(self) -> tuple[list[ServerSentEvent], bytes]:
        if self._types is not None:  # the one check the unfiltered path pays
            return self._take_filtered_frames(self._types)
        notices = self._notices()
        channel = self._channel
        while True:
            start = self._next
            stop = self._stop()
            if start >= stop:
                return notices, b""
            frames, after = channel._frames_from(start, stop)
            if start >= channel._oldest:
                self._next = after
                return notices, frames
            notices += self._notices()

    def _take_filtered_frames(
        self, types: frozenset[str | None]
    ) -> tuple[list[ServerSentEvent], bytes]:
        """`_take_frames` for a listener with a filter: its own bytes, never the shared
        joined batch (other listeners at the same place may want other types)."""
        notices, events = self._read_batch()
        if not events:
            return notices, b""
        frames = [event.frame for event in events if event.event in types]
        skipped = len(events) - len(frames)
        if skipped:
            self.filtered += skipped
            last = events[-1]
            if last.event not in types and last.id:
                # The batch ends with events the client does not want: an id-only frame
                # moves its Last-Event-ID past them (the spec sets the last event ID and
                # dispatches nothing for a frame without data). An empty id gets none: it
                # would reset the client's id, and a replay after the previous one is exact.
                frames.append(id_line(last.id) + b"\n")
        return notices, b"".join(frames)

    def _read_batch(self) -> tuple[list[ServerSentEvent], list[ServerSentEvent]]:
        """The notices owed and the next batch of events (unfiltered), the cursor moved past
        them: what `take_ready` and a filtered `next_frames` read. (The unfiltered
        `next_frames` reads the shared joined bytes instead: `_take_frames`.)"""
        notices = self._notices()
        channel = self._channel
        while True:
            start = self._next
            events = channel._batch_from(start, self._stop())
            if start >= channel._oldest:  # nothing it read was evicted meanwhile
                self._next = start + len(events)
                return notices, events
            notices += self._notices()  # lapped meanwhile by another thread: lag notice

    def _notices(self) -> list[ServerSentEvent]:
        """Every notice owed now, in order; raises StopAsyncIteration only if none is."""
        notices: list[ServerSentEvent] = []
        while True:
            try:
                notice = self._notice()
            except StopAsyncIteration:
                if notices:
                    return notices  # the end is raised again by the next read
                raise
            if notice is None:
                return notices
            notices.append(notice)

    def _notice(self) -> ServerSentEvent | None:
        """The next notice owed to this listener, or None if its next read is events (or a
        wait). Raises StopAsyncIteration at the end of the stream. The one primitive of
        every read path."""
        channel = self._channel
        if not self._registered and not self._done:
            self._registered = True  # back after a cancelled wait: count it again
            channel._register()
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
        if self._pending_lag is not None:
            notice, self._pending_lag = self._pending_lag, None
            return notice
        oldest = channel._oldest
        if self._next < oldest:
            jumped = oldest - self._next
            missed: int | None = jumped
            self._base += jumped  # skipped, not delivered
            self._next = oldest
            if channel._gap_notes != self._gaps_seen:  # and the gaps it jumps over
                missed, _ = self._take_gaps(oldest, missed)
            return self._lag(missed, live=True)
        if channel._gap_notes != self._gaps_seen:
            gap = self._next_gap()
            if gap is not None and gap[0] <= self._next:
                missed, live = self._take_gaps(self._next, 0)
                return self._lag(missed, live=live)
        if self._done or (channel._closed and self._next > channel._seq):
            self._finish()
            raise StopAsyncIteration
        return None

    def _lag(self, missed: int | None, *, live: bool) -> ServerSentEvent:
        channel = self._channel
        self.lagged += 1
        channel._lagged += 1
        if missed:
            self.dropped += missed
            channel._dropped += missed
        if live and channel.lag_policy == "close":
            self._finish()
            raise StopAsyncIteration
        return ServerSentEvent({"channel": channel.name, "missed": missed}, event=LAGGED_EVENT)

    def _next_gap(self) -> tuple[int, int | None, int] | None:
        """The oldest gap not yet reported to this listener (position, missed, note)."""
        channel = self._channel
        note, position = channel._gaps_forgotten
        if self._gaps_seen < note:
            return (position, None, note)  # at least one it was not told of, forgotten
        for gap in channel._gaps:
            if gap[2] > self._gaps_seen:
                return gap
        return None

    def _take_gaps(self, upto: int, missed: int | None) -> tuple[int | None, bool]:
        """Fold every gap not yet reported up to position ``upto`` into ``missed`` (None if
        any count is unknown); also whether one of them came while it was listening."""
        channel = self._channel
        seen = self._gaps_seen
        live = False
        note, position = channel._gaps_forgotten
        if seen < note and position <= upto:
            missed, seen, live = None, note, note > self._born
        for position, lost, note in channel._gaps:
            if note <= seen:
                continue
            if position > upto:
                break
            missed = None if missed is None or lost is None else missed + lost
            seen = note
            live = live or note > self._born
        self._gaps_seen = seen
        return missed, live

    def _stop(self) -> int:
        """Where the events this listener can read now end (excluded): the newest, or the
        next gap it has not been told of."""
        channel = self._channel
        if channel._gap_notes != self._gaps_seen:
            gap = self._next_gap()
            if gap is not None:
                return min(gap[0], channel._seq + 1)
        return channel._seq + 1

    @property
    def ready(self) -> bool:
        """Whether a read now returns without waiting (events, a notice, or the end)."""
        channel = self._channel
        return (
            self._next <= channel._seq
            or self._pending_reset is not None
            or self._pending_lag is not None
            or channel._gap_notes != self._gaps_seen
            or channel._closed
            or self._done
        )

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
        wakeups = channel._wakeups
        if wakeups is None:
            loop = current_loop()
            assert loop is not None
            wakeups = channel._wakeups = _Wakeups(loop)
            wakeup = wakeups.join()
        elif wakeups.loop.is_current():
            if wakeups.fill < _WAKE_SLICE:  # (join, inlined: the common case of a wait)
                wakeups.fill += 1
                wakeup = wakeups.events[-1]
            else:
                wakeup = wakeups.join()
        else:
            wakeup = channel._wakeup_here()  # listeners on several event loops at once
        clock = self._clock
        waiter = None
        try:
            if (  # a publisher in another thread came in before the wake-up
                self._next <= channel._seq
                or channel._closed
                or channel._gap_notes != self._gaps_seen
            ):
                await anyio.lowlevel.checkpoint()
                return
            if clock is None or clock.leader is not None:
                await (waiter := wakeup.waiter())
                return
            # Nobody is timing this channel's heartbeats: this listener does, for all.
            clock.leader = self
            deadline = max(channel._last_publish, clock.last_beat) + clock.interval
            waiter = wakeup.waiter()
            with anyio.move_on_after(deadline - time.monotonic()):
                await waiter
            wakeup.forget(waiter)  # (timed out: it was not woken)
            if clock.leader is self:
                clock.leader = None
            now = time.monotonic()
            if now >= max(channel._last_publish, clock.last_beat) + clock.interval:
                clock.beat += 1
                clock.last_beat = now
                channel._wake_in_turns()
        except BaseException:
            # Cancelled while waiting (the client left, or a read timed out): stop counting
            # as a subscriber now, not when the garbage collector gets round to this
            # object. The listener stays open: a later read resumes where it was.
            if waiter is not None:
                wakeup.forget(waiter)
            self.suspend()
            raise

    # -- leaving ---------------------------------------------------------------------------

    def suspend(self) -> None:
        """Stop counting as a subscriber until the next read (its wait was cancelled)."""
        if self._registered:
            self._registered = False
            self._channel._unregister(self)

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._channel._open -= 1
        self.suspend()

    async def aclose(self) -> None:
        self._finish()
        await anyio.lowlevel.checkpoint()

    def close(self) -> None:
        """Leave the channel now (sync)."""
        self._finish()

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._finish()

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            self._finish()
