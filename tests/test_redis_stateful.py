"""A model-based test of RedisBackend: two processes sharing one Redis, and faults.

Hypothesis drives two "processes" (managers, each on its own backend, each reaching
Redis through a `Partition` it can sever) on one channel: publish bursts on either,
listen (live, or reconnecting with the last id a listener saw, on either process), poll a
listener with a short timeout, close one, sever and restore a process's connections, have
a process's manager evict the channel (the app holding the evicted object and using it
later, as Lilya apps do, or dropping it). The
invariant, checked after every step and, completely, at every `settle`: each listener
receives each acknowledged event from where it started, exactly once and in order, or a
notice (``sse.lagged`` with the exact count, or null; ``sse.reset``) before the next one.

Redis is a server of the test's own, with small stream nodes, so that ``MAXLEN ~``
trims finely and bursts of publishes on one process while the other is cut off really
cost that one entries. Bounded for CI (asyncio only: the backend is);
``SSE_TOOLKIT_STATEFUL_EXAMPLES`` / ``SSE_TOOLKIT_STATEFUL_STEPS`` run it bigger.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
import hypothesis
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from sse_toolkit import BackendUnavailable, ChannelManager, ServerSentEvent, SSEChannel
from sse_toolkit.channel import RESET_EVENT

from .test_redis import WAIT, redis_server  # noqa: F401 - a fixture
from .test_redis_faults import Partition, account, partition, process

pytestmark = pytest.mark.redis

EXAMPLES = int(os.environ.get("SSE_TOOLKIT_STATEFUL_EXAMPLES", "20"))
STEPS = int(os.environ.get("SSE_TOOLKIT_STATEFUL_STEPS", "20"))
CAPACITY = 16  # the local ring: bursts of 25 make listeners lag here too
T = TypeVar("T")


@dataclass
class Watched:
    """A listener and what the model expects of it."""

    listener: Any
    process: int
    start: int  # index in the acknowledged events of the first it should get
    polled: bool  # read only by `poll` (a timed-out read, then resumed), else by a task
    expect_reset: bool = False  # its last id is unknown where it reconnected
    events: list[ServerSentEvent] = field(default_factory=list)
    ended: bool = False
    closed: bool = False

    def last_id(self) -> str | None:
        real = [e for e in self.events if not (e.event or "").startswith("sse.")]
        return real[-1].id if real else None


class World:
    """The processes, their partitions and the listeners' tasks, on an asyncio loop in a
    thread of its own; the state machine (in the test's thread) calls into it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"stateful-{uuid.uuid4().hex}:"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.partitions: list[Partition] = []
        self.managers: list[ChannelManager] = []
        # Per process: the channel object the app holds and uses (evicted, maybe), or None:
        # it asks the manager each time.
        self.held: list[SSEChannel | None] = [None, None]
        self.stop: asyncio.Event | None = None
        self.task_group: anyio.abc.TaskGroup | None = None
        started = threading.Event()
        self.main = asyncio.run_coroutine_threadsafe(self._main(started), self.loop)
        if not started.wait(WAIT):
            self.main.result(0)  # its error, if any
            raise AssertionError("the world did not start")

    async def _main(self, started: threading.Event) -> None:
        self.stop = asyncio.Event()
        async with AsyncExitStack() as stack:
            for _ in range(2):
                cut = await stack.enter_async_context(partition(self.url))
                self.partitions.append(cut)
                manager = await stack.enter_async_context(
                    process(
                        cut.url, self.prefix, capacity=CAPACITY, connect_timeout=5.0, retention=0
                    )
                )
                self.managers.append(manager)
            self.task_group = await stack.enter_async_context(anyio.create_task_group())
            started.set()
            await self.stop.wait()
            self.task_group.cancel_scope.cancel()

    def run(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        if self.main.done():
            self.main.result()  # the world ended: its error, rather than a confusing one
            raise AssertionError("the world ended")
        return asyncio.run_coroutine_threadsafe(function(*args), self.loop).result(WAIT * 3)

    def close(self) -> None:
        try:
            if self.stop is not None:
                self.loop.call_soon_threadsafe(self.stop.set)
            self.main.result(WAIT * 3)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(WAIT)
            self.loop.close()

    # -- run in the loop -----------------------------------------------------------------

    async def channel(self, index: int, *, for_subscriber: bool = False) -> SSEChannel:
        held = self.held[index]
        if held is not None:
            await anyio.lowlevel.checkpoint()
            return held
        return await self.managers[index].get_or_create("room", for_subscriber=for_subscriber)

    async def evict(self, index: int, hold: bool) -> None:
        """The manager evicts the channel if nobody listens (retention=0); the app holds
        the object from then on, or drops it."""
        channel = await self.channel(index)
        self.managers[index].sweep()
        self.held[index] = channel if hold else None
        del channel
        gc.collect()

    async def publish(self, index: int, count: int, first: int) -> list[ServerSentEvent]:
        channel = await self.channel(index)
        return [await channel.broadcast(f"event {first + n}") for n in range(count)]

    async def listen(
        self, index: int, last_event_id: str | None, acknowledged: list[ServerSentEvent]
    ) -> tuple[Any, int, bool]:
        """A new listener, the index of the first event it should get, and whether it
        should begin with sse.reset."""
        channel = await self.channel(index, for_subscriber=True)
        position = {event.id: i for i, event in enumerate(acknowledged)}
        here = position[channel.last_id] + 1 if channel.last_id is not None else 0
        if last_event_id is None:
            return channel.listen(), here, False
        if channel.history(last_event_id) is None:  # unknown here: a reset, then live
            return channel.listen(last_event_id=last_event_id), here, True
        return channel.listen(last_event_id=last_event_id), position[last_event_id] + 1, False

    async def collect(self, watched: Watched) -> None:
        async def run() -> None:
            async for event in watched.listener:
                if not event.comment:
                    watched.events.append(event)
            watched.ended = True

        assert self.task_group is not None
        self.task_group.start_soon(run)

    async def poll(self, watched: Watched, timeout: float) -> None:
        """Read what is ready, waiting at most ``timeout`` for more (a polling client)."""
        with anyio.move_on_after(timeout):
            while True:
                try:
                    event = await watched.listener.__anext__()
                except StopAsyncIteration:
                    watched.ended = True
                    return
                if not event.comment:
                    watched.events.append(event)

    async def close_listener(self, watched: Watched) -> None:
        await watched.listener.aclose()

    async def wait_for(self, watched: list[Watched], event: ServerSentEvent) -> None:
        # Twice WAIT: a reader cut off for long backs off up to 7.5 s between attempts.
        with anyio.fail_after(2 * WAIT):
            while True:
                for one in watched:
                    if one.polled and event not in one.events and not one.ended:
                        await self.poll(one, 0.001)
                missing = [w for w in watched if event not in w.events and not w.ended]
                if not missing:
                    return
                await anyio.sleep(0.005)


class TwoProcesses(RuleBasedStateMachine):
    url = ""

    def __init__(self) -> None:
        super().__init__()
        self.world = World(self.url)
        self.acknowledged: list[ServerSentEvent] = []
        self.watched: list[Watched] = []
        self.severed = [False, False]

    def teardown(self) -> None:
        try:
            self.settle()
        finally:
            self.world.close()

    def _open(self) -> list[Watched]:
        return [w for w in self.watched if not w.closed and not w.ended]

    @rule(index=st.integers(0, 1), count=st.integers(1, 25))
    def publish(self, index: int, count: int) -> None:
        if self.severed[index]:
            with pytest.raises(BackendUnavailable):
                self.world.run(self.world.publish, index, 1, len(self.acknowledged))
            return
        self.acknowledged += self.world.run(
            self.world.publish, index, count, len(self.acknowledged)
        )

    @rule(index=st.integers(0, 1), polled=st.booleans())
    def listen(self, index: int, polled: bool) -> None:
        self._listen(index, None, polled)

    @rule(pick=st.integers(0, 999), index=st.integers(0, 1), polled=st.booleans())
    def reconnect(self, pick: int, index: int, polled: bool) -> None:
        """A client leaves and comes back, to either process, with the last id it saw."""
        leaving = self._pick(pick)
        if leaving is not None:
            self._close(leaving)
            self._listen(index, leaving.last_id(), polled)

    def _pick(self, pick: int, *, polled: bool | None = None) -> Watched | None:
        # Chosen among those not closed (the model's own state, not timing), so that
        # hypothesis draws the same data when it replays an example.
        open_ = [w for w in self.watched if not w.closed and polled in (None, w.polled)]
        return open_[pick % len(open_)] if open_ else None

    def _listen(self, index: int, last_event_id: str | None, polled: bool) -> None:
        try:
            listener, start, reset = self.world.run(
                self.world.listen, index, last_event_id, list(self.acknowledged)
            )
        except BackendUnavailable:
            assert self.severed[index]  # the channel's first use here, while cut off
            return
        watched = Watched(listener, index, start, polled, expect_reset=reset)
        self.watched.append(watched)
        if not polled:
            self.world.run(self.world.collect, watched)

    @rule(pick=st.integers(0, 999), timeout=st.sampled_from([0.0, 0.002, 0.02]))
    def poll(self, pick: int, timeout: float) -> None:
        watched = self._pick(pick, polled=True)
        if watched is not None and not watched.ended:
            self.world.run(self.world.poll, watched, timeout)

    @rule(pick=st.integers(0, 999))
    def close(self, pick: int) -> None:
        watched = self._pick(pick)
        if watched is not None:
            self._close(watched)

    def _close(self, watched: Watched) -> None:
        if not watched.closed:
            watched.closed = True
            self.world.run(self.world.close_listener, watched)

    @rule(index=st.integers(0, 1))
    def sever(self, index: int) -> None:
        self.world.run(self.world.partitions[index].severed_now)
        self.severed[index] = True

    @rule(index=st.integers(0, 1), count=st.integers(1, 40), restore=st.booleans())
    def cut_off_while_the_other_publishes(self, index: int, count: int, restore: bool) -> None:
        """The partition that costs entries: Redis trims what the cut-off one never read."""
        self.sever(index)
        self.publish(1 - index, count)
        if restore:
            self.restore(index)

    @rule(index=st.integers(0, 1))
    def restore(self, index: int) -> None:
        self.world.loop.call_soon_threadsafe(self.world.partitions[index].restore)
        self.severed[index] = False

    @rule(index=st.integers(0, 1), hold=st.booleans())
    def evict(self, index: int, hold: bool) -> None:
        """Every client of that process leaves, and its manager evicts the channel."""
        for watched in self._open():
            if watched.process == index:
                self._close(watched)
        try:
            self.world.run(self.world.evict, index, hold)
        except BackendUnavailable:
            assert self.severed[index]  # the channel's first use here, while cut off

    @rule()
    def settle(self) -> None:
        """Restore both, publish a last event, and check every open listener got it all."""
        for index in (0, 1):
            if self.severed[index]:
                self.restore(index)
        marker = self.world.run(self.world.publish, 0, 1, len(self.acknowledged))
        self.acknowledged += marker
        open_ = self._open()
        self.world.run(self.world.wait_for, open_, marker[0])
        for watched in open_:
            result = account(watched.events, self.acknowledged, watched.start)
            assert result.next == len(self.acknowledged), (watched, result)
            hypothesis.event(f"a listener got notices: {result.notices > 0}")

    @initialize(polled=st.booleans())
    def a_listener_on_each(self, polled: bool) -> None:
        for index in (0, 1):
            self._listen(index, None, polled)

    @invariant()
    def every_listener_is_consistent(self) -> None:
        for watched in self.watched:
            events = list(watched.events)  # appended to in the loop's thread
            account(events, self.acknowledged, watched.start)
            if watched.expect_reset and events:
                assert events[0].event == RESET_EVENT, events[0]


def test_two_processes_sharing_redis_through_faults(redis_server: Any) -> None:  # noqa: F811
    server = redis_server("--stream-node-max-entries", "4")
    TwoProcesses.url = server.url
    run_state_machine_as_test(
        TwoProcesses,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
