"""SSEChannel in-process, on asyncio and trio."""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from sse_toolkit import (
    HEARTBEAT,
    LAGGED_EVENT,
    RESET_EVENT,
    ChannelClosed,
    EventStreamResponse,
    ServerSentEvent,
    SSEChannel,
)
from sse_toolkit.merge import MergedListener, decode_positions

from .asgi import WAIT, Client
from .sse_parser import parse

pytestmark = pytest.mark.anyio


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Prove that nothing waits for the cycle collector: turn it off for the test."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def wait_until(predicate: Any, timeout: float = WAIT) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.001)


async def collect(listener: Any, n: int) -> list[ServerSentEvent]:
    events: list[ServerSentEvent] = []
    with anyio.fail_after(WAIT):
        async for event in listener:
            events.append(event)
            if len(events) == n:
                break
    return events


# -- publishing ----------------------------------------------------------------------------


async def test_broadcast_returns_the_stored_event_with_an_id() -> None:
    ch = SSEChannel("c")
    first = await ch.broadcast("hello")
    second = await ch.broadcast({"event": "e", "data": {"k": 1}})
    third = await ch.broadcast(ServerSentEvent("x", id="mine"))
    assert first.data == "hello" and first.id
    assert second.event == "e" and second.data == {"k": 1}
    assert third.id == "mine"
    assert len({first.id, second.id, third.id}) == 3
    assert first.encode() == ServerSentEvent("hello", id=first.id).encode()
    assert ch.last_id == "mine"
    assert ch.stats().published == 3


async def test_broadcast_rejects_bad_input_naming_the_field() -> None:
    ch = SSEChannel("c")
    with pytest.raises(ValueError, match="event"):
        await ch.broadcast({"data": "x", "event": "a\nevent: b"})
    with pytest.raises(TypeError, match="unknown event field"):
        await ch.broadcast({"data": "x", "evnt": "typo"})
    with pytest.raises(TypeError, match="int"):
        await ch.broadcast(42)  # type: ignore[arg-type]
    assert ch.stats().published == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"name": ""}, {"name": 5}, {"name": "c", "capacity": 0}, {"name": "c", "lag_policy": "x"}],
)
def test_constructor_validates(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs.keys() - {"name"}), "name")):
        SSEChannel(**kwargs)


async def test_auto_ids_are_monotonic() -> None:
    ch = SSEChannel("c")
    ids = [(await ch.broadcast(str(i))).id for i in range(20)]
    epochs = {i.split("-")[0] for i in ids if i}  # type: ignore[union-attr]
    assert len(epochs) == 1
    assert [int(i.split("-")[1]) for i in ids if i] == list(range(1, 21))  # type: ignore[union-attr]


# -- listening -----------------------------------------------------------------------------


async def test_every_listener_gets_every_event_in_order() -> None:
    ch = SSEChannel("c")
    listeners = [ch.listen() for _ in range(5)]
    assert ch.subscriber_count == 5
    for i in range(10):
        await ch.broadcast(str(i))
    for listener in listeners:
        events = await collect(listener, 10)
        assert [e.data for e in events] == [str(i) for i in range(10)]
        await listener.aclose()
    assert ch.subscriber_count == 0


async def test_listener_waits_for_live_events() -> None:
    ch = SSEChannel("c")
    received: list[str] = []

    async def consume() -> None:
        async for event in ch.listen():
            received.append(event.data)
            if len(received) == 3:
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await wait_until(lambda: ch.subscriber_count == 1)
        for i in range(3):
            await ch.broadcast(str(i))
            await anyio.lowlevel.checkpoint()
    assert received == ["0", "1", "2"]


async def test_next_frames_takes_every_ready_frame_at_once() -> None:
    ch = SSEChannel("c")
    listener = ch.listen()
    stored = [await ch.broadcast(str(i)) for i in range(5)]
    with anyio.fail_after(WAIT):
        frames = await listener.next_frames()
    assert frames == b"".join(e.encode() for e in stored)
    await listener.aclose()


# -- leaving: subscriber_count is exact, without the garbage collector ----------------------


async def test_cancelled_wait_leaves_at_once(no_gc: None) -> None:
    ch = SSEChannel("c")

    async def consume() -> None:
        async for _ in ch.listen():
            pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await wait_until(lambda: ch.subscriber_count == 1)
        tg.cancel_scope.cancel()
    assert ch.subscriber_count == 0


async def test_lilya_style_wrapper_behind_a_response_leaves_on_disconnect(no_gc: None) -> None:
    ch = SSEChannel("c")

    async def stream() -> AsyncIterator[ServerSentEvent]:
        async for event in ch.listen(heartbeat_interval=10):
            yield event

    client = Client()
    async with anyio.create_task_group() as tg:
        tg.start_soon(EventStreamResponse(stream()), client.scope, client.receive, client.send)
        await wait_until(lambda: ch.subscriber_count == 1)
        await ch.broadcast("hello")
        await client.wait_for(lambda: b"data: hello" in client.body)
        client.disconnect.set()
    assert ch.subscriber_count == 0


