"""Races in the core: concurrent creation of one channel, publishers in other threads and
other event loops, on asyncio and trio."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from sse_toolkit import LAGGED_EVENT, ChannelManager, ServerSentEvent, SSEChannel
from sse_toolkit.backends import Backend, BackendUnavailable
from sse_toolkit.merge import MergedListener

from .asgi import WAIT

pytestmark = pytest.mark.anyio


# -- concurrent get_or_create of one name (defect 2) ---------------------------------------


class SlowBackend(Backend):
    """attach() takes a while (a round trip to a shared store), then loads history or fails."""

    def __init__(self, *, fail: bool = False, history: int = 0) -> None:
        self.fail = fail
        self.history = history
        self.attaching = 0
        self.attached: list[SSEChannel] = []
        self.release = anyio.Event()

    async def publish(self, channel: SSEChannel, event: ServerSentEvent) -> ServerSentEvent:
        return channel.deliver(event)

    async def attach(self, channel: SSEChannel) -> None:
        self.attaching += 1
        await self.release.wait()
        if self.fail:
            raise BackendUnavailable("the store is down")
        for i in range(self.history):
            channel.deliver(ServerSentEvent(f"old {i}", id=f"h-{i}"))
        self.attached.append(channel)


async def wait_until(predicate: Callable[[], bool]) -> None:
    with anyio.fail_after(WAIT):
        while not predicate():
            await anyio.sleep(0.001)


async def _race_get_or_create(
    manager: ChannelManager, backend: SlowBackend, callers: int
) -> list[Any]:
    results: list[Any] = [None] * callers

    async def call(i: int) -> None:
        try:
            channel = await manager.get_or_create("room")
        except Exception as exc:
            results[i] = exc
        else:
            # What a subscriber sees the moment it gets the channel.
            results[i] = (channel, channel.last_id)

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            for i in range(callers):
                tg.start_soon(call, i)
            await wait_until(lambda: backend.attaching >= 1)
            for _ in range(10):
                await anyio.lowlevel.checkpoint()  # every caller is in get_or_create now
            backend.release.set()
    return results


async def test_concurrent_get_or_create_waits_for_one_creation_with_its_history() -> None:
    backend = SlowBackend(history=3)
    manager = ChannelManager(backend=backend)
    results = await _race_get_or_create(manager, backend, 20)
    assert backend.attaching == 1  # single flight
    channels = {id(channel) for channel, _ in results}
    assert len(channels) == 1
    # Nobody saw the channel before its history was loaded (it would send sse.reset).
    assert {last_id for _, last_id in results} == {"h-2"}
    assert await manager.get("room") is results[0][0]


async def test_concurrent_get_or_create_all_get_the_attach_error_and_no_orphan() -> None:
    backend = SlowBackend(fail=True)
    manager = ChannelManager(backend=backend)
    results = await _race_get_or_create(manager, backend, 20)
    assert backend.attaching == 1
    assert all(isinstance(result, BackendUnavailable) for result in results), results
    assert await manager.get("room") is None
    assert await manager.list_channels() == []
    backend.fail = False  # the store is back: the next call creates it
    channel = await manager.get_or_create("room")
    assert backend.attached == [channel]


async def test_a_cancelled_creator_does_not_strand_the_callers_waiting_for_it() -> None:
    backend = SlowBackend()
    manager = ChannelManager(backend=backend)
    got: list[SSEChannel] = []
    creator = anyio.CancelScope()

    async def create() -> None:
        with creator:
            await manager.get_or_create("room")

    async def wait_for_it() -> None:
        got.append(await manager.get_or_create("room"))

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(create)
            await wait_until(lambda: backend.attaching == 1)
            tg.start_soon(wait_for_it)
            for _ in range(5):
                await anyio.lowlevel.checkpoint()  # the second caller waits for the first
            creator.cancel()
            await wait_until(lambda: backend.attaching == 2)  # the second took over
            backend.release.set()
    assert creator.cancelled_caught
    assert len(got) == 1
    assert await manager.get("room") is got[0]


# -- publishers in other threads and other event loops (defect 5) --------------------------

PUBLISHERS = [
    "nowait-in-thread",
    "from_thread-in-thread",
    "second-loop-asyncio",
    "second-loop-trio",
]


def publish_elsewhere(kind: str, channel: SSEChannel, data: str) -> threading.Thread:
    """Publish ``data`` from a new thread, the way ``kind`` says; returns the thread."""

    def run() -> None:
        # Let the listener's loop park in its selector first, so that a publish that does
        # not wake it is seen not to (a listener woken before it parks passes anyway).
        time.sleep(0.05)
        if kind == "nowait-in-thread":
            channel.broadcast_nowait(data)
        elif kind == "from_thread-in-thread":
            channel.broadcast_from_thread(data)
        else:

            async def publish() -> None:
                await channel.broadcast(data)

            anyio.run(publish, backend=kind.rsplit("-", 1)[1])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


async def join(thread: threading.Thread) -> None:
    await anyio.to_thread.run_sync(thread.join, WAIT)
    assert not thread.is_alive()


@pytest.mark.parametrize("kind", PUBLISHERS)
async def test_a_publish_from_another_thread_or_loop_wakes_the_listener_at_once(
    kind: str,
) -> None:
    channel = SSEChannel("c")
    listener = channel.listen()  # no heartbeat: no timer of the channel's own
    received: list[float] = []
    done = anyio.Event()

    async def read() -> None:
        event = await listener.__anext__()
        assert event.data == "hello"
        received.append(time.monotonic())
        done.set()

    # The only timer in the listener's loop is this bound, and nothing else wakes the loop
    # (the thread is joined afterwards): a listener that is not woken by the publish
    # wakes (at best) when the bound fires.
    async with anyio.create_task_group() as tg:
        with anyio.move_on_after(WAIT):
            tg.start_soon(read)
            await wait_until(lambda: channel.subscriber_count == 1)
            for _ in range(5):
                await anyio.lowlevel.checkpoint()  # parked in its wait
            sent = time.monotonic()
            thread = publish_elsewhere(kind, channel, "hello")
            await done.wait()
        tg.cancel_scope.cancel()
    await join(thread)
    assert received, "the listener was never woken"
    assert received[0] - sent < WAIT / 2
    await listener.aclose()


@pytest.mark.parametrize("kind", PUBLISHERS)
async def test_a_publish_from_another_thread_wakes_a_merged_stream_at_once(kind: str) -> None:
    a, b = SSEChannel("a"), SSEChannel("b")
    merged = MergedListener([a, b])
    frames: list[bytes] = []

    done = anyio.Event()

    async def read() -> None:
        frames.append(await merged.next_frames())
        done.set()

    async with anyio.create_task_group() as tg:
        with anyio.move_on_after(WAIT):
            tg.start_soon(read)
            await wait_until(lambda: b.subscriber_count == 1)
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
            thread = publish_elsewhere(kind, b, "hello")
            await done.wait()
        tg.cancel_scope.cancel()
    await join(thread)
    assert frames and b"data: hello" in frames[0]
    await merged.aclose()


async def test_publishers_in_threads_never_tear_a_read() -> None:
    """Threads publish into a small ring while the loop reads it: every event arrives once,
    in order, or is counted in an sse.lagged notice (the ring lapped the reader)."""
    channel = SSEChannel("c", capacity=8)
    listener = channel.listen()
    threads, per_thread = 3, 3000
    seen: list[tuple[int, int]] = []
    missed = 0

    def publish(t: int) -> None:
        for i in range(per_thread):
            channel.broadcast_nowait({"data": {"t": t, "i": i}})

    workers = [threading.Thread(target=publish, args=(t,), daemon=True) for t in range(threads)]
    for worker in workers:
        worker.start()
    total = threads * per_thread
    with anyio.fail_after(WAIT * 4):
        while len(seen) + missed < total:
            for event in listener.take_ready() or [await listener.__anext__()]:
                if event.event == LAGGED_EVENT:
                    missed += event.data["missed"]
                else:
                    seen.append((event.data["t"], event.data["i"]))
    for worker in workers:
        await join(worker)
    assert len(seen) + missed == total
    assert len(set(seen)) == len(seen)  # nothing twice
    for t in range(threads):  # each publisher's events in its order
        mine = [i for tt, i in seen if tt == t]
        assert mine == sorted(mine)
    ids = [int(e.id.rsplit("-", 1)[1]) for e in channel.history()]  # type: ignore[union-attr]
    assert ids == list(range(total - 7, total + 1))
    await listener.aclose()


def test_listeners_on_several_event_loops_at_once_all_hear_every_event() -> None:
    """Two asyncio and two trio loops, each in its thread, listen to one channel (as with
    the process-wide sse_manager); a fifth thread publishes."""
    channel = SSEChannel("shared")
    events = 50
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []
    subscribed = threading.Barrier(5)

    async def listen(me: int) -> None:
        got: list[str] = []
        with anyio.fail_after(WAIT * 2):
            listener = channel.listen()
            await anyio.to_thread.run_sync(subscribed.wait)
            async for event in listener:
                got.append(event.data)
                if len(got) == events:
                    break
            await listener.aclose()
        results[me] = got

    def run(me: int, backend: str) -> None:
        try:
            anyio.run(listen, me, backend=backend)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(i, backend), daemon=True)
        for i, backend in enumerate(["asyncio", "asyncio", "trio", "trio"])
    ]
    for thread in threads:
        thread.start()
    subscribed.wait(WAIT)
    for i in range(events):
        channel.broadcast_nowait(str(i))
        if i % 10 == 0:
            time.sleep(0.001)  # let some listeners park between publishes
    for thread in threads:
        thread.join(WAIT * 3)
    assert not errors, errors
    assert results == {i: [str(n) for n in range(events)] for i in range(4)}
