"""EventStreamResponse under hostile peers: every send and receive may fail, stall or be
cancelled at any call, while the source is any kind and may fail itself.

The property test drives one response in-process with a fake server whose N-th send
fails (OSError, another exception, a stall, an outside cancellation) and whose receive may
deliver a disconnect or fail in the middle of the K-th send, and the caller may cancel
it after a random delay (at whatever await point it is). Oracle, whatever the plan:
the response returns (no hang) without an exception other than the source's own; the
source is closed (a generator's frame is gone, a listener unregistered); the client got a
prefix of the source's events in order, all of them when the body ended or the source
failed; the body ended, or `on_disconnect` ran, never both (cancelled from outside: the
body ends with a last retry hint if the peer still takes it); no task outlives the response.

Then real servers (uvicorn; hypercorn on asyncio and trio) with clients that vanish
mid-send (RST, FIN, stop reading) while the server writes as fast as it can.

SSE_TOOLKIT_RACE_EXAMPLES sets the number of examples (default 60 per loop).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_toolkit import EventStreamResponse, SSEChannel, lifecycle

from .asgi import WAIT
from .servers import SERVERS, serve
from .sse_parser import parse

EXAMPLES = int(os.environ.get("SSE_TOOLKIT_RACE_EXAMPLES", "60"))


class SourceError(Exception):
    """The source's own failure: the only exception allowed out of the response."""


class ServerBug(RuntimeError):
    """What a misbehaving server's send or receive raises (not a disconnect)."""


SEND_FAULTS = ("oserror", "broken", "bug", "stall", "cancel")
RECEIVE_FAULTS = ("disconnect", "oserror", "bug", "cancel")


@dataclass(frozen=True)
class Plan:
    source: str  # "async", "sync", "list", "channel"
    items: int
    raises_after: int | None  # the source raises after yielding this many items
    endless: bool  # after the items, keep yielding slowly forever
    send_fault: tuple[int, str] | None  # (the N-th send call, what happens)
    receive_fault: tuple[int, str] | None  # (during the K-th send, what receive does)
    retry: bool
    heartbeat: bool
    send_timeout: bool
    small_buffer: bool
    max_duration: bool = False  # the server ends the body after 20 ms
    cancel_after_ms: int | None = None  # the caller cancels the response after that long
    shutdown_after_ms: int | None = None  # the process shuts down (grace 50 ms) after that


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    source = draw(st.sampled_from(["async", "sync", "list", "channel"]))
    items = draw(st.integers(0, 12))
    raises_after = None
    endless = False
    if source in ("async", "sync"):
        raises_after = draw(st.none() | st.integers(0, items))
        endless = raises_after is None and draw(st.booleans())
    if source == "channel":
        endless = True  # a listener waits for the next event forever
    send_fault = draw(
        st.none() | st.tuples(st.integers(1, items + 4), st.sampled_from(SEND_FAULTS))
    )
    receive_fault = draw(
        st.none() | st.tuples(st.integers(1, items + 4), st.sampled_from(RECEIVE_FAULTS))
    )
    if endless and send_fault is None and receive_fault is None:
        # Something must end an endless stream: the client leaves at some point.
        receive_fault = (draw(st.integers(1, items + 4)), "disconnect")
    stall = send_fault is not None and send_fault[1] == "stall"
    return Plan(
        source=source,
        items=items,
        raises_after=raises_after,
        endless=endless,
        send_fault=send_fault,
        receive_fault=receive_fault,
        retry=draw(st.booleans()),
        # A listener sends nothing more after its items but heartbeats: the faults at
        # later sends must still come.
        heartbeat=source == "channel" or draw(st.booleans()),
        send_timeout=stall or draw(st.booleans()),
        small_buffer=draw(st.booleans()),
        max_duration=draw(st.booleans()),
        cancel_after_ms=draw(st.none() | st.integers(0, 30)),
        shutdown_after_ms=draw(st.none() | st.integers(0, 30)),
    )


