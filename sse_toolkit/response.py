"""`EventStreamResponse`: an ASGI callable that streams any iterable as Server-Sent Events.

One stream runs as a small task group:

* the caller's task sends body messages (the only task that ever calls ``send``);
* a watcher waits on ``receive()`` for ``http.disconnect`` and cancels the stream; when
  heartbeats (plain iterables), a send timeout or a ``max_duration`` are on, it also wakes
  at the next deadline: an idle stream gets a heartbeat, a send stuck past
  ``send_timeout`` drops the client. One helper task, not two: each costs memory for as
  long as the stream is open. No send is wrapped in its own timeout or cancel scope;
* for a plain iterable, a producer task pulls items into a bounded buffer, so that the
  sender sends everything that piled up during its last send in one body message.
  A channel listener (a `FrameBatches`) needs no producer: it hands over ready frames
  itself, and heartbeats come from the channel's shared clock.

How a stream ends: the body is complete (a final empty body message); the process shuts
down (`sse_toolkit.shutdown`: what is ready, a last ``retry:`` hint, then the final
message); the server cancels it (its own graceful timeout: the same, shielded and bounded,
and if that went out the response returns normally, as it is complete); the client leaves,
or any ``send``/``receive`` fails, or the send timeout or a stalled final send drops it
(no final message, ``on_disconnect`` runs); the source raises (what it yielded before is
sent, then its exception propagates unchanged, the body left unfinished); or the caller
cancels. Whichever it is, the source is closed first (a sync one in a worker thread,
after the ``next()`` running there returns: see `_ThreadedIterator`).

For metrics, a stream keeps plain counters (`StreamState`: body bytes sent, why it ended)
and tells an optional `StreamObserver` when it opens and closes; nothing else is paid per
batch unless the observer asks for the publish-to-write latency.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import re
import threading
import time
import types
from bisect import bisect_left
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, Final, Protocol

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread

from ._concurrency import (
    CLOSE_TIMEOUT,
    Wakeup,
    aclose_quietly,
    call_maybe_async,
    running_asyncio_loop,
    start_helper,
    stop_helper,
)
from ._types import FrameBatches, Message, Receive, Scope, Send
from ._validate import check_seconds
from .frames import HEARTBEAT, ServerSentEvent, encode, frame_bytes
from .lifecycle import open_streams

__all__ = [
    "CLOSE_REASONS",
    "HOOK_TIMEOUT",
    "SYNC_CLOSE_TIMEOUT",
    "EventStreamResponse",
    "LatencyHistogram",
    "StreamObserver",
    "StreamState",
]

log = logging.getLogger("sse_toolkit.response")

Content = AsyncIterable[Any] | Iterable[Any]
DisconnectHook = Callable[[], Awaitable[None] | None]

# Headers that only make sense hop by hop: HTTP/2 and HTTP/3 forbid them outright, and
# ASGI servers manage framing themselves.
_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
    }
)
_DEFAULT_HEADERS: Final = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",  # nginx: do not buffer the stream
}
_HEARTBEAT_FRAME: Final = HEARTBEAT.encode()
_HEARTBEAT_HEADER: Final = b"x-sse-heartbeat"  # the interval, in seconds (see the client)
_FINAL_SEND_TIMEOUT: Final = 5.0
# Cancelled from outside (a server's own graceful timeout): how long the last body message
# may take before the cancellation goes on.
_CANCELLED_FINISH_TIMEOUT: Final = 1.0
_DONE: Final = object()
# What a server's send or receive raises when the client is gone: OSError (uvicorn's
# ClientDisconnected is one), or a closed anyio stream (stacks that relay the messages).
# Anything else also ends the stream as a drop, but is logged: it is a bug somewhere.
_GONE_ERRORS: Final = (
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)

SYNC_CLOSE_TIMEOUT = CLOSE_TIMEOUT
"""How long closing a sync iterator waits for the ``next()`` running in its worker thread."""
HOOK_TIMEOUT = CLOSE_TIMEOUT
"""How long an async ``on_disconnect`` may run (shielded) before it is cancelled."""


Headers = Mapping[str, str] | Iterable[tuple[str, str]]

CLOSE_REASONS: Final = (
    "client_left",
    "send_timeout",
    "token_expired",
    "shutdown",
    "lag",
    "source_ended",
    "error",
)
"""Why a stream ended (`StreamState.close_reason`): the client left (or its socket broke);
it stopped reading for ``send_timeout`` (or did not take the final message); its
``max_duration`` ran out (in `SSEApp`: its token expired); the process shut down (or the
server cancelled the response); its listener lagged under ``lag_policy="close"`` (told by
the source, see `StreamObserver`); the source ended (a channel closed, an iterable ran out);
the source raised. The first cause wins."""


class LatencyHistogram:
    """Fixed buckets of plain ints: what `EventStreamResponse` adds its publish-to-write
    latencies to (one ``bisect`` and two additions per observed batch; no lock, no library
    call). A stream observes a batch at most every ``interval`` seconds (every batch of a
    stream that writes less often; 0: every batch): at saturation, a fraction of them.

    ``counts[i]`` counts observations ``<= bounds[i]`` and above the previous bound (the
    last count is above every bound: +Inf).
    """

    __slots__ = ("bounds", "counts", "interval", "sum")

    def __init__(self, bounds: Iterable[float], interval: float = 0.0) -> None:
        self.bounds = sorted(float(b) for b in bounds)
        if not self.bounds or any(not math.isfinite(b) for b in self.bounds):
            raise ValueError(f"latency buckets must be finite numbers, not {bounds!r}")
        if isinstance(interval, bool) or not isinstance(interval, (int, float)):
            raise TypeError(f"the latency sampling interval must be seconds, not {interval!r}")
        if not 0 <= interval < math.inf:
            raise ValueError(f"the latency sampling interval must be >= 0 s, not {interval!r}")
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.interval = float(interval)

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds


class StreamState(Protocol):
    """What an observer may read of a stream (`EventStreamResponse` writes it)."""

    @property
    def bytes_sent(self) -> int:
        """Body bytes sent so far (frames, hints and heartbeats: what the client got)."""

    @property
    def close_reason(self) -> str | None:
        """One of `CLOSE_REASONS` once the stream ended (None while it runs)."""

    @property
    def opened_at(self) -> float:
        """`time.monotonic()` when it started."""

    @property
    def response(self) -> EventStreamResponse: ...


class StreamObserver(Protocol):
    """Told when a stream opens and closes (metrics). Both are called on the stream's event
    loop and must neither block nor raise. With ``latency`` set and a source that knows
    when its frames were published (a channel's listener: ``batch_published_at``), every
    batch's publish-to-write latency is added to it; None skips that."""

    latency: LatencyHistogram | None

    def opened(self, stream: StreamState) -> None: ...

    def closed(self, stream: StreamState) -> None:
        """``stream.close_reason`` is set; a source that ended may be told apart (lag)."""


_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 field name
# RFC 9110 field-value characters: visible ASCII, space, tab and obs-text (latin-1 above
# 0x7f). So no CR, LF, NUL or any other control character: nothing that ends a field.
_FIELD_VALUE: Final = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# Statuses whose response has no content (RFC 9110 15.3.5, 15.3.6, 15.4.5): headers only.
_NO_CONTENT: Final = frozenset({204, 205, 304})
_NOT_A_STREAM: Final = (str, bytes, bytearray, memoryview, Mapping)


def _header_list(headers: Headers | None) -> list[tuple[bytes, bytes]]:
    merged = dict(_DEFAULT_HEADERS)
    if headers is None:
        items: Iterable[object] = ()
    elif isinstance(headers, Mapping):
        items = headers.items()
    elif isinstance(headers, (str, bytes, bytearray)) or not isinstance(headers, Iterable):
        raise TypeError(
            f"headers must be a mapping or an iterable of (name, value) pairs, not {headers!r}"
        )
    else:
        items = headers
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise TypeError(f"headers: each must be a (name, value) pair of str, not {item!r}")
        name, value = item
        if not (isinstance(name, str) and isinstance(value, str)):
            raise TypeError(f"headers: name and value must be str, not {name!r}: {value!r}")
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"headers: {name!r} is not a field name (an RFC 9110 token)")
        key = name.lower()
        if key in _HOP_BY_HOP or key == "content-length":
            raise ValueError(
                f"headers: {name!r} is for framing, which the ASGI server does itself"
                " (the body is a stream: hop-by-hop, no length)"
            )
        value = value.strip(" \t")  # surrounding whitespace is not part of a value
        if not _FIELD_VALUE.fullmatch(value):
            raise ValueError(
                f"headers: the value of {name!r} must be latin-1 text without control"
                f" characters (CR, LF, NUL, ...), not {value!r}"
            )
        merged[key] = value
    return [_encoded_field(k, v) for k, v in merged.items()]


