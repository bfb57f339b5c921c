"""Read a Server-Sent Events stream from Python, and never lose its place.

::

    from sse_toolkit import client

    async with client.connect("https://example.org/sse/news") as events:
        async for event in events:
            print(event.event, event.id, event.json())

It does what a browser's ``EventSource`` does, plus what services need:

- On a dropped connection, a network error or an end of stream it reconnects after the
  current retry delay (``retry`` seconds, or what the server's ``retry:`` field says), with
  exponential backoff and jitter up to ``max_retry`` while connections keep failing (reset
  once one delivers an event), and sends ``Last-Event-ID`` every time: the server replays
  what was missed. ``events.last_event_id`` is where it resumes. No wait is ever longer
  than ``max_retry``, whatever a server's ``retry:`` or ``Retry-After`` says.
- It stops for good, raising `StreamStopped` with the status, on 204 (the spec's "stop"), on
  4xx other than 408 and 429, and on a response that is not ``text/event-stream``. On 429
  and 503 it waits what ``Retry-After`` says.
- ``read_timeout``: no byte (heartbeats count) for that long means the connection is dead
  (a laptop that left its network leaves the socket open and silent): reconnect. Off by
  default, unless the server announces its heartbeat interval (sse_toolkit's responses
  send ``x-sse-heartbeat``): then 2.5x that.
- Events are `sse_toolkit.parser.Event` objects (``data``, ``event``, ``id``, ``retry``,
  ``json()``), parsed by the spec's rules (`EventParser`). This toolkit's notices arrive as
  events of type `RESET_EVENT` (refetch your state) and `LAGGED_EVENT` (``missed`` events
  were skipped); ``events.resets`` counts the first.
- Leaving the ``async with`` (or cancelling the loop) closes the HTTP response at once; no
  task outlives it. Works on asyncio and trio. ``client=`` takes an ``httpx.AsyncClient``
  of yours (authentication, TLS, proxies, HTTP/2 are httpx's).

`connect_sync` is the same for scripts and threads, with ``httpx.Client``. Needs httpx:
``pip install "sse-toolkit[client]"``.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping
from contextlib import aclosing, asynccontextmanager, closing, contextmanager
from typing import Any, cast

import anyio
import httpx

from ._validate import check_delay
from .channel import RESET_EVENT
from .parser import Event, EventParser

__all__ = [
    "HEARTBEAT_HEADER",
    "AsyncEventStream",
    "Event",
    "EventStream",
    "StreamStopped",
    "connect",
    "connect_sync",
]

HEARTBEAT_HEADER = "x-sse-heartbeat"
"""The response header in which a server announces its heartbeat interval (seconds)."""
_SILENCE_FACTOR = 2.5  # heartbeats missed before the connection counts as dead
_CONNECT_TIMEOUT = 10.0
_RETRY_STATUSES = frozenset({408, 429})  # 4xx that mean "later", not "never"
_MIN_BACKOFF = 0.1  # seconds: connections that keep failing never reconnect faster


class StreamStopped(Exception):
    """The server said to stop for good (no reconnect): ``status`` and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{reason} (HTTP {status})")
        self.status = status
        self.reason = reason


class _Reconnect(Exception):
    """This connection is over; try again (after ``delay`` seconds if the server said)."""

    def __init__(self, delay: float | None = None) -> None:
        self.delay = delay