async def test_disconnect_while_stuck_in_send_leaves_at_once(no_gc: None) -> None:
    ch = SSEChannel("c")
    client = Client()
    client.stall = True  # the client stopped reading: send never returns

    async with anyio.create_task_group() as tg:
        tg.start_soon(EventStreamResponse(ch.listen()), client.scope, client.receive, client.send)
        await wait_until(lambda: ch.subscriber_count == 1)
        await ch.broadcast("stuck")  # the response is now blocked inside send()
        await anyio.sleep(0.01)
        client.disconnect.set()
    assert ch.subscriber_count == 0


async def test_wrapper_stuck_in_send_then_disconnected_leaves_at_once(no_gc: None) -> None:
    ch = SSEChannel("c")

    async def stream() -> AsyncIterator[ServerSentEvent]:
        async for event in ch.listen():
            yield event

    client = Client()
    client.stall = True
    response = EventStreamResponse(stream(), max_buffer_bytes=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(response, client.scope, client.receive, client.send)
        await wait_until(lambda: ch.subscriber_count == 1)
        for i in range(3):
            await ch.broadcast(str(i))
            await anyio.sleep(0.005)
        client.disconnect.set()
    assert ch.subscriber_count == 0


async def test_send_timeout_drop_leaves_at_once(no_gc: None) -> None:
    ch = SSEChannel("c")
    client = Client()
    client.stall = True
    done = anyio.Event()

    async def serve() -> None:
        await EventStreamResponse(ch.listen(), send_timeout=0.05)(
            client.scope, client.receive, client.send
        )
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        await wait_until(lambda: ch.subscriber_count == 1)
        await ch.broadcast("x")
        with anyio.fail_after(WAIT):
            await done.wait()
    assert ch.subscriber_count == 0


async def test_aclose_break_and_context_manager_leave(no_gc: None) -> None:
    ch = SSEChannel("c")
    listener = ch.listen()
    assert ch.subscriber_count == 1
    await listener.aclose()
    assert ch.subscriber_count == 0
    async with ch.listen():
        assert ch.subscriber_count == 1
    assert ch.subscriber_count == 0
    first = await ch.broadcast("x")
    await ch.broadcast("y")
    async for _ in ch.listen(last_event_id=first.id):
        break
    assert ch.subscriber_count == 0


async def test_a_cancelled_read_can_resume_without_losing_events() -> None:
    ch = SSEChannel("c")
    listener = ch.listen()
    with anyio.move_on_after(0.01):
        await listener.__anext__()
    assert ch.subscriber_count == 0  # left while cancelled...
    await ch.broadcast("while away")
    event = await listener.__anext__()  # ...and comes back where it was
    assert event.data == "while away"
    assert ch.subscriber_count == 1
    await listener.aclose()


# -- replay --------------------------------------------------------------------------------


async def test_replay_after_last_event_id_then_live_without_gap_or_duplicate() -> None:
    ch = SSEChannel("c")
    stored = [await ch.broadcast(str(i)) for i in range(10)]
    listener = ch.listen(last_event_id=stored[3].id)
    await ch.broadcast("10")  # published between subscribe and the first read
    events = await collect(listener, 7)
    assert [e.data for e in events] == [str(i) for i in range(4, 11)]
    await ch.broadcast("11")
    assert (await listener.__anext__()).data == "11"
    await listener.aclose()


async def test_from_oldest_replays_everything_retained() -> None:
    ch = SSEChannel("c", capacity=3)
    for i in range(5):
        await ch.broadcast(str(i))
    listener = ch.listen(from_oldest=True)
    assert [e.data for e in await collect(listener, 3)] == ["2", "3", "4"]
    empty = SSEChannel("e")
    early = empty.listen(from_oldest=True)
    await empty.broadcast("first")
    assert (await early.__anext__()).data == "first"
    await listener.aclose()
    await early.aclose()


async def test_replay_of_the_newest_id_is_just_live() -> None:
    ch = SSEChannel("c")
    last = await ch.broadcast("x")
    listener = ch.listen(last_event_id=last.id)
    await ch.broadcast("y")
    assert [e.data for e in await collect(listener, 1)] == ["y"]
    await listener.aclose()


async def test_replay_with_caller_chosen_ids() -> None:
    ch = SSEChannel("c")
    for i in range(5):
        await ch.broadcast(ServerSentEvent(str(i), id=f"order-{i}"))
    listener = ch.listen(last_event_id="order-2")
    assert [e.data for e in await collect(listener, 2)] == ["3", "4"]
    await listener.aclose()


async def test_an_evicted_auto_id_is_a_cursor_the_lag_notice_counts_from() -> None:
    ch = SSEChannel("c", capacity=4, lag_policy="close")
    first = await ch.broadcast("0")  # auto id: the channel's own cursor "<prefix>-1"
    for i in range(1, 10):
        await ch.broadcast(str(i))
    listener = ch.listen(last_event_id=first.id)
    # 1..5 left the ring: told exactly (even under "close": a replay, not a live lag).
    assert _kinds(listener.take_ready()) == [(LAGGED_EVENT, {"channel": "c", "missed": 5})] + [
        (None, str(i)) for i in range(6, 10)
    ]
    assert ch.stats().dropped == 5 and ch.stats().resets == 0


@pytest.mark.parametrize("reason", ["unknown", "evicted"])
async def test_unreplayable_id_gets_a_reset_then_live(reason: str) -> None:
    ch = SSEChannel("c", capacity=4)
    first = await ch.broadcast(ServerSentEvent("0", id="first"))  # a caller-set id
    last_id = "no-such-id" if reason == "unknown" else first.id
    for i in range(1, 10):
        await ch.broadcast(str(i))
    listener = ch.listen(last_event_id=last_id)
    await ch.broadcast("live")
    reset, live = await collect(listener, 2)
    assert reset.event == RESET_EVENT
    assert reset.data == {
        "channel": "c",
        "reason": "unknown-last-event-id",
        "last_event_id": last_id,
    }
    assert reset.id is None  # the client's Last-Event-ID is not overwritten
    assert live.data == "live"
    assert ch.stats().resets == 1
    await listener.aclose()


# -- slow consumers ------------------------------------------------------------------------


async def test_publisher_never_waits_for_a_stalled_listener() -> None:
    ch = SSEChannel("c", capacity=16)
    stalled = ch.listen()  # never reads
    with anyio.fail_after(WAIT):
        for i in range(10_000):
            await ch.broadcast(str(i))
    assert ch.stats().retained == 16
    assert len(ch._ring) == 16  # memory stays bounded whatever the listener does
    await stalled.aclose()


async def test_lag_skip_signals_the_gap_and_resumes_at_the_oldest() -> None:
    ch = SSEChannel("c", capacity=4)
    listener = ch.listen()
    for i in range(10):
        await ch.broadcast(str(i))
    events = await collect(listener, 5)
    assert events[0].event == LAGGED_EVENT
    assert events[0].data == {"channel": "c", "missed": 6}
    assert [e.data for e in events[1:]] == ["6", "7", "8", "9"]
    assert listener.dropped == 6 and listener.lagged == 1
    stats = ch.stats()
    assert (stats.dropped, stats.lagged) == (6, 1)
    await listener.aclose()


async def test_lag_skip_through_next_frames() -> None:
    ch = SSEChannel("c", capacity=2)
    listener = ch.listen()
    for i in range(5):
        await ch.broadcast(str(i))
    parsed = parse(await listener.next_frames())
    assert [(e.event, e.data) for e in parsed.events] == [
        (LAGGED_EVENT, '{"channel":"c","missed":3}'),
        ("message", "3"),
        ("message", "4"),
    ]
    await listener.aclose()


async def test_lag_close_ends_the_stream(no_gc: None) -> None:
    ch = SSEChannel("c", capacity=4, lag_policy="close")
    listener = ch.listen()
    for i in range(10):
        await ch.broadcast(str(i))
    with pytest.raises(StopAsyncIteration):
        await listener.__anext__()
    assert ch.subscriber_count == 0
    assert ch.stats().dropped == 6


# -- heartbeats ----------------------------------------------------------------------------


async def test_idle_listeners_all_get_heartbeats() -> None:
    ch = SSEChannel("c")
    listeners = [ch.listen(heartbeat_interval=0.02) for _ in range(3)]
    for listener in listeners:
        assert await collect(listener, 2) == [HEARTBEAT, HEARTBEAT]
    for listener in listeners:
        await listener.aclose()


async def test_heartbeats_go_on_when_the_timing_listener_leaves() -> None:
    ch = SSEChannel("c")
    first = ch.listen(heartbeat_interval=0.02)
    second = ch.listen(heartbeat_interval=0.02)
    received: list[ServerSentEvent] = []

    async def read_second() -> None:
        async for event in second:
            received.append(event)
            if len(received) == 3:
                return

    async with anyio.create_task_group() as tg:
        with anyio.move_on_after(0.01):
            await first.__anext__()  # `first` times the channel, then is cancelled
        tg.start_soon(read_second)
    assert received == [HEARTBEAT] * 3
    await first.aclose()


async def test_no_heartbeat_while_events_flow() -> None:
    ch = SSEChannel("c")
    listener = ch.listen(heartbeat_interval=0.5)
    got: list[ServerSentEvent] = []

    async def read() -> None:
        async for event in listener:
            got.append(event)
            if len(got) == 20:
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        for i in range(20):
            await ch.broadcast(str(i))
            await anyio.sleep(0.01)
    assert HEARTBEAT not in got
    await listener.aclose()


def test_listen_validates_heartbeat() -> None:
    with pytest.raises(ValueError, match="heartbeat_interval"):
        SSEChannel("c").listen(heartbeat_interval=0)


# -- closing -------------------------------------------------------------------------------


async def test_close_drains_then_ends_listeners_and_refuses_publishes() -> None:
    ch = SSEChannel("c")
    listener = ch.listen()
    await ch.broadcast("last words")
    await ch.close()
    assert [e.data async for e in listener] == ["last words"]
    assert ch.subscriber_count == 0
    with pytest.raises(ChannelClosed):
        await ch.broadcast("too late")
    assert await ch.cleanup() == 0


async def test_close_wakes_waiting_listeners() -> None:
    ch = SSEChannel("c")
    ended = anyio.Event()

    async def consume() -> None:
        async for _ in ch.listen():
            pass
        ended.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await wait_until(lambda: ch.subscriber_count == 1)
        await ch.close()
        with anyio.fail_after(WAIT):
            await ended.wait()


# -- publishing from sync code and other threads -------------------------------------------


async def test_broadcast_nowait_from_sync_code() -> None:
    ch = SSEChannel("c")
    listener = ch.listen()

    def sync_callback() -> ServerSentEvent:
        return ch.broadcast_nowait({"event": "sync", "data": 1})

    stored = sync_callback()
    assert (await listener.__anext__()) == stored
    await listener.aclose()


async def test_broadcast_from_worker_and_foreign_threads() -> None:
    ch = SSEChannel("c")
    listener = ch.listen()
    await ch.broadcast("from the loop")  # the channel learns its event loop

    from_worker = await anyio.to_thread.run_sync(ch.broadcast_from_thread, "from a worker")
    results: list[ServerSentEvent] = []
    thread = threading.Thread(target=lambda: results.append(ch.broadcast_from_thread("plain")))
    thread.start()
    events = await collect(listener, 3)
    await anyio.to_thread.run_sync(thread.join, WAIT)
    assert [e.data for e in events] == ["from the loop", "from a worker", "plain"]
    assert events[1] == from_worker and events[2] == results[0]
    await listener.aclose()


async def test_broadcast_from_thread_validates_in_the_calling_thread() -> None:
    ch = SSEChannel("c")
    await ch.broadcast("x")
    with pytest.raises(ValueError, match="id"):
        await anyio.to_thread.run_sync(
            lambda: ch.broadcast_from_thread({"data": "x", "id": "a\nb"})
        )


# -- scale ---------------------------------------------------------------------------------


async def test_ten_thousand_listeners_receive_every_event_in_order() -> None:
    ch = SSEChannel("big")
    n_listeners, n_events = 10_000, 5
    complete = 0
    all_done = anyio.Event()

    async def consume(listener: Any) -> None:
        nonlocal complete
        seen = []
        async for event in listener:
            seen.append(event.data)
            if len(seen) == n_events:
                break
        assert seen == [str(i) for i in range(n_events)]
        complete += 1
        if complete == n_listeners:
            all_done.set()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(n_listeners):
                tg.start_soon(consume, ch.listen())
            await wait_until(lambda: ch.subscriber_count == n_listeners, 30)
            for i in range(n_events):
                await ch.broadcast(str(i))
                await anyio.lowlevel.checkpoint()
            await all_done.wait()
    assert complete == n_listeners
    assert ch.subscriber_count == 0


def test_a_channel_outlives_its_event_loop() -> None:
    """A channel (say, on the process-wide manager) used by one event loop, then another:
    as when a server restarts in the same process, or tests run on asyncio then trio."""
    ch = SSEChannel("survivor")

    async def listen_briefly() -> None:
        with anyio.move_on_after(0.02):
            async for _ in ch.listen():
                pass

    async def listen_and_publish() -> list[str]:
        listener = ch.listen()
        await ch.broadcast("again")
        got = [(await listener.__anext__()).data]
        await listener.aclose()
        return got

    anyio.run(listen_briefly)
    anyio.run(listen_briefly, backend="trio")
    anyio.run(listen_briefly)
    assert anyio.run(listen_and_publish, backend="trio") == ["again"]
    assert anyio.run(listen_and_publish) == ["again"]
    # the loop that published last is gone: a thread can still publish
    assert ch.broadcast_from_thread("from a thread").data == "from a thread"


async def test_first_heartbeat_waits_a_full_interval() -> None:
    ch = SSEChannel("c")
    listener = ch.listen(heartbeat_interval=0.2)
    with anyio.move_on_after(0.1) as scope:
        await listener.__anext__()
    assert scope.cancelled_caught  # nothing yet: idle for only half the interval
    assert await listener.__anext__() == HEARTBEAT
    await listener.aclose()


async def test_listeners_at_the_same_place_share_one_joined_batch() -> None:
    ch = SSEChannel("c")
    first, second = ch.listen(), ch.listen()
    for i in range(3):
        await ch.broadcast(str(i))
    batch = await first.next_frames()
    assert await second.next_frames() is batch  # joined once, reused
    await ch.broadcast("3")
    third = ch.listen(from_oldest=True)
    assert await first.next_frames() == ch.history()[-1].encode()  # type: ignore[index]
    assert await third.next_frames() == batch + ch.history()[-1].encode()  # type: ignore[index]
    for listener in (first, second, third):
        await listener.aclose()


# -- issue 8: ids, checkpoints, gaps, one read order ---------------------------------------


async def test_auto_ids_never_collide_across_channels() -> None:
    """Channels created in the same millisecond (or processes started together) must not
    share an id prefix: one channel would accept another's Last-Event-ID."""
    channels = [SSEChannel(f"c{i}") for i in range(50)]
    ids = [(await ch.broadcast("x")).id for ch in channels]
    assert len(set(ids)) == len(ids)
    other = channels[1]
    await other.broadcast("y")
    listener = other.listen(last_event_id=ids[0])  # channel 0's id means nothing here
    assert (await listener.__anext__()).event == RESET_EVENT
    await listener.aclose()
    assert all(len(i) <= 20 for i in ids if i)  # still short


async def test_broadcast_is_a_checkpoint_cancelled_before_storing() -> None:
    ch = SSEChannel("c")
    with anyio.CancelScope() as scope:
        scope.cancel()
        await ch.broadcast("never")
    assert scope.cancelled_caught
    assert ch.stats().published == 0
    with anyio.fail_after(WAIT), anyio.move_on_after(0.05):
        while True:  # a tight publishing loop ends at its deadline
            await ch.broadcast("x")


async def test_a_tight_broadcast_loop_starves_no_other_task() -> None:
    ch = SSEChannel("c", capacity=4)
    ticks = 0
    publishing = True

    async def ticker() -> None:
        nonlocal ticks
        while publishing:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.lowlevel.checkpoint()
        start = ticks
        for i in range(1000):
            await ch.broadcast(str(i))
        ran = ticks - start
        publishing = False
    assert ran >= 100  # the other task ran all along, not only once the loop was over


async def test_note_gap_tells_live_and_replaying_listeners_before_the_next_event() -> None:
    ch = SSEChannel("c")
    first = await ch.broadcast("before")
    live = ch.listen()
    ch.note_gap(7)
    after = await ch.broadcast("after")
    fresh = ch.listen(last_event_id=after.id)  # subscribed after the gap, not across it
    replaying = ch.listen(last_event_id=first.id)
    for listener in (live, replaying):
        notice, event = await collect(listener, 2)
        assert (notice.event, notice.data, notice.id) == (
            LAGGED_EVENT,
            {"channel": "c", "missed": 7},
            None,
        )
        assert event == after
    await ch.broadcast("later")
    assert [e.data for e in await collect(fresh, 1)] == ["later"]
    assert ch.stats().gaps == 1 and ch.stats().lagged == 2 and ch.stats().dropped == 14
    for listener in (live, replaying, fresh):
        await listener.aclose()


async def test_note_gap_wakes_a_waiting_listener_and_unknown_counts_are_null() -> None:
    ch = SSEChannel("c")
    listener = ch.listen()
    got: list[ServerSentEvent] = []

    async def read() -> None:
        got.append(await listener.__anext__())

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await wait_until(lambda: ch.subscriber_count == 1)
        await anyio.sleep(0.01)
        ch.note_gap(None)
    assert got[0].event == LAGGED_EVENT and got[0].data == {"channel": "c", "missed": None}
    with pytest.raises(ValueError, match="missed"):
        ch.note_gap(-1)
    await listener.aclose()


async def test_note_gap_under_lag_close_ends_live_streams_but_not_reconnections() -> None:
    ch = SSEChannel("c", lag_policy="close")
    first = await ch.broadcast("before")
    live = ch.listen()
    ch.note_gap(3)
    await ch.broadcast("after")
    with pytest.raises(StopAsyncIteration):
        await live.__anext__()
    # The client reconnects from where it was: its replay crosses the same gap. Ending
    # this stream too would only make it reconnect for ever: it is told instead.
    again = ch.listen(last_event_id=first.id)
    notice, event = await collect(again, 2)
    assert notice.event == LAGGED_EVENT and event.data == "after"
    await again.aclose()


def _read_order_setup() -> tuple[SSEChannel, Any]:
    ch = SSEChannel("c", capacity=4)
    listener = ch.listen(last_event_id="unknown")  # a reset is owed
    for i in range(6):  # the ring laps it: lagged, 3 missed once "6" is in
        ch.broadcast_nowait(str(i))
    ch.note_gap(5)  # then events lost upstream
    ch.broadcast_nowait("6")
    return ch, listener


def _kinds(events: list[ServerSentEvent]) -> list[tuple[str | None, Any]]:
    return [(e.event, e.data) for e in events]


async def test_every_read_path_gives_notices_in_one_order_before_events() -> None:
    expected = [
        (
            RESET_EVENT,
            {"channel": "c", "reason": "unknown-last-event-id", "last_event_id": "unknown"},
        ),
        (LAGGED_EVENT, {"channel": "c", "missed": 3}),
        (None, "3"),
        (None, "4"),
        (None, "5"),
        (LAGGED_EVENT, {"channel": "c", "missed": 5}),
        (None, "6"),
    ]
    _, listener = _read_order_setup()
    one_by_one = [await listener.__anext__() for _ in range(len(expected))]
    _, listener = _read_order_setup()
    taken: list[ServerSentEvent] = []
    while len(taken) < len(expected):
        taken += listener.take_ready()
    _, listener = _read_order_setup()
    framed: list[Any] = []
    while len(framed) < len(expected):
        framed += parse(await listener.next_frames()).events
    for events in (one_by_one, taken):
        assert [(e.event, e.data) for e in events] == expected
    assert [(None if e.event == "message" else e.event, e.data) for e in framed] == [
        (kind, data if isinstance(data, str) else json.dumps(data, separators=(",", ":")))
        for kind, data in expected
    ]


async def test_an_unknown_last_event_id_is_echoed_only_in_part() -> None:
    ch = SSEChannel("c")
    listener = ch.listen(last_event_id="x" * 60_000)
    notice = await listener.__anext__()
    assert notice.event == RESET_EVENT
    assert notice.data["last_event_id"] == "x" * 256
    await listener.aclose()


# -- merged streams (issue 8) --------------------------------------------------------------


async def test_merged_stream_ends_whole_when_one_channel_lags_under_close() -> None:
    a = SSEChannel("a", capacity=4, lag_policy="close")
    b = SSEChannel("b")
    merged = MergedListener([a, b])
    for i in range(10):
        await a.broadcast(str(i))
    ended = False
    with anyio.fail_after(WAIT):
        while not ended:
            try:
                await merged.next_frames()
            except StopAsyncIteration:
                ended = True
            await b.broadcast("b goes on")  # the stream must not go on with b alone
    assert a.subscriber_count == b.subscriber_count == 0


async def test_merged_stream_delivers_what_it_took_before_ending() -> None:
    a = SSEChannel("a", capacity=4, lag_policy="close")
    b = SSEChannel("b")
    merged = MergedListener([b, a])
    await b.broadcast("from b")
    for i in range(10):
        await a.broadcast(str(i))
    frames = await merged.next_frames()
    assert b"data: from b" in frames
    with anyio.fail_after(WAIT), pytest.raises(StopAsyncIteration):
        await merged.next_frames()


async def test_an_empty_id_never_makes_a_merged_stream_replay_everything() -> None:
    a, b = SSEChannel("a"), SSEChannel("b")
    merged = MergedListener([a, b])
    await a.broadcast("a1")
    await a.broadcast(ServerSentEvent("a2", id=""))
    await b.broadcast("b1")
    stream = parse(await merged.next_frames())
    assert [e.data for e in stream.events] == ["a1", "a2", "b1"]
    last_id = stream.last_event_id  # what the browser sends back on reconnect
    assert last_id
    positions = decode_positions(last_id)
    assert positions is not None and "" not in positions.values()
    await merged.aclose()
    # Reconnect with the last id: nothing seen comes again.
    again = MergedListener([a, b], last_event_id=last_id)
    await a.broadcast("a3")
    await b.broadcast("b2")
    with anyio.fail_after(WAIT):
        replayed = parse(await again.next_frames()).events
    assert [e.data for e in replayed] == ["a3", "b2"]
    await again.aclose()


async def test_a_listener_the_ring_lapped_is_told_of_the_gaps_it_jumped_too() -> None:
    ch = SSEChannel("c", capacity=4)
    listener = ch.listen()
    ch.note_gap(10)
    for i in range(6):
        ch.deliver(ServerSentEvent(f"e{i}"))
    notice, *events = listener.take_ready()
    assert notice.data == {"channel": "c", "missed": 12}  # 10 upstream, 2 out of the ring
    assert [e.data for e in events] == ["e2", "e3", "e4", "e5"]
    assert ch.stats().dropped == 12


async def test_gaps_in_a_row_are_one_notice_and_forgotten_ones_count_as_unknown() -> None:
    ch = SSEChannel("c", capacity=2)
    listener = ch.listen()
    ch.note_gap(1)
    ch.note_gap(2)
    ch.deliver(ServerSentEvent("x"))
    assert _kinds(listener.take_ready()) == [
        (LAGGED_EVENT, {"channel": "c", "missed": 3}),
        (None, "x"),
    ]
    for missed in (1, 2, 3):  # more gaps than the channel keeps, while it is behind
        ch.note_gap(missed)
    ch.deliver(ServerSentEvent("y"))
    assert _kinds(listener.take_ready()) == [
        (LAGGED_EVENT, {"channel": "c", "missed": None}),
        (None, "y"),
    ]


# -- merged streams: a channel's position is its own cursor (review: silent loss) ----------


async def _drain(merged: MergedListener) -> list[Any]:
    """Everything a merged stream has ready now (events and notices, parsed)."""
    events: list[Any] = []
    with anyio.move_on_after(0.05):
        while True:
            try:
                events += parse(await merged.next_frames()).events
            except StopAsyncIteration:
                break
    return events


def _seen(events: list[Any]) -> list[tuple[str | None, Any]]:
    return [
        (None, e.data) if e.event == "message" else (e.event, json.loads(e.data)) for e in events
    ]


async def _reconnect_after_20_into_a(a: SSEChannel, b: SSEChannel, last_id: str) -> list[Any]:
    for i in range(20):  # the client is away; the ring of 8 keeps a12..a19
        await a.broadcast(f"a{i}")
    again = MergedListener([a, b], last_event_id=last_id)
    try:
        return _seen(await _drain(again))
    finally:
        await again.aclose()


async def test_merged_reconnect_after_a_channel_empty_at_start_overflowed_is_told() -> None:
    a, b = SSEChannel("a", capacity=8), SSEChannel("b", capacity=8)
    await b.broadcast("b0")
    merged = MergedListener([a, b])  # a is empty when the stream begins
    await b.broadcast("b1")
    events = await _drain(merged)
    await merged.aclose()
    got = await _reconnect_after_20_into_a(a, b, events[-1].last_event_id)
    assert got == [(LAGGED_EVENT, {"channel": "a", "missed": 12})] + [
        (None, f"a{i}") for i in range(12, 20)
    ]


async def test_merged_reconnect_after_an_empty_id_event_misses_nothing_silently() -> None:
    a, b = SSEChannel("a", capacity=8), SSEChannel("b", capacity=8)
    merged = MergedListener([a, b])
    await a.broadcast(ServerSentEvent("a-reset", id=""))
    await b.broadcast("b1")
    events = await _drain(merged)
    assert [e.data for e in events] == ["a-reset", "b1"]
    await merged.aclose()
    got = await _reconnect_after_20_into_a(a, b, events[-1].last_event_id)
    assert got == [(LAGGED_EVENT, {"channel": "a", "missed": 12})] + [
        (None, f"a{i}") for i in range(12, 20)
    ]


async def test_merged_reconnect_after_a_close_policy_end_replays_or_tells() -> None:
    a = SSEChannel("a", capacity=4, lag_policy="close")
    b = SSEChannel("b", capacity=4)
    merged = MergedListener([a, b])
    await a.broadcast(ServerSentEvent("a0", id="custom"))
    await b.broadcast("b0")
    first = await _drain(merged)
    assert [e.data for e in first] == ["a0", "b0"]
    for i in range(1, 11):  # a laps the stream: it ends (close policy)
        await a.broadcast(f"a{i}")
    assert await _drain(merged) == []
    # a1..a10 published, a7..a10 retained: 6 missed, told once, then the rest replayed
    # (a notice, not the end again: ending would only make the client reconnect forever).
    again = MergedListener([a, b], last_event_id=first[-1].last_event_id)
    got = _seen(await _drain(again))
    assert got == [(LAGGED_EVENT, {"channel": "a", "missed": 6})] + [
        (None, f"a{i}") for i in range(7, 11)
    ]
    # From an id in the middle of that replay: the rest, exactly.
    await again.aclose()


async def test_a_channel_replays_from_its_own_cursor_whatever_ids_events_carry() -> None:
    ch = SSEChannel("c", capacity=4)
    origin = ch.listen().position()  # before the first event
    for i in range(3):
        await ch.broadcast(ServerSentEvent(f"e{i}", id=f"u{i}" if i else ""))
    assert [e.data for e in ch.listen(last_event_id=origin).take_ready()] == ["e0", "e1", "e2"]
    for i in range(3, 9):
        await ch.broadcast(f"e{i}")
    # e0..e4 left the ring: the exact count, then the rest.
    assert _kinds(ch.listen(last_event_id=origin).take_ready()) == [
        (LAGGED_EVENT, {"channel": "c", "missed": 5})
    ] + [(None, f"e{i}") for i in range(5, 9)]
    # Another channel object's cursor (a restart, say) is unknown: reset, then live.
    other = SSEChannel("c").listen().position()
    assert _kinds(ch.listen(last_event_id=other).take_ready())[0][0] == RESET_EVENT
    assert ch.stats().resets == 1


async def test_with_a_backend_an_empty_channel_is_0_0_in_the_composite_id() -> None:
    # A backend's ids are its positions (Redis stream ids), known to every process: an
    # empty channel stands at BACKEND_ORIGIN, which backend channels replay from.
    from sse_toolkit.backends.memory import MemoryBackend
    from sse_toolkit.channel import BACKEND_ORIGIN

    a = SSEChannel("a", capacity=8, backend=MemoryBackend())
    b = SSEChannel("b", capacity=8, backend=MemoryBackend())
    merged = MergedListener([a, b])
    await b.broadcast("b1")
    events = await _drain(merged)
    await merged.aclose()
    assert decode_positions(events[-1].last_event_id) == {"a": BACKEND_ORIGIN, "b": b.last_id}
    got = await _reconnect_after_20_into_a(a, b, events[-1].last_event_id)
    assert got == [(LAGGED_EVENT, {"channel": "a", "missed": 12})] + [
        (None, f"a{i}") for i in range(12, 20)
    ]
    assert _kinds(SSEChannel("c").listen(last_event_id=BACKEND_ORIGIN).take_ready()) == [
        (RESET_EVENT, {"channel": "c", "reason": "unknown-last-event-id", "last_event_id": "0-0"})
    ]  # in memory, "0-0" is just an unknown id


# -- the ring is bounded in bytes too (review: memory bounded by count only) --------------


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "4096", None])
def test_max_bytes_is_validated(value: Any) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        SSEChannel("c", max_bytes=value)


