"""`sse_toolkit.shutdown`: every open stream of the process ends cleanly, in-process.

Each kind of stream (a managed channel, a standalone channel, a merged stream, an async
generator, a blocking sync generator) gets a last ``retry:`` hint and a clean end of body;
a stream that starts during a shutdown ends at once; a client that stopped reading is cut
when the grace runs out; streams on other event loops (threads, asyncio and trio) end too;
a stream its server cancels ends as cleanly as it can and raises nothing.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sse_toolkit
from sse_toolkit import ChannelManager, EventStreamResponse, SSEChannel, lifecycle
from sse_toolkit.merge import MergedListener

from .asgi import WAIT, Client
from .sse_parser import parse

pytestmark = pytest.mark.anyio

RETRY = re.compile(rb"retry: (\d+)\n\n$")


@pytest.fixture(autouse=True)
def _reopen() -> Iterator[None]:
    lifecycle.reopen()
    yield
    lifecycle.reopen()


async def forever() -> AsyncIterator[str]:
    yield "first"
    await anyio.sleep_forever()


def blocking(stop: threading.Event) -> Iterator[str | bytes]:
    yield "first"
    while not stop.wait(0.01):  # a source that blocks its worker thread a while each time
        yield b": tick\n\n"


async def serve(response: EventStreamResponse, client: Client) -> None:
    with anyio.fail_after(WAIT):
        await response(client.scope, client.receive, client.send)


async def wait_for(predicate: Any, timeout: float = WAIT) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


def ended_with_retry(client: Client, low_ms: int, high_ms: int) -> int:
    """The client's body ended cleanly and its last frame is a retry hint in range."""
    assert client.finished, client.messages
    match = RETRY.search(client.body)
    assert match is not None, client.body
    value = int(match.group(1))
    assert low_ms <= value <= high_ms, value
    return value


async def test_shutdown_ends_every_kind_of_stream_with_a_retry_hint() -> None:
    manager = ChannelManager()
    managed = await manager.get_or_create("managed")
    standalone = SSEChannel("standalone")
    other = SSEChannel("other")
    stop = threading.Event()
    sources: list[Any] = [
        managed.listen(),
        standalone.listen(heartbeat_interval=0.01),
        MergedListener([standalone, other]),
        forever(),
        blocking(stop),
        ["a", "b"] * 3,  # a list ends by itself; it still must not be cut
    ]
    clients = [Client() for _ in sources]
    try:
        async with anyio.create_task_group() as tg:
            for source, client in zip(sources, clients, strict=True):
                tg.start_soon(serve, EventStreamResponse(source), client)
            await managed.broadcast("m")
            await standalone.broadcast("s")
            await wait_for(lambda: all(c.messages for c in clients))
            await wait_for(lambda: lifecycle.open_stream_count() == 5)
            report = await sse_toolkit.shutdown(
                grace=WAIT, reconnect_after=1.0, reconnect_window=2.0
            )
        assert report == sse_toolkit.ShutdownReport(ended=5, cut=0)
        assert lifecycle.open_stream_count() == 0
        hints = {ended_with_retry(c, 1000, 3000) for c in clients[:5]}
        assert len(hints) > 1, "the hints are spread, not all the same"
        assert clients[5].finished
        assert [e.data for e in parse(clients[0].body).events] == ["m"]
        assert "s" in [e.data for e in parse(clients[1].body).events]
        assert standalone.subscriber_count == 0 and managed.subscriber_count == 0
    finally:
        stop.set()
        await manager.close()


async def test_a_stream_that_starts_during_a_shutdown_ends_at_once() -> None:
    channel = SSEChannel("late")
    async with anyio.create_task_group() as tg:
        tg.start_soon(sse_toolkit.shutdown)
        await wait_for(lambda: lifecycle.open_streams.shutting_down)
        client = Client()
        with anyio.fail_after(WAIT):
            await EventStreamResponse(channel.listen())(client.scope, client.receive, client.send)
    assert client.start["status"] == 200
    ended_with_retry(client, 500, 5500)
    lifecycle.reopen()
    client = Client()
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve, EventStreamResponse(channel.listen()), client)
        await wait_for(lambda: client.messages)
        assert lifecycle.open_stream_count() == 1, "reopened: streams run again"
        client.disconnect.set()


async def test_a_client_that_stopped_reading_is_cut_when_the_grace_runs_out() -> None:
    hooks: list[str] = []
    reader, staller = Client(), Client()
    channel = SSEChannel("stall")
    async with anyio.create_task_group() as tg:
        for client in (reader, staller):
            response = EventStreamResponse(
                channel.listen(), on_disconnect=lambda c=client: hooks.append(c)
            )
            tg.start_soon(serve, response, client)
        await wait_for(lambda: reader.messages and staller.messages)
        staller.stall = True
        await channel.broadcast("x")
        started = time.monotonic()
        report = await sse_toolkit.shutdown(grace=0.2)
    assert time.monotonic() - started < 2.0
    assert report == sse_toolkit.ShutdownReport(ended=1, cut=1)
    assert reader.finished and not staller.finished
    assert hooks == [staller]
    assert lifecycle.open_stream_count() == 0


async def test_a_shutdown_with_nothing_open_returns_at_once() -> None:
    with anyio.fail_after(1):
        assert await sse_toolkit.shutdown(grace=30) == sse_toolkit.ShutdownReport(0, 0)