class _Policy:
    """What both clients share: when to reconnect, what each response means."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None,
        last_event_id: str | None,
        retry: float,
        max_retry: float,
        read_timeout: float | None,
    ) -> None:
        check_delay("retry", retry)
        check_delay("max_retry", max_retry)
        if read_timeout is not None:
            check_delay("read_timeout", read_timeout)
        self.url = url
        self.headers = dict(headers or {})
        self.parser = EventParser(last_event_id or "")
        self.default_retry = retry
        self.max_retry = max(max_retry, retry)
        self.read_timeout = read_timeout
        self.failures = 0  # connections in a row that delivered no event
        self.reconnects = 0
        self.resets = 0

    @property
    def retry(self) -> float:
        """The reconnect delay (seconds): the server's ``retry:`` field, or the default;
        never more than ``max_retry``."""
        server = self.parser.retry
        seconds = self.default_retry if server is None else min(server, 10**15) / 1000
        return min(seconds, self.max_retry)

    def request_headers(self) -> dict[str, str]:
        headers = {"accept": "text/event-stream", "cache-control": "no-cache", **self.headers}
        if self.parser.last_event_id:
            # (UTF-8, as EventSource sends it: an id need not be ASCII)
            headers["last-event-id"] = self.parser.last_event_id.encode()  # type: ignore[assignment]
        return headers

    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(_CONNECT_TIMEOUT, read=self.read_timeout)

    def accept(self, response: httpx.Response) -> float | None:
        """Check a response; the read timeout to use on it (None: none)."""
        status = response.status_code
        if status == 200:
            content_type = response.headers.get("content-type", "")
            if content_type.split(";")[0].strip().lower() != "text/event-stream":
                raise StreamStopped(status, f"not an event stream: {content_type!r}")
            self.parser.reset()
            if self.read_timeout is not None:
                return self.read_timeout
            return _heartbeat_timeout(response.headers.get(HEARTBEAT_HEADER))
        if status == 204:
            raise StreamStopped(status, "the server asked to stop (204 No Content)")
        if status in _RETRY_STATUSES or status >= 500:
            raise _Reconnect(_retry_after(response.headers.get("retry-after")))
        raise StreamStopped(status, f"the server refused the stream: {response.reason_phrase}")

    def delivered(self, event: Event) -> None:
        self.failures = 0
        if event.event == RESET_EVENT:
            self.resets += 1

    def next_delay(self, server_delay: float | None) -> float:
        """Seconds to wait before the next attempt (a failure has just happened)."""
        self.reconnects += 1
        # (max_retry bounds every wait: a server's retry: or Retry-After of days, or a
        # garbage one, must not park the client for good)
        failing = self.failures > 0
        self.failures += 1
        if server_delay is not None:
            return min(max(server_delay, _MIN_BACKOFF), self.max_retry)
        base = self.retry
        if not failing:
            return base  # (what the server asked, even 0, after a connection that worked)
        # Exponential backoff with jitter, never below the retry delay, never a tight loop.
        floor = min(max(base, _MIN_BACKOFF), self.max_retry)
        ceiling = min(self.max_retry, max(floor, base * 2 ** min(self.failures, 32)))
        return random.uniform(floor, ceiling)


class _Progress:
    """Where a stream stands, for both clients."""

    _policy: _Policy

    @property
    def last_event_id(self) -> str:
        """Where a reconnect resumes (sent as ``Last-Event-ID``)."""
        return self._policy.parser.last_event_id

    @property
    def retry(self) -> float:
        """The reconnect delay in seconds (the server's ``retry:``, or the default)."""
        return self._policy.retry

    @property
    def reconnects(self) -> int:
        return self._policy.reconnects

    @property
    def resets(self) -> int:
        """How many `RESET_EVENT` notices arrived: the server could not replay from
        ``last_event_id``, so state built from the stream should be fetched again."""
        return self._policy.resets


class AsyncEventStream(_Progress):
    """The events of one URL, over as many connections as it takes (see the module)."""

    def __init__(self, policy: _Policy, client: httpx.AsyncClient, method: str, body: Any) -> None:
        self._policy = policy
        self._client = client
        self._method = method
        self._json = body
        self._events: AsyncGenerator[Event, None] | None = None

    def __aiter__(self) -> AsyncIterator[Event]:
        # A loop left by a cancellation closed the reader: a new loop resumes where it was.
        if self._events is None:
            self._events = self._read()
        return self._events

    async def aclose(self) -> None:
        if self._events is not None:
            await self._events.aclose()

    async def _read(self) -> AsyncGenerator[Event, None]:
        policy = self._policy
        try:
            while True:
                server_delay: float | None = None
                try:
                    async with aclosing(self._connection()) as events:
                        async for event in events:
                            yield event
                except _Reconnect as retry:
                    server_delay = retry.delay
                except (
                    httpx.TransportError,
                    httpx.DecodingError,
                    anyio.EndOfStream,
                    anyio.BrokenResourceError,
                ):
                    pass  # a network error, a timeout, a broken or garbled stream: try again
                await anyio.sleep(policy.next_delay(server_delay))
        finally:
            self._events = None  # (ended by an exception: a new loop starts a new reader)

    async def _connection(self) -> AsyncGenerator[Event, None]:
        policy = self._policy
        request = self._client.build_request(
            self._method,
            policy.url,
            headers=policy.request_headers(),
            json=self._json,
            timeout=policy.timeout(),
        )
        response = await self._client.send(request, stream=True)
        try:
            _read_timeout(response, policy.accept(response))
            feed = policy.parser.feed
            # (httpx's chunks are a generator: closed now, not by the garbage collector)
            chunks = cast("AsyncGenerator[bytes, None]", response.aiter_bytes())
            async with aclosing(chunks):
                async for chunk in chunks:
                    for event in feed(chunk):
                        policy.delivered(event)
                        yield event
        finally:
            with anyio.CancelScope(shield=True):  # (closed at once, even when cancelled)
                await response.aclose()


class EventStream(_Progress):
    """`AsyncEventStream`'s twin for sync code (``httpx.Client``)."""

    def __init__(self, policy: _Policy, client: httpx.Client, method: str, body: Any) -> None:
        self._policy = policy
        self._client = client
        self._method = method
        self._json = body
        self._events: Generator[Event, None, None] | None = None

    def __iter__(self) -> Iterator[Event]:
        # A loop left by an exception closed the reader: a new loop resumes where it was.
        if self._events is None:
            self._events = self._read()
        return self._events

    def close(self) -> None:
        if self._events is not None:
            self._events.close()

    def _read(self) -> Generator[Event, None, None]:
        policy = self._policy
        try:
            while True:
                server_delay: float | None = None
                try:
                    yield from self._connection()
                except _Reconnect as retry:
                    server_delay = retry.delay
                except (httpx.TransportError, httpx.DecodingError):
                    pass
                time.sleep(policy.next_delay(server_delay))
        finally:
            self._events = None  # (ended by an exception: a new loop starts a new reader)

    def _connection(self) -> Generator[Event, None, None]:
        policy = self._policy
        request = self._client.build_request(
            self._method,
            policy.url,
            headers=policy.request_headers(),
            json=self._json,
            timeout=policy.timeout(),
        )
        response = self._client.send(request, stream=True)
        try:
            _read_timeout(response, policy.accept(response))
            feed = policy.parser.feed
            with closing(cast("Generator[bytes, None, None]", response.iter_bytes())) as chunks:
                for chunk in chunks:
                    for event in feed(chunk):
                        policy.delivered(event)
                        yield event
        finally:
            response.close()


@asynccontextmanager
async def connect(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    last_event_id: str | None = None,
    retry: float = 3.0,
    max_retry: float = 30.0,
    read_timeout: float | None = None,
    client: httpx.AsyncClient | None = None,
    method: str = "GET",
    json: Any = None,
) -> AsyncIterator[AsyncEventStream]:
    """The events of ``url``, reconnecting as needed, until the block is left (see above)."""
    policy = _Policy(
        url,
        headers=headers,
        last_event_id=last_event_id,
        retry=retry,
        max_retry=max_retry,
        read_timeout=read_timeout,
    )
    own = client is None
    http = httpx.AsyncClient(follow_redirects=True) if client is None else client
    stream = AsyncEventStream(policy, http, method, json)
    try:
        yield stream
    finally:
        with anyio.CancelScope(shield=True):
            await stream.aclose()
            if own:
                await http.aclose()


@contextmanager
def connect_sync(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    last_event_id: str | None = None,
    retry: float = 3.0,
    max_retry: float = 30.0,
    read_timeout: float | None = None,
    client: httpx.Client | None = None,
    method: str = "GET",
    json: Any = None,
) -> Iterator[EventStream]:
    """`connect` for sync code: ``with connect_sync(url) as events: for event in events:``."""
    policy = _Policy(
        url,
        headers=headers,
        last_event_id=last_event_id,
        retry=retry,
        max_retry=max_retry,
        read_timeout=read_timeout,
    )
    own = client is None
    http = httpx.Client(follow_redirects=True) if client is None else client
    stream = EventStream(policy, http, method, json)
    try:
        yield stream
    finally:
        stream.close()
        if own:
            http.close()


def _read_timeout(response: httpx.Response, seconds: float | None) -> None:
    """Apply a read timeout learnt from the response itself (its heartbeat announcement):
    httpcore reads the request's timeouts at every read."""
    if seconds is not None:
        timeouts = response.request.extensions.get("timeout")
        if isinstance(timeouts, dict):
            timeouts["read"] = seconds


def _heartbeat_timeout(header: str | None) -> float | None:
    if header is None:
        return None
    try:
        interval = float(header)
    except ValueError:
        return None
    if not 0 < interval < math.inf:
        return None
    return interval * _SILENCE_FACTOR


def _retry_after(header: str | None) -> float | None:
    """``Retry-After`` as seconds from now: a number of seconds or an HTTP date."""
    if header is None:
        return None
    header = header.strip()
    if header.isascii() and header.isdigit():
        return float(header)
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)
