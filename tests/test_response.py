"""EventStreamResponse driven in-process, on asyncio and trio."""

from __future__ import annotations

import inspect
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sse_toolkit import EventStreamResponse, ServerSentEvent, SSEChannel, encode

from .asgi import WAIT, Client
from .sse_parser import parse

pytestmark = pytest.mark.anyio


class Tracked:
    """An async generator wrapper that records whether it was closed."""

    def __init__(self, items: list[Any], *, then_wait: bool = False) -> None:
        self.items = items
        self.then_wait = then_wait
        self.closed = anyio.Event()
        self.pulled = 0

    async def gen(self) -> AsyncIterator[Any]:
        try:
            for item in self.items:
                self.pulled += 1
                yield item
            if self.then_wait:
                await anyio.sleep_forever()
        finally:
            self.closed.set()


async def run(response: EventStreamResponse, client: Client) -> None:
    with anyio.fail_after(WAIT):
        await response(client.scope, client.receive, client.send)


async def test_streams_every_kind_of_item_in_order() -> None:
    items: list[Any] = [
        ServerSentEvent("one", event="e", id="1"),
        {"data": {"n": 2}, "event": "json", "id": "2"},
        "three",
        encode("four", id="4"),
        bytearray(encode("five")),
    ]
    client = Client()
    await run(EventStreamResponse(Tracked(items).gen()), client)
    events = parse(client.body).events
    assert [e.data for e in events] == ["one", '{"n":2}', "three", "four", "five"]
    assert [e.event for e in events[:2]] == ["e", "json"]
    assert client.finished


async def test_start_comes_first_and_exactly_one_final_body() -> None:
    client = Client()
    await run(EventStreamResponse(Tracked(["a", "b", "c"]).gen()), client)
    assert client.messages[0]["type"] == "http.response.start"
    assert client.start["status"] == 200
    finals = [m for m in client.bodies if not m.get("more_body", False)]
    assert len(finals) == 1
    assert client.messages[-1] is finals[0]


async def test_headers_defaults_merge_and_no_hop_by_hop() -> None:
    client = Client()
    response = EventStreamResponse(
        [], status_code=201, headers={"X-Custom": "1", "Cache-Control": "no-store"}
    )
    await run(response, client)
    headers = client.headers
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] == "no-store"
    assert headers["x-accel-buffering"] == "no"
    assert headers["x-custom"] == "1"
    assert "connection" not in headers and "transfer-encoding" not in headers
    assert client.start["status"] == 201


@pytest.mark.parametrize("name", ["Connection", "Transfer-Encoding", "keep-alive", "Upgrade"])
def test_hop_by_hop_headers_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        EventStreamResponse([], headers={name: "x"})


def test_header_injection_is_refused() -> None:
    with pytest.raises(ValueError, match="CR, LF"):
        EventStreamResponse([], headers={"x-a": "1\r\nset-cookie: a=b"})


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"heartbeat_interval": 0}, "heartbeat_interval"),
        ({"send_timeout": -1}, "send_timeout"),
        ({"retry": -5}, "retry"),
        ({"retry": True}, "retry"),
    ],
)
def test_bad_options_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises((ValueError, TypeError), match=field):
        EventStreamResponse([], **kwargs)


async def test_head_sends_headers_only_and_never_iterates() -> None:
    source = Tracked(["a"])
    client = Client(method="HEAD")
    await run(EventStreamResponse(source.gen()), client)
    assert client.start["status"] == 200
    assert client.body == b""
    assert client.finished
    assert source.pulled == 0


async def test_initial_retry_frame() -> None:
    client = Client()
    await run(EventStreamResponse(["x"], retry=2500), client)
    assert client.bodies[0]["body"] == b"retry: 2500\n\n"
    assert parse(client.body).retries == [2500]


