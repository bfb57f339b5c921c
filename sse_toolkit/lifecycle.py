"""Every open event stream of the process, and `shutdown`, which ends them all cleanly.

ASGI servers stop in an order that suits short responses: stop accepting, wait for every
response in flight to finish, and only then tell the app (the lifespan shutdown). An event
stream never finishes by itself, so the server waits forever (uvicorn, granian) or cuts the
stream after its graceful timeout (hypercorn, gunicorn, uvicorn's
``--timeout-graceful-shutdown``): every client sees an error.

So every `EventStreamResponse` registers here while it runs, whatever feeds it (a managed or
standalone channel, a merged stream, a generator), and `shutdown` ends them all: each gets a
last ``retry:`` hint, drawn at random in a window so that a thousand clients do not all come
back in the same millisecond, then a clean end of body. Once a shutdown has begun, a stream
that starts ends the same way at once. The runner (`sse_toolkit.run`) calls `shutdown` on
SIGINT/SIGTERM before it lets the server stop as it normally does.

Streams on several event loops (threads, asyncio and trio) are each ended on their own loop.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import anyio

from ._concurrency import EventLoop, current_loop
from ._validate import check_delay
from .frames import encode

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_RECONNECT_AFTER",
    "DEFAULT_RECONNECT_WINDOW",
    "DEFAULT_SHUTDOWN",
    "ShutdownOptions",
    "ShutdownReport",
    "is_shutting_down",
    "open_stream_count",
    "reopen",
    "shutdown",
]

log = logging.getLogger("sse_toolkit")

DEFAULT_GRACE = 5.0
"""How long `shutdown` waits for the streams' last bytes to be sent before it cuts them."""
DEFAULT_RECONNECT_AFTER = 0.5
"""The shortest ``retry:`` hint (seconds) a stream gets when it is ended by a shutdown."""
DEFAULT_RECONNECT_WINDOW = 5.0
"""The hints are spread at random over this many seconds above `DEFAULT_RECONNECT_AFTER`."""


class Endable(Protocol):
    """What the registry asks of a running stream; both are called on the stream's loop."""

    def end(self, last_frames: bytes) -> None:
        """Send ``last_frames`` (a ``retry:`` hint) and end the body cleanly, soon."""

    def abort(self) -> None:
        """Stop at once, as if the client had gone (its grace ran out)."""


@dataclass(frozen=True)
class ShutdownReport:
    """What `shutdown` did: streams that ended within the grace, and streams it cut."""

    ended: int
    cut: int


@dataclass(frozen=True)
class _Hint:
    after: float
    window: float

    def frame(self) -> bytes:
        seconds = self.after + random.random() * self.window
        return encode(retry=math.ceil(seconds * 1000))


class StreamRegistry:
    """The open streams of the process, by the event loop each runs on. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_loop: dict[EventLoop | None, set[Endable]] = {}
        self._count = 0
        self._ended = 0  # streams ended since the process began (a shutdown counts its own)
        self._closing: _Hint | None = None  # set from a shutdown on: new streams end at once
        self._on_empty: list[tuple[EventLoop | None, Callable[[], object]]] = []

    @property
    def count(self) -> int:
        return self._count

    def add(self, stream: Endable) -> bytes | None:
        """Register a stream that starts; if the process is shutting down, the last frames
        it should send before it ends at once (it stays registered until `discard`)."""
        loop = current_loop()
        with self._lock:
            streams = self._by_loop.get(loop)
            if streams is None:
                streams = self._by_loop[loop] = set()
            streams.add(stream)
            self._count += 1
            closing = self._closing
        return None if closing is None else closing.frame()

    def discard(self, stream: Endable) -> None:
        """The stream has ended (however it did)."""
        loop = current_loop()
        with self._lock:
            streams = self._by_loop.get(loop)
            if streams is None or stream not in streams:
                return
            streams.discard(stream)
            if not streams:
                del self._by_loop[loop]
            self._count -= 1
            self._ended += 1
            waiters = self._on_empty if self._count == 0 else ()
            self._on_empty = [] if waiters else self._on_empty
        for waiter_loop, callback in waiters:
            _call_soon(waiter_loop, callback)

    def last_frames(self) -> bytes:
        """A ``retry:`` hint for a stream that ends outside a shutdown (its server cancels
        it), drawn like a shutdown's."""
        hint = self._closing or _Hint(DEFAULT_RECONNECT_AFTER, DEFAULT_RECONNECT_WINDOW)
        return hint.frame()

    def reopen(self) -> None:
        """Let streams run again after a shutdown (for a process that goes on serving)."""
        with self._lock:
            self._closing = None

    @property
    def shutting_down(self) -> bool:
        return self._closing is not None

    async def shutdown(
        self,
        grace: float = DEFAULT_GRACE,
        *,
        reconnect_after: float = DEFAULT_RECONNECT_AFTER,
        reconnect_window: float = DEFAULT_RECONNECT_WINDOW,
    ) -> ShutdownReport:
        check_delay("grace", grace)
        check_delay("reconnect_after", reconnect_after)
        check_delay("reconnect_window", reconnect_window)
        hint = _Hint(reconnect_after, reconnect_window)
        with self._lock:
            self._closing = hint
            snapshot = {loop: list(streams) for loop, streams in self._by_loop.items()}
            before = self._count
            ended_before = self._ended
        started = time.monotonic()
        if before:
            log.info("shutting down: ending %d open event stream(s)", before)
        for loop, streams in snapshot.items():
            _call_soon(loop, lambda s=streams: _end_all(s, hint))  # type: ignore[misc]
        # Until none is open: streams that start meanwhile end at once, and are waited for.
        with anyio.move_on_after(grace):
            while await self._wait_until_empty():
                pass
        with self._lock:
            left = {loop: list(streams) for loop, streams in self._by_loop.items()}
            cut = self._count
            ended = self._ended - ended_before
        for loop, streams in left.items():
            _call_soon(loop, lambda s=streams: _abort_all(s))  # type: ignore[misc]
        if cut:
            log.warning("%d event stream(s) did not end within %s s: cut", cut, grace)
        elif ended:
            log.info("%d event stream(s) ended in %.2f s", ended, time.monotonic() - started)
        return ShutdownReport(ended=ended, cut=cut)

    async def _wait_until_empty(self) -> bool:
        """Wait until no stream is open; False at once if none is (True: look again)."""
        emptied = anyio.Event()
        waiter = (current_loop(), emptied.set)
        with self._lock:
            if self._count == 0:
                return False
            self._on_empty.append(waiter)
        try:
            await emptied.wait()
        finally:
            with self._lock:
                if waiter in self._on_empty:
                    self._on_empty.remove(waiter)
        return True


