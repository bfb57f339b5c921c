"""The servers `bench_connections.py` fills with idle streams, each selected by name.

    python -m sse_toolkit run benchmarks.connection_apps:<kind>

Kinds (each streams at ``GET /events``; ``bare``, ``listener``, ``sseapp`` and
``sse_starlette`` on any path but the routes below):

- ``bare``: answers the headers of an event stream and holds the connection until
  ``http.disconnect``: what the server itself costs per connection. ``/publish`` writes the
  event with the ``send`` callables it kept (no task, no queue): the floor of a fan-out;
- ``listener``: ``EventStreamResponse(channel.listen(), heartbeat_interval=None)`` on one
  `SSEChannel` (no heartbeat);
- ``sseapp``: `SSEApp` with its defaults (send_timeout 30 s, ``allow_publish=True``),
  streams at ``GET /bench``; the heartbeat is ``SSE_BENCH_HEARTBEAT`` seconds (default 15);
- ``sse_starlette``: sse-starlette's `EventSourceResponse` over an `asyncio.Queue` per
  client (``ping`` = the heartbeat); ``/publish`` puts the event into every queue;
- ``lilya``: Lilya's own SSE channels, as its documentation shows them (a Lilya app, a
  route returning ``EventStreamResponse`` over ``channel.listen(heartbeat_interval=...)``);
  the response's own ping (an extra timer per stream, every 15 s by default) is turned off
  (``ping_interval=0``) so that the channel's heartbeat is the only keep-alive, as for the
  others.

Every kind also answers, in the same process and on the same event loop:

- ``POST /publish``: publish one event of about 1 KB whose data starts with
  ``PUB <time.time_ns()> `` taken just before the publish call; answers that timestamp;
- ``GET /_probe``: JSON ``{"max_lateness_ms", "late_50ms", "ticks", "rss_bytes", "streams"}``:
  the longest lateness of a probe task that sleeps 10 ms in a loop (started at lifespan
  startup) since the last reset, how many ticks were more than 50 ms late, the process's
  RSS (``/proc/self/statm``) and the streams open now;
- ``POST /_probe/reset``: start a new probe window.

With ``SSE_BENCH_REDIS_URL`` set (``listener`` and ``sseapp`` only), channels go through
`RedisBackend` with the prefix ``SSE_BENCH_REDIS_PREFIX``: two processes share them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sse_toolkit import EventStreamResponse, ServerSentEvent, SSEApp, SSEChannel
from sse_toolkit.manager import ChannelManager
from sse_toolkit.types import ASGIApp, Receive, Scope, Send

HEARTBEAT = float(os.environ.get("SSE_BENCH_HEARTBEAT", "15"))
REDIS_URL = os.environ.get("SSE_BENCH_REDIS_URL") or None
REDIS_PREFIX = os.environ.get("SSE_BENCH_REDIS_PREFIX", "sse-bench:")
CHANNEL = "bench"
EVENT_SIZE = 1024
MARKER = b"PUB "  # the data of a published event starts with this, then the timestamp
PROBE_SLEEP = 0.010
_PAGE = os.sysconf("SC_PAGE_SIZE")
_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]


def event_data() -> tuple[int, str]:
    """The timestamp and data of one published event (about `EVENT_SIZE` bytes of data)."""
    stamp = time.time_ns()
    head = f"{MARKER.decode()}{stamp} "
    return stamp, head + "x" * (EVENT_SIZE - len(head))


def rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE


class Probe:
    """Event-loop lateness, measured by a task of the server's own loop."""

    def __init__(self) -> None:
        self.max_lateness = 0.0
        self.late_50ms = 0
        self.ticks = 0
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def reset(self) -> None:
        self.max_lateness = 0.0
        self.late_50ms = 0
        self.ticks = 0

    async def _run(self) -> None:
        clock = time.monotonic
        while True:
            before = clock()
            await asyncio.sleep(PROBE_SLEEP)
            lateness = clock() - before - PROBE_SLEEP
            self.ticks += 1
            if lateness > self.max_lateness:
                self.max_lateness = lateness
            if lateness > 0.050:
                self.late_50ms += 1