async def test_ready_frames_are_coalesced_into_one_message() -> None:
    client = Client()
    source = Tracked([f"event {i}" for i in range(200)])
    await run(EventStreamResponse(source.gen()), client)
    assert len(parse(client.body).events) == 200
    data_messages = [m for m in client.bodies if m.get("body")]
    assert len(data_messages) <= 3, len(data_messages)


async def test_disconnect_stops_promptly_and_closes_the_iterator() -> None:
    source = Tracked(["a"], then_wait=True)
    client = Client()
    hook_calls: list[str] = []
    response = EventStreamResponse(source.gen(), on_disconnect=lambda: hook_calls.append("gone"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(run, response, client)
        await client.wait_for(lambda: b"data: a" in client.body)
        client.disconnect.set()
    assert source.closed.is_set()
    assert not client.finished  # nobody to send the end to
    assert hook_calls == ["gone"]


async def test_async_disconnect_hook_is_awaited() -> None:
    called = anyio.Event()

    async def hook() -> None:
        await anyio.lowlevel.checkpoint()
        called.set()

    client = Client()
    client.broken_body = True
    await run(EventStreamResponse(Tracked(["a"]).gen(), on_disconnect=hook), client)
    assert called.is_set()


async def test_oserror_on_data_send_ends_the_stream_cleanly() -> None:
    source = Tracked(["a", "b", "c"], then_wait=True)
    client = Client()
    client.broken_body = True
    await run(EventStreamResponse(source.gen()), client)
    assert source.closed.is_set()
    assert [m["type"] for m in client.messages] == ["http.response.start"]


async def test_oserror_on_start_never_iterates() -> None:
    source = Tracked(["a"])
    client = Client()
    client.broken = True
    await run(EventStreamResponse(source.gen()), client)
    assert source.pulled == 0
    assert client.messages == []


async def test_generator_exception_propagates_unwrapped_and_closes() -> None:
    closed = anyio.Event()

    async def failing() -> AsyncIterator[str]:
        try:
            yield "a"
            raise RuntimeError("boom")
        finally:
            closed.set()

    client = Client()
    with pytest.raises(RuntimeError, match="boom"):
        await run(EventStreamResponse(failing()), client)
    assert closed.is_set()


async def test_bad_item_raises_type_error_naming_the_type() -> None:
    client = Client()
    with pytest.raises(TypeError, match="int"):
        await run(EventStreamResponse(Tracked(["a", 42]).gen()), client)


async def test_bad_event_field_in_dict_raises() -> None:
    client = Client()
    with pytest.raises(ValueError, match="event"):
        await run(EventStreamResponse([{"data": "x", "event": "a\nid: 9"}]), client)
    assert b"id: 9" not in client.body


def test_non_iterable_content_is_refused() -> None:
    with pytest.raises(TypeError, match="iterable"):
        EventStreamResponse(42)  # type: ignore[arg-type]


async def test_outside_cancellation_closes_the_iterator() -> None:
    source = Tracked(["a"], then_wait=True)
    client = Client()
    with anyio.move_on_after(WAIT) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, EventStreamResponse(source.gen()), client)
            await client.wait_for(lambda: b"data: a" in client.body)
            tg.cancel_scope.cancel()
    assert not scope.cancelled_caught
    assert source.closed.is_set()


async def test_heartbeat_only_when_idle() -> None:
    release = anyio.Event()

    async def quiet_then_done() -> AsyncIterator[str]:
        yield "first"
        await release.wait()
        yield "last"

    client = Client()
    response = EventStreamResponse(quiet_then_done(), heartbeat_interval=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run, response, client)
        await client.wait_for(lambda: client.body.count(b": heartbeat\n\n") >= 2)
        release.set()
    parsed = parse(client.body)
    assert [e.data for e in parsed.events] == ["first", "last"]
    assert parsed.comments.count("heartbeat") >= 2
    assert client.finished


async def test_no_heartbeat_while_events_flow() -> None:
    async def busy() -> AsyncIterator[str]:
        for i in range(20):
            yield str(i)
            await anyio.sleep(0.005)

    client = Client()
    await run(EventStreamResponse(busy(), heartbeat_interval=2.0), client)
    assert b"heartbeat" not in client.body
    assert len(parse(client.body).events) == 20


async def test_heartbeats_off() -> None:
    async def idle_gap() -> AsyncIterator[str]:
        yield "a"
        await anyio.sleep(0.3)  # an idle stretch of many watchdog ticks
        yield "b"

    client = Client()
    response = EventStreamResponse(idle_gap(), heartbeat_interval=None, send_timeout=0.02)
    await run(response, client)
    assert b"heartbeat" not in client.body
    assert [e.data for e in parse(client.body).events] == ["a", "b"]


async def test_send_timeout_drops_a_client_that_stopped_reading() -> None:
    source = Tracked(["a"] * 5, then_wait=True)
    client = Client()
    client.stall = True
    hook: list[bool] = []
    response = EventStreamResponse(
        source.gen(), send_timeout=0.1, on_disconnect=lambda: hook.append(True)
    )
    await run(response, client)  # returns: the stalled client was dropped
    assert source.closed.is_set()
    assert hook == [True]


async def test_stall_without_send_timeout_is_not_dropped_by_heartbeats() -> None:
    client = Client()
    client.stall = True
    source = Tracked(["a"], then_wait=True)
    response = EventStreamResponse(source.gen(), heartbeat_interval=0.02)
    with anyio.move_on_after(0.3) as scope:
        await response(client.scope, client.receive, client.send)
    assert scope.cancelled_caught  # still streaming: only a send_timeout drops clients
    assert source.closed.is_set()


async def test_sync_generator_runs_in_a_worker_thread() -> None:
    loop_thread = threading.get_ident()
    threads: list[int] = []
    gate = threading.Event()

    def blocking() -> Iterator[str]:
        threads.append(threading.get_ident())
        yield "a"
        # blocks its thread until the event loop proves it is still running
        assert gate.wait(WAIT)
        yield "b"

    client = Client()
    async with anyio.create_task_group() as tg:
        tg.start_soon(run, EventStreamResponse(blocking()), client)
        await client.wait_for(lambda: b"data: a" in client.body)
        gate.set()  # only reachable because the loop is not blocked
    assert threads and threads[0] != loop_thread
    assert [e.data for e in parse(client.body).events] == ["a", "b"]


async def test_sync_generator_is_closed_on_disconnect() -> None:
    closed = threading.Event()

    def gen() -> Iterator[str]:
        try:
            yield "a"
            yield "b"
        finally:
            closed.set()

    client = Client()
    client.broken_body = True
    await run(EventStreamResponse(gen()), client)
    assert closed.wait(WAIT)


async def test_list_content_streams_without_threads() -> None:
    client = Client()
    await run(EventStreamResponse([{"data": i} for i in range(5)]), client)
    assert [e.data for e in parse(client.body).events] == ["0", "1", "2", "3", "4"]


async def test_producer_is_bounded_by_the_buffer() -> None:
    """A slow client must not make the response read the whole source into memory."""
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"data: " + b"x" * 1000 + b"\n\n"

    client = Client()
    client.stall = True
    response = EventStreamResponse(endless(), max_buffer_bytes=10_000)
    with anyio.move_on_after(0.3):
        await response(client.scope, client.receive, client.send)
    # one batch stuck in send plus one full buffer: ~2 x max_buffer_bytes, then it waits
    assert 18 <= pulled <= 22, pulled


async def test_response_is_a_plain_asgi_callable_rejecting_websockets() -> None:
    client = Client()
    client.scope["type"] = "websocket"
    with pytest.raises(TypeError, match="websocket"):
        await run(EventStreamResponse([]), client)


async def test_max_duration_ends_the_body_cleanly() -> None:
    source = Tracked(["a"], then_wait=True)
    client = Client()
    hook: list[bool] = []
    response = EventStreamResponse(
        source.gen(), max_duration=0.05, on_disconnect=lambda: hook.append(True)
    )
    await run(response, client)
    assert client.finished  # a clean end of body, not a truncated stream
    assert source.closed.is_set()
    assert hook == []  # the client did not leave: the server ended it


class BlockedSyncSource:
    """A sync generator that yields once, then blocks its worker thread until released;
    its ``finally`` records that it ran (issue 8, defect 19)."""

    def __init__(self) -> None:
        self.blocked = threading.Event()  # the generator sits in its blocking call
        self.release = threading.Event()
        self.finally_ran = threading.Event()
        self.finally_thread: int | None = None

    def gen(self, *, sleep: float | None = None) -> Iterator[str]:
        try:
            yield "a"
            self.blocked.set()
            if sleep is not None:
                time.sleep(sleep)
            else:
                self.release.wait(WAIT)
            yield "b"
        finally:
            self.finally_thread = threading.get_ident()
            self.finally_ran.set()


async def wait_for_thread_event(event: threading.Event) -> None:
    """Wait on a threading.Event without blocking the loop (bounded)."""
    assert await anyio.to_thread.run_sync(event.wait, WAIT)


@pytest.mark.parametrize("blocked_in", ["event", "sleep"])
async def test_sync_generator_blocked_in_next_is_closed_on_disconnect(blocked_in: str) -> None:
    source = BlockedSyncSource()
    client = Client()
    hook: list[bool] = []
    response = EventStreamResponse(
        source.gen(sleep=0.2 if blocked_in == "sleep" else None),
        on_disconnect=lambda: hook.append(True),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(run, response, client)
        await client.wait_for(lambda: b"data: a" in client.body)
        await wait_for_thread_event(source.blocked)
        client.disconnect.set()
        if blocked_in == "event":
            # The generator cannot be closed while its thread is inside next(): it is closed
            # as soon as that next() returns. (The pause only lets the disconnect land while
            # the thread is blocked; the test holds without it, it just proves less.)
            await anyio.sleep(0.05)
            source.release.set()
    # The response waited (bounded) for next() to return, then closed the generator.
    assert source.finally_ran.wait(WAIT), "the sync generator's finally never ran"
    assert source.finally_thread != threading.get_ident()  # never on the event loop
    assert b"data: b" not in client.body
    assert hook == [True]


async def test_sync_generator_blocked_past_the_bound_is_closed_when_next_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A next() that outlasts the close bound: the response returns after the bound, and the
    worker thread closes the generator when its next() finally returns."""
    from sse_toolkit import response as response_module

    monkeypatch.setattr(response_module, "SYNC_CLOSE_TIMEOUT", 0.1)
    source = BlockedSyncSource()
    client = Client()
    async with anyio.create_task_group() as tg:
        tg.start_soon(run, EventStreamResponse(source.gen()), client)
        await client.wait_for(lambda: b"data: a" in client.body)
        await wait_for_thread_event(source.blocked)
        client.disconnect.set()
    assert not source.finally_ran.is_set()  # still blocked: the response did not wait forever
    source.release.set()
    assert source.finally_ran.wait(WAIT), "the worker thread did not close the generator"


async def test_sync_generator_closed_on_outside_cancellation_while_blocked() -> None:
    source = BlockedSyncSource()
    client = Client()
    async with anyio.create_task_group() as tg:
        tg.start_soon(run, EventStreamResponse(source.gen(sleep=0.2)), client)
        await client.wait_for(lambda: b"data: a" in client.body)
        await wait_for_thread_event(source.blocked)
        tg.cancel_scope.cancel()
    assert source.finally_ran.wait(WAIT)


@pytest.mark.parametrize("max_duration", [0, 0.001])
async def test_max_duration_up_during_a_slow_start_still_ends_the_body_cleanly(
    max_duration: float,
) -> None:
    client = Client()
    source = Tracked(["a"], then_wait=True)

    async def slow_start_send(message: Any) -> None:
        if message["type"] == "http.response.start":
            await anyio.sleep(0.02)  # the server takes its time with the headers
        await client.send(message)

    response = EventStreamResponse(source.gen(), max_duration=max_duration)
    with anyio.fail_after(WAIT):
        await response(client.scope, client.receive, slow_start_send)
    assert client.start["status"] == 200  # start first, then exactly one final body
    assert client.finished
    assert [m["type"] for m in client.messages].count("http.response.start") == 1


async def test_a_hanging_async_disconnect_hook_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from sse_toolkit import response as response_module

    monkeypatch.setattr(response_module, "HOOK_TIMEOUT", 0.05)
    entered = anyio.Event()

    async def hook() -> None:
        entered.set()
        await anyio.sleep_forever()

    client = Client()
    client.broken_body = True
    await run(EventStreamResponse(Tracked(["a"]).gen(), on_disconnect=hook), client)
    assert entered.is_set()


# -- options are checked when the response is built, not when a client comes ---------------


class Hooks:
    def takes_reason(self, reason: str) -> None: ...

    def plain(self) -> None: ...


OPTION_MISTAKES = [
    ({"on_disconnect": "oops"}, "on_disconnect"),
    ({"on_disconnect": len}, "on_disconnect"),  # needs an argument it will never get
    ({"on_disconnect": lambda reason: None}, "on_disconnect"),
    ({"on_disconnect": lambda *, reason: None}, "on_disconnect"),
    ({"on_disconnect": Hooks().takes_reason}, "on_disconnect"),
    ({"on_disconnect": [].append}, "on_disconnect"),
    ({"status_code": "200"}, "status_code"),
    ({"status_code": 99}, "status_code"),
    ({"status_code": 101}, "status_code"),  # interim: no ASGI server can send it as final
    ({"status_code": 600}, "status_code"),
    ({"status_code": True}, "status_code"),
    ({"status_code": 200.0}, "status_code"),
    ({"heartbeat_interval": True}, "heartbeat_interval"),
    ({"heartbeat_interval": float("inf")}, "heartbeat_interval"),
    ({"heartbeat_interval": float("nan")}, "heartbeat_interval"),
    ({"heartbeat_interval": "1"}, "heartbeat_interval"),
    ({"send_timeout": float("inf")}, "send_timeout"),
    ({"send_timeout": False}, "send_timeout"),
    ({"send_timeout": 0}, "send_timeout"),
    ({"max_duration": float("nan")}, "max_duration"),
    ({"max_duration": float("inf")}, "max_duration"),
    ({"max_duration": True}, "max_duration"),
    ({"max_duration": "5"}, "max_duration"),
    ({"max_duration": -1}, "max_duration"),
    ({"max_buffer_bytes": 0.5}, "max_buffer_bytes"),
    ({"max_buffer_bytes": "x"}, "max_buffer_bytes"),
    ({"max_buffer_bytes": True}, "max_buffer_bytes"),
    ({"max_buffer_bytes": 0}, "max_buffer_bytes"),
    ({"retry": True}, "retry"),
    ({"retry": -1}, "retry"),
    ({"retry": 1.5}, "retry"),
    ({"headers": {"x a:": "1"}}, "headers"),
    ({"headers": {"x:a": "1"}}, "headers"),
    ({"headers": {"": "1"}}, "headers"),
    ({"headers": {"x-é": "1"}}, "headers"),
    ({"headers": {"x-a": "1\r\nset-cookie: pwn=1"}}, "headers"),
    ({"headers": {"x-a": "a\x01b"}}, "headers"),
    ({"headers": {"x-a": "a\x7fb"}}, "headers"),
    ({"headers": {"x-a": "a\x0bb"}}, "headers"),
    ({"headers": {"x-a": "€"}}, "headers"),  # not latin-1: cannot be sent
    ({"headers": {"x-a": 1}}, "headers"),
    ({"headers": {1: "x"}}, "headers"),
    ({"headers": {b"x-a": b"1"}}, "headers"),
    ({"headers": 5}, "headers"),
    ({"headers": "x-a: 1"}, "headers"),
    ({"headers": [("a", "b", "c")]}, "headers"),
    ({"headers": ["ab"]}, "headers"),
    ({"headers": {"Content-Length": "10"}}, "headers"),  # the body is a stream
]


@pytest.mark.parametrize(("kwargs", "field"), OPTION_MISTAKES)
def test_option_mistakes_are_refused_when_built_naming_the_option(
    kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises((ValueError, TypeError), match=field):
        EventStreamResponse([], **kwargs)


@pytest.mark.parametrize("content", [42, None, "text", b"frames", bytearray(b"x"), {"data": "x"}])
def test_content_that_is_not_a_stream_of_events_is_refused_when_built(content: Any) -> None:
    # (a str or bytes would stream one event per character; a dict one per key)
    with pytest.raises(TypeError, match="content"):
        EventStreamResponse(content)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"status_code": 500},
        {"status_code": 599, "heartbeat_interval": None},
        {"heartbeat_interval": 1, "send_timeout": 1e9, "max_duration": 0},
        {"retry": 0, "max_buffer_bytes": 1},
        {"on_disconnect": print, "headers": [("X-A", ""), ("x-b", "a\tb"), ("x-c", "é")]},
        {"on_disconnect": lambda *args, **kwargs: None},
        {"on_disconnect": lambda *, reason="left": None},
        {"on_disconnect": Hooks().plain},
        {"on_disconnect": [].clear},
    ],
)
def test_valid_options_still_build(kwargs: dict[str, Any]) -> None:
    EventStreamResponse(iter([]), **kwargs)


def test_header_values_lose_surrounding_whitespace() -> None:
    # RFC 9110 5.5: it is not part of the value (and h11 refuses to send it)
    response = EventStreamResponse([], headers={"x-a": " \t1 2\t "})
    assert (b"x-a", b"1 2") in response.raw_headers


@pytest.mark.parametrize("status", [204, 205, 304])
async def test_a_status_without_content_sends_headers_only_and_never_iterates(status: int) -> None:
    # 204 is how a server tells EventSource to stop reconnecting
    source = Tracked(["a"])
    client = Client()
    await run(EventStreamResponse(source.gen(), status_code=status, retry=1000), client)
    assert client.start["status"] == status
    assert client.body == b""
    assert client.finished
    assert source.pulled == 0


# -- property: any value for any option builds, or is refused naming that option ------------

OPTION_EXAMPLES = int(os.environ.get("SSE_TOOLKIT_OPTION_EXAMPLES", "60"))
OPTIONS = (
    "status_code",
    "headers",
    "heartbeat_interval",
    "send_timeout",
    "retry",
    "on_disconnect",
    "max_buffer_bytes",
    "max_duration",
)


async def async_hook() -> None:
    await anyio.lowlevel.checkpoint()


# Anything at all a caller might pass by mistake, for any option (no lists: a list of
# anything is valid content whose items are only checked as they are sent).
wild = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # nan and both infinities included
    st.text(max_size=4),
    st.binary(max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from([object(), print, len, dict, async_hook, lambda: None, lambda x: x]),
)
plausible = {
    "status_code": st.integers(-1, 1000),
    "headers": st.one_of(
        st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3),
        st.lists(st.tuples(st.text(max_size=6), st.text(max_size=6)), max_size=3),
        st.lists(wild, max_size=2),
    ),
    "heartbeat_interval": st.floats(min_value=-1, max_value=1e12),
    "send_timeout": st.floats(min_value=-1, max_value=1e12),
    "retry": st.integers(-2, 2**64),
    "on_disconnect": st.sampled_from([None, dict, async_hook, lambda *a: None]),
    "max_buffer_bytes": st.integers(-1, 1 << 40),
    "max_duration": st.floats(min_value=-1, max_value=1e12),
}
items = st.one_of(
    st.text(max_size=8),
    st.text(max_size=8).map(ServerSentEvent),
    st.text(max_size=8).map(lambda text: {"data": text, "event": "e"}),
)
sources = st.tuples(st.sampled_from(["list", "tuple", "sync", "async", "channel"]), st.lists(items))
contents = st.one_of(sources, sources, sources, wild)  # mostly a real source


def materialise(content: Any) -> Any:
    """A fresh source for the strategy's description (a generator serves once)."""
    if not (isinstance(content, tuple) and len(content) == 2 and isinstance(content[1], list)):
        return content
    kind, events = content
    if kind == "list":
        return list(events)
    if kind == "tuple":
        return tuple(events)
    if kind == "sync":
        return iter(list(events))

    if kind == "async":

        async def gen() -> AsyncIterator[Any]:
            for event in events:
                yield event

        return gen()
    channel = SSEChannel("c")
    listener = channel.listen()
    for item in events:
        channel.deliver(item if isinstance(item, ServerSentEvent) else ServerSentEvent(item))
    return listener


TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9a-z-]+")
FIELD_VALUE = re.compile(rb"([\x21-\x7e\x80-\xff]([ \t]*[\x21-\x7e\x80-\xff])*)?")


async def serve_in_process(response: EventStreamResponse, disconnect_after: float) -> list[Any]:
    """Serve one GET; the client leaves after ``disconnect_after`` s unless the body ended."""
    messages: list[Any] = []
    ended = anyio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        with anyio.move_on_after(disconnect_after):
            await ended.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            ended.set()

    with anyio.fail_after(WAIT):
        await response(Client().scope, receive, send)
    return messages


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=OPTION_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_option_value_builds_or_is_refused_naming_it(backend: str, data: st.DataObject) -> None:
    # Some options keep their default, the others get plausible or wild values.
    chosen = data.draw(st.sets(st.sampled_from(OPTIONS), max_size=3), label="options")
    kwargs = {
        name: data.draw(st.one_of(plausible[name], plausible[name], wild), label=name)
        for name in chosen
    }
    content = data.draw(contents, label="content")
    hook_calls = 0
    counted = False
    if callable(kwargs.get("on_disconnect")):
        hook = kwargs["on_disconnect"]
        try:
            needs_arguments = inspect.signature(hook).bind() is None
        except TypeError:
            needs_arguments = True
        except ValueError:
            needs_arguments = False
        if not needs_arguments:

            async def counting_hook() -> None:
                nonlocal hook_calls
                hook_calls += 1
                result = hook()
                if inspect.isawaitable(result):
                    await result

            kwargs["on_disconnect"] = counting_hook
            counted = True

    async def main() -> None:
        source = materialise(content)
        refused: Exception | None = None
        try:
            response = EventStreamResponse(source, **kwargs)
        except (ValueError, TypeError) as exc:
            refused = exc
        if refused is not None:
            named = [name for name in (*chosen, "content") if name in str(refused)]
            assert named, f"{refused!r} names none of {sorted(chosen)} nor content"
            event("refused")
            return
        event("built")
        messages = await serve_in_process(response, disconnect_after=0.02)
        start, *bodies = messages
        assert start["type"] == "http.response.start"
        assert start["status"] == kwargs.get("status_code", 200)
        for name, value in start["headers"]:
            assert TOKEN.fullmatch(name) and FIELD_VALUE.fullmatch(value), (name, value)
        assert all(m["type"] == "http.response.body" for m in bodies)
        assert all(isinstance(m["body"], bytes) for m in bodies)
        finished = bool(bodies) and not bodies[-1].get("more_body", False)
        assert hook_calls == (1 if counted and not finished else 0)

    anyio.run(main, backend=backend)