_ENCODED_FIELDS: dict[tuple[str, str], tuple[bytes, bytes]] = {}


def _encoded_field(name: str, value: str) -> tuple[bytes, bytes]:
    """``(name, value)`` as bytes, shared between responses: the same few fields (the
    defaults, CORS, the heartbeat's) are sent by every stream, and each holds its list
    for as long as it is open."""
    field = _ENCODED_FIELDS.get((name, value))
    if field is None:
        field = (name.encode("latin-1"), value.encode("latin-1"))
        if len(_ENCODED_FIELDS) < 1024:  # (bounded: values may vary per request)
            _ENCODED_FIELDS[name, value] = field
    return field


def _check_content(content: object) -> None:
    # (the protocol check last: it costs tens of microseconds)
    if isinstance(content, AsyncIterable):
        return
    if isinstance(content, Iterable) and not isinstance(content, _NOT_A_STREAM):
        return
    if isinstance(content, FrameBatches):
        return
    raise TypeError(
        "EventStreamResponse content must be an iterable or async iterable of events"
        f" (a str, bytes or dict is one event: put it in a list), not {type(content).__name__}"
    )


def _check_status(status_code: object) -> int:
    if type(status_code) is not int:
        raise TypeError(f"status_code must be an int, not {status_code!r}")
    if not 200 <= status_code <= 599:  # (an interim 1xx status cannot start a response)
        raise ValueError(f"status_code must be a final HTTP status, 200-599, not {status_code!r}")
    return status_code