class HostilePeer:
    """The server side of one request: ``send`` and ``receive`` that follow a `Plan`."""

    def __init__(self, plan: Plan, outer: anyio.CancelScope) -> None:
        self.plan = plan
        self.outer = outer
        self.messages: list[dict[str, Any]] = []
        self.sends = 0
        self.receives = 0
        self.send_fault_hit = False
        self.receive_fault_hit = False
        self.cancelled = False  # a fault cancelled the response from outside
        self.timer_fired = False  # the caller's timer did (at any await point)
        self.shut_down = False  # the process shut down (sse_toolkit.shutdown)
        self._receive_now = anyio.Event()
        self.gone = False  # the connection is dead: every later send fails the same way

    async def send(self, message: dict[str, Any]) -> None:
        self.sends += 1
        plan = self.plan
        if plan.receive_fault is not None and self.sends == plan.receive_fault[0]:
            # The disconnect (or failure) reaches receive() in the middle of this send.
            self._receive_now.set()
            await anyio.lowlevel.checkpoint()
        fault = plan.send_fault
        if self.gone or (fault is not None and self.sends >= fault[0]):
            kind = fault[1] if fault is not None else "oserror"
            self.send_fault_hit = self.gone = True
            if kind == "oserror":
                raise ConnectionResetError("connection reset by peer")
            if kind == "broken":
                raise anyio.BrokenResourceError
            if kind == "bug":
                raise ServerBug("send failed")
            if kind == "stall":
                await anyio.sleep_forever()
            self.cancelled = True
            self.outer.cancel()
            await anyio.lowlevel.checkpoint()
        self.messages.append(message)
        await anyio.lowlevel.checkpoint()

    async def receive(self) -> dict[str, Any]:
        self.receives += 1
        if self.receives == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._receive_now.wait()
        assert self.plan.receive_fault is not None
        kind = self.plan.receive_fault[1]
        self.receive_fault_hit = True
        if kind == "oserror":
            raise OSError("receive failed")
        if kind == "bug":
            raise ServerBug("receive failed")
        if kind == "cancel":
            self.cancelled = True
            self.outer.cancel()
            await anyio.sleep_forever()
        return {"type": "http.disconnect"}

    @property
    def finished(self) -> bool:
        bodies = [m for m in self.messages if m["type"] == "http.response.body"]
        return bool(bodies) and not bodies[-1].get("more_body", False)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