class BenchApp:
    """The probe and publish routes around one kind's stream handler."""

    def __init__(
        self,
        stream: ASGIApp,
        publish: Callable[[str], Awaitable[None]],
        *,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.stream = stream
        self.publish = publish
        self.on_shutdown = on_shutdown
        self.probe = Probe()
        self.streams = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/_probe" and method == "GET":
            await _answer(send, 200, self._probe_report())
        elif path == "/_probe/reset" and method == "POST":
            self.probe.reset()
            await _answer(send, 200, {"reset": True})
        elif path == "/publish" and method == "POST":
            await _drain(receive)
            stamp, data = event_data()
            await self.publish(data)
            await _answer(send, 200, {"stamp_ns": stamp})
        else:
            self.streams += 1
            try:
                await self.stream(scope, receive, send)
            finally:
                self.streams -= 1

    def _probe_report(self) -> dict[str, Any]:
        return {
            "max_lateness_ms": round(self.probe.max_lateness * 1000, 3),
            "late_50ms": self.probe.late_50ms,
            "ticks": self.probe.ticks,
            "rss_bytes": rss_bytes(),
            "streams": self.streams,
        }

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if os.environ.get("SSE_BENCH_GC") == "off":  # a diagnostic: GC pauses or not
                    import gc

                    gc.disable()
                self.probe.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.probe.stop()
                if self.on_shutdown is not None:
                    await self.on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _answer(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _drain(receive: Receive) -> None:
    message = await receive()
    while message.get("more_body"):
        message = await receive()


def _manager() -> ChannelManager:
    if REDIS_URL is None:
        return ChannelManager()
    from sse_toolkit.backends.redis import RedisBackend

    return ChannelManager(backend=RedisBackend(REDIS_URL, prefix=REDIS_PREFIX))


# -- bare: the server's own share ----------------------------------------------------------


def _bare() -> BenchApp:
    senders: set[Send] = set()

    async def stream(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _STREAM_HEADERS})
        senders.add(send)
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:
            senders.discard(send)

    async def publish(data: str) -> None:
        message = {
            "type": "http.response.body",
            "body": f"data: {data}\n\n".encode(),
            "more_body": True,
        }
        for send in list(senders):
            with contextlib.suppress(Exception):
                await send(message)

    return BenchApp(stream, publish)


# -- listener: one SSEChannel through EventStreamResponse, no heartbeat --------------------


def _listener() -> BenchApp:
    if REDIS_URL is None:
        channel = SSEChannel(CHANNEL)

        async def stream(scope: Scope, receive: Receive, send: Send) -> None:
            await EventStreamResponse(channel.listen(), heartbeat_interval=None)(
                scope, receive, send
            )

        async def publish(data: str) -> None:
            await channel.broadcast(ServerSentEvent(data))

        return BenchApp(stream, publish)

    manager = _manager()

    async def shared_stream(scope: Scope, receive: Receive, send: Send) -> None:
        channel = await manager.get_or_create(CHANNEL)
        await EventStreamResponse(channel.listen(), heartbeat_interval=None)(scope, receive, send)

    async def shared_publish(data: str) -> None:
        await (await manager.get_or_create(CHANNEL)).broadcast(ServerSentEvent(data))

    return BenchApp(shared_stream, shared_publish, on_shutdown=manager.close)


# -- sseapp: the sub-app with its defaults -------------------------------------------------


def _sseapp() -> BenchApp:
    manager = _manager()
    app = SSEApp(manager, allow_publish=True, heartbeat_interval=HEARTBEAT)

    async def stream(scope: Scope, receive: Receive, send: Send) -> None:
        await app(
            {**scope, "path": f"/{CHANNEL}", "raw_path": f"/{CHANNEL}".encode()}, receive, send
        )

    async def publish(data: str) -> None:
        await (await manager.get_or_create(CHANNEL)).broadcast(ServerSentEvent(data))

    return BenchApp(stream, publish, on_shutdown=manager.close)


# -- sse-starlette: a queue per client -----------------------------------------------------


def _sse_starlette() -> BenchApp:
    from sse_starlette.sse import EventSourceResponse

    queues: set[asyncio.Queue[str]] = set()

    async def stream(scope: Scope, receive: Receive, send: Send) -> None:
        queue: asyncio.Queue[str] = asyncio.Queue()
        queues.add(queue)

        async def events() -> AsyncIterator[dict[str, str]]:
            while True:
                yield {"data": await queue.get()}

        try:
            await EventSourceResponse(events(), ping=HEARTBEAT)(scope, receive, send)
        finally:
            queues.discard(queue)

    async def publish(data: str) -> None:
        for queue in list(queues):
            queue.put_nowait(data)

    return BenchApp(stream, publish)


# -- Lilya: its SSE channels, as its documentation shows -----------------------------------


def _lilya() -> BenchApp:
    from lilya.apps import Lilya
    from lilya.contrib.sse.channels import SSEChannel as LilyaChannel
    from lilya.responses import EventStreamResponse as LilyaResponse
    from lilya.routing import Path

    notifications = LilyaChannel(CHANNEL)

    async def events() -> LilyaResponse:
        async def stream() -> AsyncIterator[dict[str, Any]]:
            async for event in notifications.listen(heartbeat_interval=HEARTBEAT):
                yield event

        return LilyaResponse(stream(), ping_interval=0)

    lilya_app = Lilya(routes=[Path("/events", events)])

    async def stream(scope: Scope, receive: Receive, send: Send) -> None:
        await lilya_app(scope, receive, send)

    async def publish(data: str) -> None:
        await notifications.broadcast({"event": "message", "data": data})

    return BenchApp(stream, publish)


KINDS: dict[str, Callable[[], BenchApp]] = {
    "bare": _bare,
    "listener": _listener,
    "sseapp": _sseapp,
    "sse_starlette": _sse_starlette,
    "lilya": _lilya,
}


def __getattr__(name: str) -> BenchApp:
    """``benchmarks.connection_apps:<kind>``: only the kind served is built (and imported)."""
    if name not in KINDS:
        raise AttributeError(name)
    app = KINDS[name]()
    globals()[name] = app
    return app