async def test_the_ring_keeps_at_most_max_bytes_and_a_listener_behind_is_told_exactly() -> None:
    ch = SSEChannel("c", capacity=100, max_bytes=1000)
    listener = ch.listen()
    first = await ch.broadcast(ServerSentEvent("x" * 200, id="e00"))  # a caller-set id
    size = len(first.encode())
    for i in range(1, 20):
        await ch.broadcast(ServerSentEvent("x" * 197 + f"{i:03}", id=f"e{i:02}"))
    kept = 1000 // size
    stats = ch.stats()
    assert stats.retained == kept and stats.retained_bytes == kept * size <= 1000
    assert [e.id for e in ch.history() or []] == [f"e{i:02}" for i in range(20 - kept, 20)]
    notice, *events = listener.take_ready()
    assert notice.data == {"channel": "c", "missed": 20 - kept}
    assert [e.id for e in events] == [f"e{i:02}" for i in range(20 - kept, 20)]
    assert ch.stats().dropped == 20 - kept
    # An id evicted for bytes is gone, as one evicted for capacity: reset.
    assert _kinds(ch.listen(last_event_id="e00").take_ready())[0][0] == RESET_EVENT
    # An event larger than the bound is kept alone (listeners must be able to read it).
    await ch.broadcast("y" * 5000)
    assert ch.stats().retained == 1 and [e.data for e in ch.history() or []] == ["y" * 5000]