def _check_hook(on_disconnect: object) -> None:
    if on_disconnect is None:
        return
    if not callable(on_disconnect):
        raise TypeError(f"on_disconnect must be callable or None, not {on_disconnect!r}")
    if not _callable_without_arguments(on_disconnect):
        raise TypeError(f"on_disconnect is called with no arguments; {on_disconnect!r} needs some")


def _callable_without_arguments(func: Callable[..., object]) -> bool:
    # Plain functions and methods (a hook is often a closure made per request) are read
    # off their code object: inspect.signature costs tens of microseconds.
    bound = 0
    if isinstance(func, types.MethodType):
        func, bound = func.__func__, 1
    if isinstance(func, types.FunctionType):
        code = func.__code__
        positional = code.co_argcount - bound - len(func.__defaults__ or ())
        keywords = code.co_varnames[code.co_argcount : code.co_argcount + code.co_kwonlyargcount]
        return positional <= 0 and all(k in (func.__kwdefaults__ or {}) for k in keywords)
    if isinstance(func, types.BuiltinFunctionType) and isinstance(func.__self__, types.ModuleType):
        return _builtin_without_arguments(func)  # long-lived (print, ...): parsed once each
    return _signature_without_arguments(func)


@functools.lru_cache(maxsize=64)
def _builtin_without_arguments(func: Callable[..., object]) -> bool:
    return _signature_without_arguments(func)


def _signature_without_arguments(func: Callable[..., object]) -> bool:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # nothing to check
        return True
    try:
        signature.bind()
    except TypeError:
        return False
    return True


