"""Heartbeats woken in slices (issue 13), on asyncio and trio.

A channel's heartbeat wakes its idle listeners one slice (`_WAKE_SLICE` of them) per loop
turn, so that a heartbeat over thousands of streams never runs them all in one turn (the
loop stall the issue measured); a publish still wakes every listener at once. Measured here
without a clock: a probe task that yields every turn counts the listener steps (returns of
`next_frames`) run between two of its turns, which is the work of one turn (two on trio,
which runs a batch of tasks in either order). Every wait is bounded.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import pytest
from anyio import wait_all_tasks_blocked

from sse_toolkit import HEARTBEAT, SSEChannel
from sse_toolkit.channel import _WAKE_SLICE, Listener, _HeartbeatClock
from sse_toolkit.merge import MergedListener

from .asgi import WAIT

pytestmark = pytest.mark.anyio

N = 3000  # listeners: about a dozen slices
INTERVAL = 0.2
HEARTBEAT_FRAME = HEARTBEAT.encode()


def per_turn_bound(backend: str) -> int:
    # asyncio runs the tasks one slice woke in the next turn, the probe among them; trio
    # runs a batch in either order, so two probe ticks may straddle two slices.
    return _WAKE_SLICE + 2 if backend == "asyncio" else 2 * _WAKE_SLICE + 2


async def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.001)


async def turns(count: int) -> None:
    for _ in range(count):
        await anyio.lowlevel.checkpoint()


class Crowd:
    """``n`` listeners of one channel, each read by its own task with ``next_frames``
    (what `EventStreamResponse` does), and a probe counting their steps per loop turn."""

    def __init__(self, channel: SSEChannel, n: int, interval: float | None = INTERVAL) -> None:
        self.channel = channel
        self.interval = interval
        self.listeners = [channel.listen(heartbeat_interval=interval) for _ in range(n)]
        self.index = {id(listener): i for i, listener in enumerate(self.listeners)}
        self.heartbeats = [0] * n
        self.events = [0] * n
        self.steps = 0  # next_frames returns, every listener
        self.most_per_turn = 0  # the most steps between two probe ticks
        self.scopes: list[anyio.CancelScope] = [anyio.CancelScope() for _ in range(n)]
        self.cancel_after_heartbeat: set[int] = set()

    async def read(self, i: int) -> None:
        listener = self.listeners[i]
        with self.scopes[i]:
            while True:
                frames = await listener.next_frames()
                self.steps += 1
                if frames == HEARTBEAT_FRAME:
                    self.heartbeats[i] += 1
                    if i in self.cancel_after_heartbeat:
                        self.scopes[i].cancel()
                else:
                    self.events[i] += frames.count(b"\n\n")

    async def probe(self) -> None:
        last = self.steps
        while True:
            await anyio.lowlevel.checkpoint()
            self.most_per_turn = max(self.most_per_turn, self.steps - last)
            last = self.steps

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        for i in range(len(self.listeners)):
            tg.start_soon(self.read, i)
        await turns(5)  # every reader parked in its wait (each gets there in one step)
        if self.interval is not None:
            # The first beat a full interval from now: starting thousands of tasks may
            # take a while on a busy machine.
            self.clock().last_beat = time.monotonic()
        tg.start_soon(self.probe)

    def clock(self) -> _HeartbeatClock:
        assert self.interval is not None
        return self.channel._clocks[self.interval]

    def leader(self) -> int:
        leader = self.clock().leader
        assert isinstance(leader, Listener)
        return self.index[id(leader)]

    def alive(self) -> list[int]:
        return [i for i, scope in enumerate(self.scopes) if not scope.cancel_called]

    async def close(self) -> None:
        for listener in self.listeners:
            await listener.aclose()


async def test_every_idle_listener_gets_one_heartbeat_per_beat_a_slice_per_turn(
    anyio_backend: str,
) -> None:
    ch = SSEChannel("c")
    crowd = Crowd(ch, N)
    async with anyio.create_task_group() as tg:
        await crowd.start(tg)
        await wait_until(lambda: min(crowd.heartbeats) >= 2)
        beats = crowd.clock().beat
        assert max(crowd.heartbeats) <= beats  # never two for one beat
        assert crowd.steps == sum(crowd.heartbeats)  # and nothing else woke them
        tg.cancel_scope.cancel()
    assert crowd.events == [0] * N
    # The work of one turn is one slice of listeners (N would be the stall of issue 13).
    assert crowd.most_per_turn <= per_turn_bound(anyio_backend) < N
    await crowd.close()


async def test_a_publish_still_wakes_every_listener_at_once(anyio_backend: str) -> None:
    ch = SSEChannel("c")
    crowd = Crowd(ch, N, interval=None)
    async with anyio.create_task_group() as tg:
        await crowd.start(tg)
        # waiting in slices of at most _WAKE_SLICE listeners each
        assert ch._wakeups is not None
        assert len(ch._wakeups.events) == math.ceil(N / _WAKE_SLICE)
        ch.broadcast_nowait("x")
        taken = 0
        with anyio.fail_after(WAIT):
            while min(crowd.events) < 1:
                await anyio.lowlevel.checkpoint()
                taken += 1
        assert taken <= 4  # not one turn per slice
        tg.cancel_scope.cancel()
    assert crowd.events == [1] * N
    await crowd.close()


async def test_a_publish_during_a_sliced_heartbeat_reaches_everyone_at_once(
    anyio_backend: str,
) -> None:
    ch = SSEChannel("c")
    interval = 0.3  # (the next beat is an interval after the publish)
    crowd = Crowd(ch, N, interval=interval)
    slices = math.ceil(N / _WAKE_SLICE)
    async with anyio.create_task_group() as tg:
        await crowd.start(tg)
        # As soon as a beat started waking the slices, with most of them left:
        with anyio.fail_after(WAIT):
            while not 0 < sum(crowd.heartbeats) <= 2 * _WAKE_SLICE:
                await anyio.lowlevel.checkpoint()
        assert ch._beating and ch._beating[-1].events  # slices left to wake
        ch.broadcast_nowait("x")
        taken = 0
        with anyio.fail_after(WAIT):
            while min(crowd.events) < 1:
                await anyio.lowlevel.checkpoint()
                taken += 1
        assert taken <= 4 < slices - 2  # the slices left were woken at once
        await wait_until(lambda: min(crowd.heartbeats) >= 1)
        heartbeats, beats = list(crowd.heartbeats), ch._clocks[interval].beat
        tg.cancel_scope.cancel()
    assert crowd.events == [1] * N  # once each
    assert max(heartbeats) <= beats  # and still one heartbeat per beat, event or not
    await crowd.close()


async def test_the_timing_listener_cancelled_during_the_slices(anyio_backend: str) -> None:
    ch = SSEChannel("c")
    crowd = Crowd(ch, N)
    async with anyio.create_task_group() as tg:
        await crowd.start(tg)
        leader = crowd.leader()
        beats = crowd.clock().beat
        # It sends its heartbeat first (its own turn), then is cancelled while the
        # other slices are still being woken.
        crowd.cancel_after_heartbeat.add(leader)
        await wait_until(lambda: crowd.scopes[leader].cancel_called)
        assert sum(crowd.heartbeats) < (beats + 1) * N  # (slices left)
        alive = crowd.alive()
        assert len(alive) == N - 1
        await wait_until(lambda: min(crowd.heartbeats[i] for i in alive) >= beats + 1)
        # another listener takes over: the next beat reaches everyone left
        await wait_until(lambda: min(crowd.heartbeats[i] for i in alive) >= beats + 2)
        assert crowd.leader() != leader
        assert max(crowd.heartbeats) <= crowd.clock().beat
        assert crowd.heartbeats[leader] == beats + 1
        tg.cancel_scope.cancel()
    assert crowd.most_per_turn <= per_turn_bound(anyio_backend)
    await crowd.close()


async def test_the_timing_listener_leaving_wakes_the_others_in_slices(
    anyio_backend: str,
) -> None:
    ch = SSEChannel("c")
    crowd = Crowd(ch, N, interval=INTERVAL)
    async with anyio.create_task_group() as tg:
        await crowd.start(tg)
        leader = crowd.leader()
        beats = crowd.clock().beat
        crowd.scopes[leader].cancel()  # while it waits, before the next beat
        await wait_until(lambda: crowd.clock().leader not in (None, crowd.listeners[leader]))
        alive = crowd.alive()
        await wait_until(lambda: min(crowd.heartbeats[i] for i in alive) >= beats + 1)
        assert max(crowd.heartbeats) <= crowd.clock().beat
        assert crowd.heartbeats[leader] == beats  # none since
        tg.cancel_scope.cancel()
    assert crowd.most_per_turn <= per_turn_bound(anyio_backend)
    await crowd.close()


async def test_a_merged_stream_beside_many_listeners(anyio_backend: str) -> None:
    ch = SSEChannel("c")
    crowd = Crowd(ch, 600)
    merged = MergedListener([ch], heartbeat_interval=INTERVAL)
    got: list[bytes] = []

    async def read_merged() -> None:
        while True:
            got.append(await merged.next_frames())

    async with anyio.create_task_group() as tg:
        await crowd.start(tg)
        tg.start_soon(read_merged)
        await wait_until(lambda: got.count(HEARTBEAT_FRAME) >= 2 and min(crowd.heartbeats) >= 2)
        await ch.broadcast("x")
        await wait_until(lambda: len(got) > 2 and b"data: x" in got[-1])
        await wait_until(lambda: min(crowd.events) == 1)
        tg.cancel_scope.cancel()
    assert max(crowd.events) == 1
    merged.close()
    await crowd.close()


@pytest.mark.parametrize("timer_on", ["first loop", "second loop"])
def test_listeners_on_two_event_loops_get_their_heartbeats(
    anyio_backend: str, timer_on: str
) -> None:
    """Listeners on two loops (threads): the first loop to wait holds the slices, the other
    has its own wake-up. Whichever loop times the heartbeats, both get them: with the timer
    on the second loop, it wakes the first loop's slices through that loop's scheduler."""
    ch = SSEChannel("c")
    interval = 0.5
    crowds: dict[str, Crowd] = {}
    results: dict[str, Any] = {}
    second_parked = threading.Event()
    stop = threading.Event()

    async def run_crowd(name: str, n: int, parked: threading.Event) -> None:
        crowd = crowds[name] = Crowd(ch, n, interval)
        async with anyio.create_task_group() as tg:
            await crowd.start(tg)
            parked.set()
            await wait_until(lambda: min(crowd.heartbeats) >= 2)
            results[name] = (list(crowd.heartbeats), ch._clocks[interval].beat)
            await anyio.to_thread.run_sync(stop.wait, WAIT)
            tg.cancel_scope.cancel()
        await crowd.close()

    def second_thread() -> None:
        try:
            anyio.run(run_crowd, "second", 20, second_parked, backend=anyio_backend)
        except BaseException as exc:  # reported by the main thread
            results["second error"] = exc

    async def first_loop() -> None:
        thread = threading.Thread(target=second_thread)
        # 700 listeners without heartbeats wait first: this loop holds three slices.
        plains = [ch.listen() for _ in range(700)]
        async with anyio.create_task_group() as tg:
            for listener in plains:
                tg.start_soon(listener.next_frames)
            await wait_until(lambda: ch._wakeups is not None and len(ch._wakeups.events) == 3)
            if timer_on == "first loop":
                first_parked = threading.Event()
                tg.start_soon(run_crowd, "first", 300, first_parked)
                await anyio.to_thread.run_sync(first_parked.wait, WAIT)
                thread.start()
                await anyio.to_thread.run_sync(second_parked.wait, WAIT)
                timers = crowds["first"].listeners
            else:
                thread.start()
                await anyio.to_thread.run_sync(second_parked.wait, WAIT)
                tg.start_soon(run_crowd, "first", 300, threading.Event())
                timers = crowds["second"].listeners
            clock = ch._clocks[interval]
            assert clock.leader in timers or clock.beat > 0  # (unless it beat already)
            await wait_until(lambda: "first" in results)
            await wait_until(lambda: "second" in results or "second error" in results)
            stop.set()
            tg.cancel_scope.cancel()
        for listener in plains:
            await listener.aclose()
        await anyio.to_thread.run_sync(thread.join, WAIT)

    anyio.run(first_loop, backend=anyio_backend)
    assert not thread_errors(results)
    for name in ("first", "second"):
        heartbeats, beats = results[name]
        assert min(heartbeats) >= 2
        assert max(heartbeats) <= beats


def thread_errors(results: dict[str, Any]) -> list[BaseException]:
    return [error for key, error in results.items() if key.endswith("error")]


async def test_listeners_that_leave_while_waiting_leave_nothing_in_the_slices(
    anyio_backend: str,
) -> None:
    """A slice holds one future per waiting listener on asyncio; a listener cancelled while
    it waits (its client left) takes its future back, so a channel nobody publishes to
    does not pile up one per departed listener (while one listener stays)."""
    channel = SSEChannel("c")
    stayer = channel.listen()
    got: list[bytes] = []
    on_asyncio = anyio_backend == "asyncio"

    def waiting() -> int:
        assert channel._wakeups is not None
        return sum(len(s._futures) for s in channel._wakeups.events)

    async def read() -> None:
        got.append(await stayer.next_frames())

    async with anyio.create_task_group() as outer:
        outer.start_soon(read)
        for _ in range(3):  # rounds of listeners arriving and leaving while they wait
            leavers = [channel.listen() for _ in range(2 * _WAKE_SLICE)]
            async with anyio.create_task_group() as tg:
                for listener in leavers:
                    tg.start_soon(listener.next_frames)
                with anyio.fail_after(WAIT):
                    await wait_all_tasks_blocked()
                assert waiting() == (1 + len(leavers) if on_asyncio else 0)
                tg.cancel_scope.cancel()
            assert channel.subscriber_count == 1
            assert waiting() == (1 if on_asyncio else 0)
            for listener in leavers:
                listener.close()
        await channel.broadcast("x")  # and the one still waiting is woken
        with anyio.fail_after(WAIT):
            while not got:
                await anyio.sleep(0.001)
    assert b"data: x" in got[0]