async def test_the_default_byte_bound_holds_large_events_to_4_mib() -> None:
    ch = SSEChannel("c")  # the review: 1,024 events of 60 KB were 60 MB per channel
    payload = "x" * (60 * 1024)
    for i in range(1024):
        ch.broadcast_nowait({"data": payload + str(i)})
    assert ch.max_bytes == 4 * 1024 * 1024
    assert 0 < ch.stats().retained_bytes <= ch.max_bytes
    assert ch.stats().retained < 70


async def test_a_thread_publishing_past_the_byte_bound_never_breaks_a_reader() -> None:
    ch = SSEChannel("c", capacity=64, max_bytes=2000)
    listener = ch.listen()
    total = 3000

    def publish() -> None:
        for i in range(total):
            ch.broadcast_from_thread(ServerSentEvent(f"{i}:" + "z" * (i % 300)))

    expected = 0  # the next number this listener must get (a lag notice moves it on)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, publish)
            while expected < total:
                for event in listener.take_ready() or [await listener.__anext__()]:
                    if event.event == LAGGED_EVENT:
                        expected += event.data["missed"]
                    else:
                        assert int(event.data.split(":")[0]) == expected, "exact, in order"
                        expected += 1
    assert expected == total and ch.stats().retained_bytes <= 2000


async def test_a_channel_position_wins_over_a_caller_id_that_spells_it() -> None:
    # A caller may set any id, even one spelling a position of the channel: the position a
    # merged stream recorded must still mean "after that sequence number" (found by review).
    channel = SSEChannel("a")
    await channel.broadcast("a0")
    position = channel.position_at(1)
    for data in ("a1", "a2"):
        await channel.broadcast(data)
    await channel.broadcast(ServerSentEvent("a3", id=position))
    listener = channel.listen(last_event_id=position)
    assert [event.data for event in listener.take_ready()] == ["a1", "a2", "a3"]
    listener.close()