class Source:
    """The plan's source, with a record of whether it was closed."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.expected = [f"item {i}" for i in range(plan.items)]
        if plan.raises_after is not None:
            self.expected = self.expected[: plan.raises_after]
        self.finally_ran = threading.Event()
        self.started = False
        self.channel: SSEChannel | None = None
        self.generator: Any = None
        self.publisher_done = anyio.Event()

    def content(self) -> Any:
        kind = self.plan.source
        if kind == "list":
            return [{"data": item} for item in self.expected]
        if kind == "channel":
            return self._listener()
        self.generator = self._async() if kind == "async" else self._sync()
        return self.generator

    def _listener(self) -> Any:
        self.channel = SSEChannel("races", capacity=64)
        return self.channel.listen()

    async def publish(self) -> None:
        """For the channel source: publish every item once the listener exists."""
        assert self.channel is not None
        for item in self.expected:
            await self.channel.broadcast(item)

    async def _async(self) -> AsyncIterator[str | bytes]:
        self.started = True
        try:
            for item in self.expected:
                yield item
            if self.plan.raises_after is not None:
                raise SourceError("source failed")
            while self.plan.endless:
                await anyio.sleep(0.001)
                yield b": idle\n\n"  # a comment, not an event: it does not count
        finally:
            self.finally_ran.set()

    def _sync(self) -> Iterator[str | bytes]:
        self.started = True
        try:
            yield from self.expected
            if self.plan.raises_after is not None:
                raise SourceError("source failed")
            while self.plan.endless:
                time.sleep(0.001)  # a blocking source, in its worker thread
                yield b": idle\n\n"
        finally:
            self.finally_ran.set()

    def assert_closed(self) -> None:
        if self.channel is not None:
            assert self.channel.subscriber_count == 0, "the listener was not closed"
        elif self.generator is not None:
            frame = getattr(self.generator, "gi_frame", getattr(self.generator, "ag_frame", 0))
            assert frame is None, "the generator is still open"
            assert self.finally_ran.is_set() or not self.started


def _tasks() -> set[Any]:
    try:
        return set(asyncio.all_tasks())
    except RuntimeError:  # trio: structured by construction; nothing can leak
        return set()


async def drive(plan: Plan) -> None:
    hook_calls: list[str] = []
    outer = anyio.CancelScope()  # what cancels the response "from outside"
    peer = HostilePeer(plan, outer)
    source = Source(plan)
    response = EventStreamResponse(
        source.content(),
        retry=1000 if plan.retry else None,
        heartbeat_interval=0.01 if plan.heartbeat else None,
        send_timeout=0.05 if plan.send_timeout else None,
        max_buffer_bytes=16 if plan.small_buffer else 1 << 20,
        max_duration=0.02 if plan.max_duration else None,
        on_disconnect=lambda: hook_calls.append("gone"),
    )
    tasks_before = _tasks()
    raised: BaseException | None = None
    with anyio.fail_after(WAIT), outer:  # no hang
        async with anyio.create_task_group() as tg:
            if source.channel is not None:
                tg.start_soon(source.publish)
            if plan.cancel_after_ms is not None:
                tg.start_soon(cancel_later, peer, plan.cancel_after_ms / 1000)
            if plan.shutdown_after_ms is not None:
                tg.start_soon(shut_down_later, peer, plan.shutdown_after_ms / 1000)
            try:
                await response(http_scope(), peer.receive, peer.send)
            except SourceError as exc:
                raised = exc
            except Exception as exc:  # an ExceptionGroup, ServerBug: anything else
                pytest.fail(f"{plan}: {exc!r} escaped the response")
            tg.cancel_scope.cancel()
    lifecycle.reopen()  # (once the shutdown task is surely over: the next example's must run)
    assert lifecycle.open_stream_count() == 0, "the stream is still registered"
    assert not outer.cancelled_caught or peer.cancelled or peer.timer_fired, plan
    if peer.shut_down and peer.finished and not (peer.cancelled or peer.timer_fired):
        # Ended by the shutdown (a last retry hint), or it had ended by itself before.
        by_shutdown = re.search(rb"retry: \d+\n\n$", peer.body) is not None
        ended_itself = plan.max_duration or (not plan.endless and raised is None)
        assert by_shutdown or ended_itself, (plan, peer.body[-100:])
    if raised is not None:
        assert plan.raises_after is not None, plan
    source.assert_closed()
    assert _tasks() == tasks_before, "a task outlived the response"

    received = [e.data for e in parse(peer.body).events]
    assert received == source.expected[: len(received)], (plan, received)
    ended_early = peer.cancelled or peer.timer_fired or peer.shut_down
    if peer.finished and not plan.max_duration and not ended_early:
        assert received == source.expected, plan
        assert raised is None, plan
    if raised is not None and not (peer.send_fault_hit or peer.receive_fault_hit):
        # What the source yielded before it failed reached the client.
        assert received == source.expected, (plan, received)
        assert not peer.finished, plan  # and the body is left unfinished: it broke
    assert len(hook_calls) <= 1, plan
    if peer.finished:
        starts = [m for m in peer.messages if m["type"] == "http.response.start"]
        assert peer.messages[0] is starts[0] and len(starts) == 1, plan
    assert not (peer.finished and hook_calls), plan
    if peer.cancelled:
        # Cancelled from outside, the body ends as cleanly as the peer still allows: a last
        # retry hint and the final message, nothing after a send that was cut short.
        if peer.finished:
            assert re.search(rb"retry: \d+\n\n$", peer.body), plan
    elif raised is None and not peer.timer_fired:
        # The body ended, or the client was (seen) gone: exactly one of them.
        assert peer.finished != bool(hook_calls), (plan, peer.finished, hook_calls)
    if peer.send_fault_hit and not (peer.cancelled or peer.timer_fired) and raised is None:
        assert hook_calls == ["gone"], plan  # a failed or stalled send drops the client
    if hook_calls:
        assert peer.send_fault_hit or peer.receive_fault_hit, plan


async def shut_down_later(peer: HostilePeer, delay: float) -> None:
    await anyio.sleep(delay)
    peer.shut_down = True
    await lifecycle.shutdown(grace=0.05)


async def cancel_later(peer: HostilePeer, delay: float) -> None:
    await anyio.sleep(delay)
    peer.timer_fired = True
    peer.outer.cancel()


def http_scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(plan=plans())
def test_every_fault_at_every_call_ends_cleanly(backend: str, plan: Plan) -> None:
    anyio.run(drive, plan, backend=backend)


# -- the same, one example each, for the record of what each defect was -----------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize(
    "plan",
    [
        pytest.param(
            Plan("async", 3, None, True, None, (2, "bug"), False, False, False, False),
            id="receive-raises-non-oserror",
        ),
        pytest.param(
            Plan("async", 3, None, False, (3, "bug"), None, False, False, False, False),
            id="send-raises-non-oserror",
        ),
        pytest.param(
            Plan("sync", 3, None, False, (4, "broken"), None, False, False, False, False),
            id="send-raises-broken-resource",
        ),
        pytest.param(
            Plan("async", 3, 3, False, None, None, False, False, False, False),
            id="source-raises-after-some-frames",
        ),
        pytest.param(
            Plan("list", 0, None, False, (2, "stall"), None, False, False, True, False),
            id="final-send-stalls",
        ),
        pytest.param(
            Plan("channel", 2, None, True, None, (1, "disconnect"), False, True, False, False),
            id="disconnect-before-start",
        ),
    ],
)
def test_known_hostile_cases(backend: str, plan: Plan) -> None:
    anyio.run(drive, plan, backend=backend)


# -- real uvicorn, clients that vanish mid-send ------------------------------------------


@dataclass
class StreamRecord:
    closed: threading.Event
    gone: threading.Event  # on_disconnect ran
    closed_before_gone: bool = False


class FirehoseApp:
    """/stream?id=K streams 4 KB frames as fast as the socket takes them (a sync source:
    1 ms of blocking work per frame, in its worker thread); records how each stream ended."""

    def __init__(self, *, sync: bool) -> None:
        self.sync = sync
        self.streams: dict[str, StreamRecord] = {}
        self.errors: list[BaseException] = []

    async def _async_frames(self, record: StreamRecord) -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"data: " + b"x" * 4096 + b"\n\n"
                await anyio.lowlevel.checkpoint()
        finally:
            record.closed.set()

    def _sync_frames(self, record: StreamRecord) -> Iterator[bytes]:
        try:
            while True:
                time.sleep(0.001)  # blocking work: the client often leaves during next()
                yield b"data: " + b"x" * 4096 + b"\n\n"
        finally:
            record.closed.set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        key = scope["query_string"].decode().partition("=")[2]
        record = self.streams[key] = StreamRecord(threading.Event(), threading.Event())

        frames: Any = self._sync_frames(record) if self.sync else self._async_frames(record)

        def gone() -> None:
            # The response closes its source before it calls on_disconnect (a generator
            # that never started has no finally to run: its frame is gone all the same).
            frame = frames.gi_frame if self.sync else frames.ag_frame
            record.closed_before_gone = frame is None
            if frame is None:
                record.closed.set()
            record.gone.set()

        response = EventStreamResponse(
            frames, heartbeat_interval=0.05, send_timeout=0.3, on_disconnect=gone
        )
        try:
            await response(scope, receive, send)
        except BaseException as exc:
            self.errors.append(exc)
            raise


def _vanishing_client(app: FirehoseApp, port: int, key: str, how: str, read_bytes: int) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills fast: sends block
    sock.settimeout(WAIT)
    sock.connect(("127.0.0.1", port))
    try:
        request = f"GET /stream?id={key} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        sock.sendall(request.encode())
        got = 0
        while got < read_bytes:
            chunk = sock.recv(65536)
            assert chunk, "the server ended the stream"
            got += len(chunk)
        if how == "rst":  # SO_LINGER 0: close sends RST, unread data is dropped
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif how == "shutdown":
            sock.shutdown(socket.SHUT_RDWR)
        elif how == "stall":  # stop reading, stay connected: the send timeout drops it
            assert app.streams[key].gone.wait(WAIT), "a stalled client was not dropped"
    finally:
        sock.close()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


# uvicorn's word for a response that ended without its final body: what a dropped
# (stalled) client gets, so that uvicorn closes the connection.
_UNFINISHED = "ASGI callable returned without completing response."


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("sync", [False, True], ids=["async-source", "sync-source"])
def test_real_server_clients_vanishing_mid_send(sync: bool, server: str) -> None:
    app = FirehoseApp(sync=sync)
    records = _Records()
    watched = [
        logging.getLogger(name) for name in ("uvicorn.error", "hypercorn.error", "sse_toolkit")
    ]
    for logger in watched:
        logger.addHandler(records)
    hows = ["rst", "fin", "shutdown", "stall"]
    if server == "hypercorn-trio":
        # hypercorn's trio worker shields its socket writes from cancellation, so no
        # send_timeout can end a send to a client that stopped reading: the stream ends
        # only when the client (or TCP) gives up. Nothing the response can do about it.
        hows.remove("stall")
    clients = {str(i): (hows[i % len(hows)], 1 + (i * 7919) % 200_000) for i in range(24)}
    failures: list[BaseException] = []

    def client(key: str, how: str, n: int) -> None:
        try:
            _vanishing_client(app, port, key, how, n)
        except BaseException as exc:
            failures.append(exc)

    try:
        with serve(app, server) as url:
            port = int(url.rsplit(":", 1)[1])
            threads = [
                threading.Thread(target=client, args=(key, how, n))
                for key, (how, n) in clients.items()
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(WAIT * 2)
            assert not any(thread.is_alive() for thread in threads)
            assert failures == []
            for key in clients:
                record = app.streams[key]
                assert record.gone.wait(WAIT), f"stream {key}: on_disconnect never ran"
                assert record.closed_before_gone, (
                    f"stream {key} ({clients[key][0]}): the source was not closed first"
                )
    finally:
        for logger in watched:
            logger.removeHandler(records)
    assert set(app.streams) == set(clients)
    assert app.errors == []
    assert [r.getMessage() for r in records.records if r.getMessage() != _UNFINISHED] == []


def test_behind_starlette_base_http_middleware_a_vanishing_client_is_a_quiet_drop() -> None:
    """BaseHTTPMiddleware relays the response through a task and a memory stream of its
    own: a client vanishing mid-send is still a drop, closed first, with no warning."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.requests import Request
    from starlette.routing import Route

    app = FirehoseApp(sync=False)

    async def passthrough(request: Request, call_next: Any) -> Any:
        return await call_next(request)

    async def stream(request: Request) -> Any:
        return _AsgiResponse(app)

    starlette = Starlette(
        routes=[Route("/stream", stream)],
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=passthrough)],
    )
    records = _Records()
    logger = logging.getLogger("sse_toolkit")
    logger.addHandler(records)
    clients = {str(i): (("rst", "fin")[i % 2], 1 + i * 5000) for i in range(6)}
    try:
        with serve(starlette, "uvicorn") as url:
            port = int(url.rsplit(":", 1)[1])
            for key, (how, n) in clients.items():
                _vanishing_client(app, port, key, how, n)
            for key in clients:
                record = app.streams[key]
                assert record.gone.wait(WAIT), f"stream {key}: on_disconnect never ran"
                assert record.closed_before_gone, f"stream {key}: the source was not closed"
    finally:
        logger.removeHandler(records)
    assert app.errors == []
    assert [r.getMessage() for r in records.records] == []


class _AsgiResponse:
    """What a Starlette endpoint returns: any ASGI callable will do."""

    def __init__(self, app: FirehoseApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)