class EventStreamResponse:
    """Stream ``content`` to one client as ``text/event-stream``.

    ``content`` is an async or sync iterable of `ServerSentEvent`, ``dict`` (the event's
    fields), ``str`` (a data-only event) or ``bytes`` (frames already encoded). Sync
    iterables other than lists and tuples run in a worker thread, so a blocking generator
    never stalls the event loop; it is closed there too, once the ``next()`` in flight
    returns (waiting up to `SYNC_CLOSE_TIMEOUT` seconds; a ``next()`` blocked longer
    closes the generator itself when it returns).

    - ``heartbeat_interval``: send ``: heartbeat`` after that many idle seconds (None: off).
    - ``send_timeout``: drop a client whose ``send`` has not returned for that long (it
      stopped reading); checked by a watchdog, within about 1.5 x the timeout.
    - ``retry``: an initial ``retry:`` frame (milliseconds) for the browser's reconnects.
    - ``on_disconnect``: called (sync or async) when the client leaves or is dropped,
      after the source is closed; shielded from cancellation, at most `HOOK_TIMEOUT` s.
    - ``max_buffer_bytes``: how far a plain iterable may be read ahead of a slow client;
      at most about twice this is held (one batch being sent, one filling).
    - ``max_duration``: end the body cleanly after that many seconds (e.g. when the
      client's token expires); EventSource then reconnects.
    - ``status_code``: 200-599; a status without content (204, 205, 304) sends the
      headers only (204 tells EventSource to stop reconnecting).
    - ``headers``: added to (or replacing) the defaults; names are RFC 9110 tokens, values
      latin-1 without control characters; framing headers are refused.
    - ``observer``: a `StreamObserver` told when the stream opens and closes (metrics:
      `sse_toolkit.metrics.Metrics.observer`); None (the default) costs nothing.

    Every option is checked here (ValueError or TypeError naming it); the items of
    ``content`` only as they are sent.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        content: Content,
        *,
        status_code: int = 200,
        headers: Headers | None = None,
        heartbeat_interval: float | None = 15.0,
        send_timeout: float | None = None,
        retry: int | None = None,
        on_disconnect: DisconnectHook | None = None,
        max_buffer_bytes: int = 1 << 20,
        max_duration: float | None = None,
        observer: StreamObserver | None = None,
    ) -> None:
        # Every option is checked here, once: a mistake fails at start-up naming the
        # option, not at each request (or only once a client disconnects).
        _check_content(content)
        if type(max_buffer_bytes) is not int or max_buffer_bytes < 1:
            raise ValueError(f"max_buffer_bytes must be an int >= 1, not {max_buffer_bytes!r}")
        _check_hook(on_disconnect)
        self.content = content
        self.status_code = _check_status(status_code)
        self.raw_headers = _header_list(headers)
        self.heartbeat_interval = check_seconds("heartbeat_interval", heartbeat_interval)
        if self.heartbeat_interval is not None and not any(
            name == _HEARTBEAT_HEADER for name, _ in self.raw_headers
        ):
            # Announced, so that a client can tell a silent connection from a dead one.
            self.raw_headers.append(
                _encoded_field(_HEARTBEAT_HEADER.decode(), repr(self.heartbeat_interval))
            )
        self.send_timeout = check_seconds("send_timeout", send_timeout)
        self.retry_frame = encode(retry=retry) if retry is not None else None
        self.on_disconnect = on_disconnect
        self.max_buffer_bytes = max_buffer_bytes
        self.max_duration = check_seconds("max_duration", max_duration, zero=True)
        if observer is not None and not (
            callable(getattr(observer, "opened", None))
            and callable(getattr(observer, "closed", None))
        ):
            raise TypeError(f"observer must have opened() and closed() methods, not {observer!r}")
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise TypeError(f"EventStreamResponse serves HTTP, not {scope['type']!r}")
        headers_only = scope.get("method", "GET") == "HEAD" or self.status_code in _NO_CONTENT
        await _Stream(self, receive, send).run(headers_only)


class _NoWakeup(Wakeup):
    """Where a stream has no producer to hand over to (a channel's): waking is a no-op."""

    __slots__ = ()

    def __init__(self) -> None:  # (no loop: made at import)
        self.waiting = False
        self._parked = None
        self._loop = None

    async def wait(self) -> None:
        raise AssertionError("a channel's stream has no producer to wait for")


_NO_WAKEUP: Final = _NoWakeup()


class _Stream:
    """The state of one response being streamed."""

    # (one per open stream: slots keep it small)
    __slots__ = (
        "__weakref__",
        "buffer",
        "buffered_bytes",
        "bytes_sent",
        "cancel_scope",
        "close_reason",
        "completed",
        "data_ready",
        "deadline_timer",
        "disconnected",
        "done",
        "end_at",
        "ending",
        "error",
        "finishing",
        "head_only",
        "heartbeat_due",
        "last_activity",
        "last_frames",
        "opened_at",
        "receive",
        "response",
        "send",
        "send_started",
        "sending",
        "space_ready",
        "started",
        "watched",
        "watcher_stopped",
    )

    def __init__(self, response: EventStreamResponse, receive: Receive, send: Send) -> None:
        self.response = response
        self.receive = receive
        self.send = send
        self.cancel_scope: anyio.CancelScope | None = None
        self.end_at = math.inf  # max_duration's end
        self.deadline_timer: asyncio.TimerHandle | None = None  # (see _keep_deadlines)
        self.disconnected = False
        self.error: BaseException | None = None
        self.last_activity = time.monotonic()
        self.send_started: float | None = None
        self.watched = True  # a watchdog reads send_started / last_activity
        self.watcher_stopped = False  # (the stream stops its bare watcher: see _watch)
        self.started = False  # http.response.start was sent
        self.head_only = False
        self.sending = False  # a message is being sent (an end lets it finish)
        self.ending = False  # end soon, cleanly (a shutdown, max_duration)
        self.finishing = False  # the final body message is being sent
        self.completed = False  # ... and it was
        self.last_frames: bytes | None = None  # set by a shutdown: its retry hint
        # Plain counters for metrics (see StreamState): no library call on the way.
        self.bytes_sent = 0
        self.close_reason: str | None = None  # the first cause wins (see CLOSE_REASONS)
        self.opened_at = self.last_activity
        # The producer/sender hand-off (plain iterables only).
        self.buffer: list[bytes] = []
        self.buffered_bytes = 0
        self.done = False
        self.heartbeat_due = False
        # (made by `run` for a plain iterable: a channel's stream needs neither)
        self.data_ready: Wakeup = _NO_WAKEUP
        self.space_ready: Wakeup = _NO_WAKEUP

    async def run(self, head_only: bool) -> None:
        response = self.response
        content = response.content
        batches = isinstance(content, FrameBatches)
        iterator: object = content
        self.head_only = head_only
        # Known to the process while it runs, so that a shutdown can end it cleanly.
        self.last_frames = open_streams.add(self)
        self.ending = self.last_frames is not None  # the process is shutting down: end now
        if self.ending:
            self.close_reason = "shutdown"
        observer = response.observer
        if observer is not None:
            observer.opened(self)
        try:
            if not batches:
                iterator = _iterate(content)
                self.data_ready = Wakeup()
                self.space_ready = Wakeup()
            self.watched = (
                response.send_timeout is not None
                or response.max_duration is not None
                or (response.heartbeat_interval is not None and not batches)
            )
            if response.max_duration is not None:
                self.end_at = time.monotonic() + response.max_duration
            # One scope from the first message on: the watcher sees a disconnect, and the
            # watchdog a stuck send, even while ``http.response.start`` is being sent.
            if batches and running_asyncio_loop() is not None:
                # A channel's stream on asyncio: its one helper (the disconnect watcher)
                # is a bare task, not a task group's (see `start_helper`: 2.8 KB less per
                # open stream), and the deadlines are a loop timer (`_keep_deadlines`).
                # (Inline, like everything on the idle path: each coroutine frame is held
                # for as long as the stream is open.)
                with anyio.CancelScope() as scope:
                    self.cancel_scope = scope
                    if self.ending:  # (asked before the scope was there: see _end_soon)
                        scope.cancel()
                    watcher = start_helper(self._watch(False, False, alone=True))
                    if self.watched:
                        self._keep_deadlines()
                    try:
                        await self._respond(head_only, iterator, None)
                    finally:
                        timer, self.deadline_timer = self.deadline_timer, None
                        if timer is not None:
                            timer.cancel()
                        self.watcher_stopped = True
                        await stop_helper(watcher)
            else:
                async with anyio.create_task_group() as tg:
                    self.cancel_scope = tg.cancel_scope
                    if self.ending:  # (asked before the scope was there: see _end_soon)
                        tg.cancel_scope.cancel()
                    # One helper task: it waits for the disconnect and, between its waits,
                    # keeps the deadlines (a task per stream less to hold while idle).
                    tg.start_soon(self._watch, self.watched, not batches)
                    await self._respond(head_only, iterator, tg)
                    tg.cancel_scope.cancel()  # stop the helpers: the body is complete
            limit = response.send_timeout or _FINAL_SEND_TIMEOUT
            if self.error is not None:
                if self.buffer and not (self.disconnected or self.sending):
                    # What the source yielded before it failed is sent (an end cut the
                    # sending short), then its error propagates, the body left unfinished.
                    with anyio.move_on_after(limit):
                        await self._send_body(b"".join(self.buffer))
                raise self.error
            if not self.disconnected:
                await self._finish(limit)
        except anyio.get_cancelled_exc_class():
            # Cancelled from outside: a server's own graceful timeout, say. Once the body
            # is complete the response returns normally (raising would only make the
            # server log a traceback for a response that ended well).
            await self._finish_cancelled()
            if not self.completed:
                raise
        finally:
            open_streams.discard(self)
            if batches:
                content.close()  # type: ignore[union-attr]  # (a listener leaves at once)
            else:
                await aclose_quietly(iterator)
            if self.close_reason is None:
                self.close_reason = (
                    "error"
                    if self.error is not None
                    else "client_left"
                    if self.disconnected
                    else "source_ended"
                )
            if observer is not None:
                observer.closed(self)
            if self.disconnected and response.on_disconnect is not None:
                # Shielded, and bounded like closing the source: a hook must not hang us.
                with anyio.CancelScope(shield=True), anyio.move_on_after(HOOK_TIMEOUT):
                    await call_maybe_async(response.on_disconnect)

    def _keep_deadlines(self) -> None:
        """Act on the deadlines that passed, and set a loop timer for the next (asyncio;
        a timer handle costs a tenth of a cancel scope and timeout around a ``receive``)."""
        self.deadline_timer = None
        if self.disconnected:
            return
        wake_at = self._check_deadlines(None, self.response.send_timeout)
        if 0 <= wake_at < math.inf:
            # (a delay, not a time: uvloop's clock is not time.monotonic)
            delay = max(wake_at - time.monotonic(), 0.001)
            loop = asyncio.get_running_loop()
            self.deadline_timer = loop.call_later(delay, self._keep_deadlines)

    async def _finish_cancelled(self) -> None:
        """Cancelled from outside: end the body as cleanly as the server still allows
        (shielded, bounded), with a last retry hint."""
        if not self.started or self.disconnected or self.completed:
            return
        if self.close_reason is None:
            self.close_reason = "shutdown"  # (the server's own graceful timeout, say)
        if self.last_frames is None:
            self.last_frames = open_streams.last_frames()
        with anyio.CancelScope(shield=True):
            await self._finish(_CANCELLED_FINISH_TIMEOUT)

    async def _finish(self, limit: float) -> None:
        """The final body message, with what is still buffered and (at a shutdown) the
        last ``retry:`` hint; a client that does not take it within ``limit`` s is dropped."""
        with anyio.move_on_after(limit) as final:
            self.cancel_scope = final
            self.finishing = True
            # (max_duration or a shutdown may come before the start was sent: no body
            # then; if a start was cut short by a cancellation, nothing can follow it)
            if self.started or (
                not self.sending and await self._send_or_drop(self._start_message())
            ):
                self.started = True
                tail = b""
                if not self.head_only:
                    # After a send that was cut short, what is buffered would follow a gap
                    # the client cannot see: it reconnects from what it last had instead.
                    if not self.sending:
                        tail = b"".join(self.buffer)
                    tail += self.last_frames or b""
                    self.buffer.clear()
                message = {"type": "http.response.body", "body": tail}
                self.completed = await self._send_or_drop(message)
                if self.completed:
                    self.bytes_sent += len(tail)
        if final.cancelled_caught:
            # It stopped reading before the end: dropped, like any stall.
            self._drop(reason="send_timeout")

    # -- the registry's interface (`lifecycle.Endable`), called on the stream's loop ------

    def end(self, last_frames: bytes) -> None:
        """The process shuts down: send ``last_frames`` and end the body cleanly."""
        if self.last_frames is None:
            self.last_frames = last_frames
        if self.close_reason is None:
            self.close_reason = "shutdown"
        self._end_soon()

    def _end_soon(self) -> None:
        """End the body cleanly. A send in flight is let finish (what it carries is off
        the source): the sender checks ``ending`` before it takes anything more, and what
        is left in the buffer goes out with the final message."""
        self.ending = True
        if not (self.finishing or self.sending) and self.cancel_scope is not None:
            self.cancel_scope.cancel()  # only waits are interrupted: nothing is in flight

    def abort(self) -> None:
        """The shutdown's grace ran out: stop now, as if the client had gone."""
        self._drop(reason="shutdown")

    async def _respond(
        self, head_only: bool, iterator: object, tg: anyio.abc.TaskGroup | None
    ) -> None:
        """Everything before the final body message: start, retry, the events. The
        source's error is kept for later (what it yielded before goes out first);
        cancelled from outside, the body is ended at once."""
        try:
            if self.ending:
                return  # (the final message will carry the start)
            response = self.response
            self.sending = True
            if not await self._send_or_drop(self._start_message()):
                await anyio.lowlevel.checkpoint()  # let the cancellation from _drop land
                return
            self.sending = False
            self.started = True
            if head_only or self.ending:
                return
            if response.retry_frame is not None:
                await self._send_body(response.retry_frame)
            if isinstance(iterator, FrameBatches):
                await self._stream_batches(iterator)
            else:
                assert tg is not None  # (a plain iterable's stream always has a task group)
                tg.start_soon(self._produce, iterator)
                await self._drain()
        except Exception as exc:
            self.error = exc
        except anyio.get_cancelled_exc_class():
            scope = self.cancel_scope
            if scope is not None and not scope.cancel_called:  # (not ours: from outside)
                # At once, before the scope unwinds: a server that cancels may give the
                # task only a few more turns before it exits.
                await self._finish_cancelled()
            raise

    # -- sending ---------------------------------------------------------------------------

    def _start_message(self) -> Message:
        response = self.response
        return {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }

    async def _send_or_drop(self, message: Message) -> bool:
        """Send one message; False when the client is gone (the stream is being cancelled)."""
        watched = self.watched
        if watched:
            self.send_started = time.monotonic()
        try:
            await self.send(message)
        except Exception as exc:
            self._drop(exc)
            return False
        finally:
            if watched:
                self.last_activity = time.monotonic()
                self.send_started = None
        return True

    async def _send_body(self, chunk: bytes) -> None:
        message = {"type": "http.response.body", "body": chunk, "more_body": True}
        # (left set if the send is cancelled: whether the chunk went out is then unknown)
        self.sending = True
        if not self.watched:  # nobody reads the clock: skip it and the helper coroutine
            try:
                await self.send(message)
                sent = True
            except Exception as exc:
                self._drop(exc)
                sent = False
        else:
            sent = await self._send_or_drop(message)
        self.sending = False
        if sent:
            self.bytes_sent += len(chunk)
        else:
            await anyio.lowlevel.checkpoint()  # let the cancellation from _drop land

    def _drop(self, error: BaseException | None = None, reason: str = "client_left") -> None:
        """The client is gone (or a send or receive failed, which means the same here)."""
        if error is not None and not isinstance(error, _GONE_ERRORS):
            log.warning(
                "dropping the client: the ASGI server's send or receive failed", exc_info=error
            )
            reason = "error"
        if self.close_reason is None:
            self.close_reason = reason
        self.disconnected = True
        if self.cancel_scope is not None:
            self.cancel_scope.cancel()

    async def _stream_batches(self, source: FrameBatches) -> None:
        if self.response.heartbeat_interval is not None:
            source.use_heartbeat(self.response.heartbeat_interval)
        next_frames = source.next_frames
        send_body = self._send_body
        observer = self.response.observer
        latency = None if observer is None else observer.latency
        published_at = None if latency is None else getattr(source, "batch_published_at", None)
        if published_at is None or latency is None:
            while not self.ending:
                try:
                    chunk = await next_frames()
                except StopAsyncIteration:
                    return
                if self.ending:  # (it came as the frames did: they go with the final message)
                    self.buffer.append(chunk)
                    return
                await send_body(chunk)
            return
        # The same, observing how long a batch took from its (oldest) event's publish to
        # the end of its write, at most every ``latency.interval`` seconds: live events
        # only (a replay, published before the stream opened, is not a delivery latency).
        # A batch not observed costs one clock read. (One loop, not a helper coroutine:
        # every wake-up would pay for one more frame to resume.)
        bounds, counts, interval = latency.bounds, latency.counts, latency.interval
        opened_at = self.opened_at
        watched = self.watched  # (then _send_or_drop reads the clock after each send)
        monotonic = time.monotonic
        next_at = 0.0
        heartbeat = _HEARTBEAT_FRAME
        while not self.ending:
            try:
                chunk = await next_frames()
            except StopAsyncIteration:
                return
            if self.ending:
                self.buffer.append(chunk)
                return
            if chunk is heartbeat or (interval and monotonic() < next_at):
                await send_body(chunk)
                continue
            # (right after next_frames: nothing else took a batch meanwhile)
            published = published_at()
            await send_body(chunk)
            if published is not None and published >= opened_at and not self.disconnected:
                now = self.last_activity if watched else monotonic()
                seconds = now - published
                counts[bisect_left(bounds, seconds)] += 1
                latency.sum += seconds
                next_at = now + interval

    async def _drain(self) -> None:
        buffer = self.buffer
        while not self.ending:  # (then what is buffered goes with the final message)
            if buffer:
                chunk = buffer[0] if len(buffer) == 1 else b"".join(buffer)
                buffer.clear()
                self.buffered_bytes = 0
                self.space_ready.wake()
                await self._send_body(chunk)
            elif self.done:
                return
            elif self.heartbeat_due:
                self.heartbeat_due = False
                await self._send_body(_HEARTBEAT_FRAME)
            else:
                await self.data_ready.wait()

    # -- helper tasks ----------------------------------------------------------------------

    async def _produce(self, iterator: object) -> None:
        try:
            if hasattr(iterator, "__anext__"):
                async for item in iterator:  # type: ignore[attr-defined]
                    if self._push(item):
                        await self._wait_for_space()
            elif isinstance(iterator, _IN_MEMORY_ITERATORS):
                for item in iterator:  # type: ignore[attr-defined]
                    if self._push(item):
                        await self._wait_for_space()
            else:  # any other sync iterator may block: it is read in worker threads
                read = iterator.next  # type: ignore[attr-defined]
                while (item := await read()) is not _DONE:
                    if self._push(item):
                        await self._wait_for_space()
        except Exception as exc:
            # The source failed: the sender sends what it yielded before, then the error
            # propagates (and the body is left unfinished, so the client sees it broke).
            self.error = exc
        finally:
            self.done = True
            self.data_ready.wake()

    def _push(self, item: object) -> bool:
        """Queue an item's frame for the sender; True when the buffer is full: wait then."""
        # Runs once per event: the common item type skips frame_bytes' dispatch.
        frame = item.frame if isinstance(item, ServerSentEvent) else frame_bytes(item)
        self.buffer.append(frame)
        self.buffered_bytes += len(frame)
        self.data_ready.wake()
        return self.buffered_bytes >= self.response.max_buffer_bytes

    async def _wait_for_space(self) -> None:
        await self.space_ready.wait()

    async def _watch(self, deadlines: bool, heartbeats: bool, alone: bool = False) -> None:
        """Wait for ``http.disconnect``; with ``deadlines``, wake at the next one as well:
        heartbeat (``heartbeats``: plain iterables; a channel has its own clock), send
        timeout, or end of the stream (``max_duration``). ``alone``: a bare task (see
        `start_helper`), which nothing but its stream stops: cancelled otherwise (a
        ``receive`` raising a cancellation, say), it drops the stream, which no one would
        tell of a disconnect any more."""
        receive = self.receive
        response = self.response
        interval = response.heartbeat_interval if heartbeats else None
        timeout = response.send_timeout
        wake_at = math.inf
        try:
            while True:
                if deadlines:
                    wake_at = self._check_deadlines(interval, timeout)
                    if wake_at < 0:
                        return  # dropped: the client stopped reading
                message: Message | None = None
                if wake_at == math.inf:
                    message = await receive()
                else:
                    # (ASGI receive is a wait on the server's queue or event: cancelling
                    # it loses nothing, and the next call waits again)
                    with anyio.move_on_after(max(wake_at - time.monotonic(), 0.001)):
                        message = await receive()
                    if message is None:
                        continue  # a deadline: check them again
                if message["type"] == "http.disconnect":
                    break
                # A server's receive blocks once the request body is read; one that
                # returns at once forever must still not starve the stream.
                await anyio.lowlevel.checkpoint()
        except Exception as exc:  # a receive that fails cannot tell us anything more
            self._drop(exc)
            return
        except BaseException as exc:
            # KeyboardInterrupt and the like: the stream cannot go on (not a cancellation,
            # nor a coroutine closed unrun: GeneratorExit, maybe with no loop left to ask)
            if isinstance(exc, GeneratorExit):
                raise
            if not isinstance(exc, anyio.get_cancelled_exc_class()):
                self._drop(exc)
            elif alone and not self.watcher_stopped and not self.disconnected:
                log.warning("the stream's disconnect watcher was cancelled: dropping it")
                self._drop(reason="error")
            raise
        self._drop()

    def _check_deadlines(self, interval: float | None, timeout: float | None) -> float:
        """Act on the deadlines that passed; the next one (-1: the client was dropped)."""
        now = time.monotonic()
        if now >= self.end_at:
            # Time is up (an expiring token, say): end the body cleanly, not as a drop
            # (and go on watching: a send in flight may still stall).
            if self.close_reason is None:
                self.close_reason = "token_expired"
            self._end_soon()
            self.end_at = math.inf  # (ended once)
        wake_at = self.end_at
        sending_since = self.send_started
        if timeout is not None:
            if sending_since is None:
                wake_at = min(wake_at, now + timeout / 2)  # a send may start meanwhile
            elif now - sending_since >= timeout:
                self._drop(reason="send_timeout")  # the client stopped reading
                return -1.0
            else:
                wake_at = min(wake_at, sending_since + timeout)
        if interval is not None:
            due = self.last_activity + interval
            if now >= due:
                if sending_since is None:  # a send in flight is not idleness
                    self.heartbeat_due = True
                    self.data_ready.wake()
                due = now + interval
            wake_at = min(wake_at, due)
        return wake_at


def _iterate(content: Content) -> object:
    if isinstance(content, AsyncIterable):
        return content.__aiter__()
    if isinstance(content, Iterable):
        iterator = iter(content)
        if isinstance(iterator, _IN_MEMORY_ITERATORS):
            return iterator
        return _ThreadedIterator(iterator)
    raise TypeError(
        f"EventStreamResponse content must be an iterable or async iterable, "
        f"not {type(content).__name__}"
    )


_IN_MEMORY_ITERATORS: Final[tuple[type, ...]] = (type(iter([])), type(iter(())))


class _ThreadedIterator:
    """A sync iterator that may block, read (and closed) in worker threads.

    A generator cannot be closed while a thread runs its ``next()`` ("generator already
    executing"), and no thread can be interrupted. So the thread that runs ``next()`` holds
    a lock, and closing takes the lock in a worker thread: it waits for the ``next()`` in
    flight (a cancelled read is abandoned, not waited for), up to `SYNC_CLOSE_TIMEOUT`.
    Past that the response goes on, and the thread still in ``next()`` closes the iterator
    itself as soon as ``next()`` returns. A ``next()`` that never returns keeps its worker
    thread, and the iterator stays open, for as long as it blocks (a non-daemon worker
    thread can then also hold up the process's exit): give blocking calls a timeout.
    """

    __slots__ = ("_closed", "_closing", "_iterator", "_lock")

    def __init__(self, iterator: Iterator[Any]) -> None:
        self._iterator = iterator
        self._lock = threading.Lock()
        self._closing = False  # set once: whoever holds the lock next closes the iterator
        self._closed = False

    async def next(self) -> Any:
        """The next item, or ``_DONE``; a cancelled read goes on in its thread (see above)."""
        return await anyio.to_thread.run_sync(self._next_locked, abandon_on_cancel=True)

    async def aclose(self) -> None:
        self._closing = True
        await anyio.to_thread.run_sync(self._close_when_idle, abandon_on_cancel=True)

    def _next_locked(self) -> Any:
        with self._lock:
            if self._closing:
                self._close()
                return _DONE
            try:
                return next(self._iterator, _DONE)
            finally:
                if self._closing:  # closed meanwhile: this read was abandoned
                    try:
                        self._close()
                    except Exception:
                        log.exception("closing the sync iterator %r failed", self._iterator)

    def _close_when_idle(self) -> None:
        if self._lock.acquire(timeout=SYNC_CLOSE_TIMEOUT):
            try:
                self._close()
            finally:
                self._lock.release()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            close = getattr(self._iterator, "close", None)
            if close is not None:
                close()