def _end_all(streams: list[Endable], hint: _Hint) -> None:
    for stream in streams:
        stream.end(hint.frame())


def _abort_all(streams: list[Endable]) -> None:
    for stream in streams:
        stream.abort()


def _call_soon(loop: EventLoop | None, callback: Callable[[], object]) -> None:
    if loop is None:  # registered outside any event loop: nothing can be waiting there
        callback()
    else:
        loop.call_soon(callback)


open_streams = StreamRegistry()
"""The process-wide registry every `EventStreamResponse` joins while it runs."""


async def shutdown(
    grace: float = DEFAULT_GRACE,
    *,
    reconnect_after: float = DEFAULT_RECONNECT_AFTER,
    reconnect_window: float = DEFAULT_RECONNECT_WINDOW,
) -> ShutdownReport:
    """End every open event stream of the process cleanly; return once all have ended.

    Each stream sends what it has ready, then a last ``retry:`` hint of
    ``reconnect_after`` plus a random share of ``reconnect_window`` seconds (so clients do
    not all reconnect at once), then a clean end of body; its source is closed and its
    client's ``EventSource`` reconnects (to another process, in a rolling deploy). Streams
    on any event loop or thread of the process are ended on their own loop. Streams that
    start from now on end the same way at once (`reopen` undoes that). Streams whose last
    bytes are not sent within ``grace`` seconds (a client that stopped reading) are cut,
    as if the client had gone.

    Call it before the server's own shutdown: `sse_toolkit.run` and the adapters in
    ``sse_toolkit.contrib`` do, on SIGINT and SIGTERM.
    """
    return await open_streams.shutdown(
        grace, reconnect_after=reconnect_after, reconnect_window=reconnect_window
    )


@dataclass(frozen=True)
class ShutdownOptions:
    """How a server adapter calls `shutdown` (see there); checked when made."""

    grace: float = DEFAULT_GRACE
    reconnect_after: float = DEFAULT_RECONNECT_AFTER
    reconnect_window: float = DEFAULT_RECONNECT_WINDOW

    def __post_init__(self) -> None:
        for name in ("grace", "reconnect_after", "reconnect_window"):
            check_delay(name, getattr(self, name))

    async def shutdown(self) -> ShutdownReport:
        return await shutdown(
            self.grace,
            reconnect_after=self.reconnect_after,
            reconnect_window=self.reconnect_window,
        )

    _ENVIRONMENT = (
        ("grace", "SSE_TOOLKIT_GRACE"),
        ("reconnect_after", "SSE_TOOLKIT_RECONNECT_AFTER"),
        ("reconnect_window", "SSE_TOOLKIT_RECONNECT_WINDOW"),
    )

    @classmethod
    def from_environment(cls) -> ShutdownOptions:
        """The options in ``SSE_TOOLKIT_GRACE``, ``SSE_TOOLKIT_RECONNECT_AFTER`` and
        ``SSE_TOOLKIT_RECONNECT_WINDOW`` (the defaults where unset): how a server's worker
        processes, which the server starts, learn them."""
        values: dict[str, float] = {}
        for field_name, variable in cls._ENVIRONMENT:
            text = os.environ.get(variable)
            if text:
                try:
                    values[field_name] = float(text)
                except ValueError:
                    message = f"{variable} must be a number of seconds, not {text!r}"
                    raise ValueError(message) from None
        return cls(**values)

    def to_environment(self) -> None:
        """Set the variables `from_environment` reads (for the worker processes to come)."""
        for field_name, variable in self._ENVIRONMENT:
            os.environ[variable] = repr(getattr(self, field_name))


DEFAULT_SHUTDOWN = ShutdownOptions()
"""The options every server adapter uses unless told otherwise."""


def reopen() -> None:
    """Let new streams run again after `shutdown` (a process that goes on serving, tests)."""
    open_streams.reopen()


def is_shutting_down() -> bool:
    """Whether `shutdown` has begun (and `reopen` has not been called since): new streams
    end at once, and ``GET /_health`` answers 503."""
    return open_streams.shutting_down


def open_stream_count() -> int:
    """How many event streams are open in this process now."""
    return open_streams.count