@pytest.mark.parametrize(
    ("option", "value"),
    [("grace", -1), ("grace", float("inf")), ("reconnect_after", "1"), ("reconnect_window", True)],
)
async def test_shutdown_options_are_checked(option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=option):
        await sse_toolkit.shutdown(**{option: value})
    assert not lifecycle.open_streams.shutting_down


async def test_a_stream_the_server_cancels_ends_cleanly_and_raises_nothing() -> None:
    client = Client()
    with anyio.CancelScope() as outer:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve, EventStreamResponse(forever()), client)
            await wait_for(lambda: b"first" in client.body)
            outer.cancel()
    ended_with_retry(client, 500, 5500)
    assert lifecycle.open_stream_count() == 0


async def test_a_cancelled_stream_whose_last_send_stalls_still_raises() -> None:
    client = Client()
    with anyio.fail_after(WAIT), anyio.CancelScope() as outer:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve, EventStreamResponse(forever()), client)
            await wait_for(lambda: b"first" in client.body)
            client.stall = True
            outer.cancel()
    assert outer.cancelled_caught
    assert not client.finished


def test_streams_on_other_event_loops_end_too() -> None:
    """Two asyncio and two trio loops in threads; the shutdown runs on a fifth."""
    channel = SSEChannel("threads")
    clients: list[Client] = []
    done = threading.Barrier(5, timeout=WAIT)

    def serve(backend: str) -> None:
        async def main() -> None:
            client = Client()
            clients.append(client)
            await EventStreamResponse(channel.listen())(client.scope, client.receive, client.send)

        anyio.run(main, backend=backend)
        done.wait()

    threads = [
        threading.Thread(target=serve, args=(b,), daemon=True)
        for b in ("asyncio", "asyncio", "trio", "trio")
    ]
    for thread in threads:
        thread.start()

    async def stop() -> sse_toolkit.ShutdownReport:
        await wait_for(lambda: lifecycle.open_stream_count() == 4)
        return await sse_toolkit.shutdown(grace=WAIT)

    report = anyio.run(stop, backend="trio")
    done.wait()
    assert report == sse_toolkit.ShutdownReport(ended=4, cut=0)
    for client in clients:
        ended_with_retry(client, 500, 5500)


@settings(max_examples=25, deadline=None)
@given(
    after=st.floats(0, 60, allow_nan=False),
    window=st.floats(0, 60, allow_nan=False),
)
def test_every_hint_is_in_the_window(after: float, window: float) -> None:
    registry = lifecycle.StreamRegistry()
    anyio.run(lambda: registry.shutdown(0, reconnect_after=after, reconnect_window=window))
    frame = registry.last_frames()
    match = RETRY.fullmatch(frame)
    assert match is not None
    assert after * 1000 <= int(match.group(1)) <= (after + window) * 1000 + 1


class AwaitingClient(Client):
    """A server whose ``send`` awaits before it writes (hypercorn on trio; middleware)."""

    async def send(self, message: Any) -> None:
        await anyio.sleep(0.002)
        await super().send(message)


async def numbered() -> AsyncIterator[dict[str, Any]]:
    n = 0
    while True:
        yield {"data": n, "id": str(n)}
        n += 1
        await anyio.lowlevel.checkpoint()


@pytest.mark.parametrize("how", ["shutdown", "max_duration"])
async def test_an_end_during_awaiting_sends_loses_nothing_and_starts_once(how: str) -> None:
    """Whatever the generator produced reaches the client, in order, before a clean end;
    one ``http.response.start`` (an end that cut the start short used to send a second)."""
    client = AwaitingClient()
    produced: list[int] = []

    async def source() -> AsyncIterator[dict[str, Any]]:
        async for event in numbered():
            produced.append(event["data"])
            yield event

    max_duration = 0.05 if how == "max_duration" else None
    response = EventStreamResponse(source(), max_duration=max_duration, max_buffer_bytes=64)
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve, response, client)
        await wait_for(lambda: len(client.messages) >= 5)
        if how == "shutdown":
            await sse_toolkit.shutdown(grace=WAIT)
    starts = [m for m in client.messages if m["type"] == "http.response.start"]
    assert len(starts) == 1
    assert client.finished
    received = [int(e.data) for e in parse(client.body).events]
    assert received == produced, (len(received), len(produced))


async def test_a_shutdown_as_the_stream_starts_sends_one_start() -> None:
    client = AwaitingClient()
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve, EventStreamResponse(forever()), client)
        await anyio.lowlevel.checkpoint()  # the start is being sent (it awaits)
        await sse_toolkit.shutdown(grace=WAIT)
    assert [m["type"] for m in client.messages].count("http.response.start") == 1
    ended_with_retry(client, 500, 5500)


async def test_a_stream_that_starts_as_the_last_one_ends_is_waited_for_not_cut() -> None:
    """B registers in the very turn A leaves (from A's source closing): the shutdown,
    woken by the count reaching zero, must wait for B too, not cut it."""
    first, second = Client(), Client()
    async with anyio.create_task_group() as tg:

        async def first_source() -> AsyncIterator[str]:
            try:
                yield "a"
                await anyio.sleep_forever()
            finally:
                tg.start_soon(serve, EventStreamResponse(forever()), second)

        tg.start_soon(serve, EventStreamResponse(first_source()), first)
        await wait_for(lambda: b"data: a" in first.body)
        report = await sse_toolkit.shutdown(grace=WAIT)
        await wait_for(lambda: second.finished)
    assert report == sse_toolkit.ShutdownReport(ended=2, cut=0)
    ended_with_retry(first, 500, 5500)
    ended_with_retry(second, 500, 5500)
