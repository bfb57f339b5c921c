"""Event-type filters (issue 12): ``listen(events=...)``, merged streams and ``?event=``.

A filter hands over only the chosen types, live and in replay; notices and heartbeats
always pass; a filtered-out event still moves the listener on, and a batch of frames that
ends with one ends with an id-only frame, so that the client's Last-Event-ID resumes
exactly. On asyncio and trio; over HTTP in process and over a real uvicorn with httpx-sse.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import connect_sse
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_toolkit import (
    HEARTBEAT,
    LAGGED_EVENT,
    RESET_EVENT,
    ChannelManager,
    ServerSentEvent,
    SSEApp,
    SSEChannel,
)
from sse_toolkit.merge import MergedListener, decode_positions
from sse_toolkit.parser import EventParser

from .asgi import WAIT, Client, Stream, call, wait_subscribers
from .servers import serve
from .sse_parser import parse

pytestmark = pytest.mark.anyio


def kind(event: ServerSentEvent) -> str:
    """The type EventSource dispatches an event as."""
    return event.event or "message"


def last_id_both_ways(stream: bytes) -> str:
    """The last event ID after ``stream``, by the spec parser and by EventParser (equal)."""
    parser = EventParser()
    parser.feed(stream)
    spec = parse(stream).last_event_id
    assert parser.last_event_id == spec
    return spec


async def read_frames(listener: Any) -> bytes:
    with anyio.fail_after(WAIT):
        return bytes(await listener.next_frames())


# -- listen(events=...): validation ----------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "error"),
    [
        ([], ValueError),
        ((), ValueError),
        ([""], ValueError),
        (["a\nb"], ValueError),
        (["a\rb"], ValueError),
        (["a\0b"], ValueError),
        ([1], TypeError),
        (b"a", TypeError),
        (5, TypeError),
    ],
)
async def test_bad_filters_are_refused_naming_events(events: Any, error: type) -> None:
    ch = SSEChannel("c")
    with pytest.raises(error, match="events"):
        ch.listen(events=events)
    with pytest.raises(error, match="events"):
        MergedListener([ch], events=events)
    assert ch.subscriber_count == 0  # refused before any listener exists


async def test_a_lone_str_is_one_type() -> None:
    ch = SSEChannel("c")
    listener = ch.listen(events="ab")
    ch.broadcast_nowait({"event": "a", "data": "no"})
    ch.broadcast_nowait({"event": "ab", "data": "yes"})
    assert [e.data for e in listener.take_ready()] == ["yes"]


# -- live, replay, notices, heartbeats -------------------------------------------------------


async def test_iteration_yields_only_the_chosen_types() -> None:
    ch = SSEChannel("c")
    listener = ch.listen(events=["a", "message"])
    published = [
        await ch.broadcast(m)
        for m in (
            {"event": "a", "data": "1"},
            {"event": "b", "data": "2"},
            "plain",  # no event field: a "message"
            ServerSentEvent("empty type", event=""),  # EventSource: "message" too
            {"event": "b", "data": "3"},
            {"event": "a", "data": "4"},
        )
    ]
    got = []
    with anyio.fail_after(WAIT):
        async for event in listener:
            got.append(event)
            if len(got) == 4:
                break
    assert got == [e for e in published if kind(e) in ("a", "message")]
    assert (listener.delivered, listener.filtered) == (4, 2)


async def test_message_selects_events_without_a_type() -> None:
    ch = SSEChannel("c")
    listener = ch.listen(events=["message"])
    ch.broadcast_nowait({"event": "a", "data": "x"})
    ch.broadcast_nowait("plain")
    assert [e.data for e in listener.take_ready()] == ["plain"]


async def test_frames_end_with_an_id_only_frame_when_the_last_event_is_filtered_out() -> None:
    ch = SSEChannel("c")
    listener = ch.listen(events=["a"])
    a = ch.broadcast_nowait({"event": "a", "data": "1"})
    ch.broadcast_nowait({"event": "b", "data": "2"})
    b = ch.broadcast_nowait({"event": "b", "data": "3"})
    frames = await read_frames(listener)
    assert frames == a.encode() + f"id: {b.id}\n\n".encode()
    stream = parse(frames)
    assert [(e.event, e.data) for e in stream.events] == [("a", "1")]  # nothing dispatched
    assert last_id_both_ways(frames) == b.id  # the last published, though filtered out
    assert EventParser().feed(frames) == EventParser().feed(a.encode())  # no extra event
    assert (listener.delivered, listener.filtered) == (1, 2)

    # The last event kept: no id-only frame.
    ch.broadcast_nowait({"event": "b", "data": "4"})
    kept = ch.broadcast_nowait({"event": "a", "data": "5"})
    assert await read_frames(listener) == kept.encode()

    # Only filtered-out events: the id-only frame alone.
    skipped = ch.broadcast_nowait({"event": "b", "data": "6"})
    assert await read_frames(listener) == f"id: {skipped.id}\n\n".encode()


async def test_an_empty_id_gets_no_id_only_frame() -> None:
    ch = SSEChannel("c")
    listener = ch.listen(events=["a"])
    a = ch.broadcast_nowait({"event": "a", "data": "1"})
    ch.broadcast_nowait(ServerSentEvent("2", event="b", id=""))
    frames = await read_frames(listener)
    assert frames == a.encode()  # "id:" would reset the client's id: nothing is written
    assert last_id_both_ways(frames) == a.id
    # A reconnection after a replays b again, filters it again: nothing is delivered twice.
    again = ch.listen(last_event_id=a.id, events=["a"])
    assert again.take_ready() == []
    assert again.filtered == 1


async def test_replay_honours_the_filter() -> None:
    ch = SSEChannel("c")
    sent = [ch.broadcast_nowait({"event": t, "data": str(i)}) for i, t in enumerate("abab")]
    listener = ch.listen(last_event_id=sent[0].id, events=["b"])
    frames = await read_frames(listener)
    assert [e.data for e in parse(frames).events] == ["1", "3"]
    assert last_id_both_ways(frames) == sent[-1].id
    replay_all = ch.listen(from_oldest=True, events=["a"])
    assert [e.data for e in replay_all.take_ready()] == ["0", "2"]


async def test_the_shared_batch_of_unfiltered_listeners_is_untouched_by_filtered_ones() -> None:
    ch = SSEChannel("c")
    first, filtered, second = ch.listen(), ch.listen(events=["a"]), ch.listen()
    ch.broadcast_nowait({"event": "a", "data": "1"})
    ch.broadcast_nowait({"event": "b", "data": "2"})
    batch = await read_frames(first)
    assert len(parse(await read_frames(filtered)).events) == 1
    assert await second.next_frames() is batch  # still joined once, reused
    assert (first.delivered, first.filtered) == (2, 0)


async def test_a_lagging_filtered_listener_is_told_and_resumes_filtered() -> None:
    ch = SSEChannel("c", capacity=4)
    listener = ch.listen(events=["a"])
    sent = [ch.broadcast_nowait({"event": "ab"[i % 2], "data": str(i)}) for i in range(10)]
    frames = await read_frames(listener)
    stream = parse(frames)
    assert stream.events[0].event == LAGGED_EVENT
    assert json.loads(stream.events[0].data) == {"channel": "c", "missed": 6}
    assert [e.data for e in stream.events[1:]] == ["6", "8"]
    assert last_id_both_ways(frames) == sent[-1].id
    assert (listener.dropped, listener.delivered, listener.filtered) == (6, 2, 2)

    # The same through iteration.
    iterated = ch.listen(events=["b"])
    for i in range(6):
        ch.broadcast_nowait({"event": "ab"[i % 2], "data": f"x{i}"})
    got = []
    with anyio.fail_after(WAIT):
        async for event in iterated:
            got.append(event)
            if len(got) == 3:
                break
    assert got[0].event == LAGGED_EVENT
    assert [e.data for e in got[1:]] == ["x3", "x5"]


async def test_reset_notice_passes_the_filter() -> None:
    ch = SSEChannel("c")
    listener = ch.listen(last_event_id="gone", events=["a"])
    ch.broadcast_nowait({"event": "b", "data": "no"})
    ch.broadcast_nowait({"event": "a", "data": "yes"})
    events = parse(await read_frames(listener)).events
    assert [e.event for e in events] == [RESET_EVENT, "a"]
    assert listener.delivered == 1  # notices are not counted


async def test_heartbeats_pass_the_filter() -> None:
    ch = SSEChannel("c")
    listener = ch.listen(heartbeat_interval=0.05, events=["a"])
    assert await read_frames(listener) == HEARTBEAT.encode()
    iterated = ch.listen(heartbeat_interval=0.05, events=["a"])
    with anyio.fail_after(WAIT):
        assert await iterated.__anext__() == HEARTBEAT


async def test_a_filtered_listener_waits_when_everything_was_filtered_out() -> None:
    ch = SSEChannel("c")
    listener = ch.listen(events=["a"])
    ch.broadcast_nowait(ServerSentEvent("x", event="b", id=""))  # nothing to write at all
    got: list[bytes] = []

    async def read() -> None:
        got.append(await listener.next_frames())

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            while listener.filtered == 0:
                await anyio.lowlevel.checkpoint()
            assert not got  # it read the filtered-out event and waits for the next one
            kept = await ch.broadcast({"event": "a", "data": "y"})
    assert got == [kept.encode()]


async def test_counters_of_unfiltered_listeners() -> None:
    ch = SSEChannel("c", capacity=2)
    listener = ch.listen()
    for i in range(5):
        ch.broadcast_nowait(str(i))
    await read_frames(listener)  # lagged: 3 dropped, 2 delivered
    assert (listener.delivered, listener.filtered, listener.dropped) == (2, 0, 3)
    replay = ch.listen(last_event_id=ch.position_at(1))  # older than the ring: 2 missed
    assert [e.data for e in replay.take_ready()][1:] == ["3", "4"]
    assert replay.delivered == 2


# -- merged streams ------------------------------------------------------------------------------


async def test_merged_stream_filters_every_channel_and_resumes_exactly() -> None:
    a, b = SSEChannel("a"), SSEChannel("b")
    merged = MergedListener([a, b], events=["x"])
    a.broadcast_nowait({"event": "x", "data": "a1"})
    a.broadcast_nowait({"event": "y", "data": "a2"})
    b.broadcast_nowait({"event": "y", "data": "b1"})
    frames = await read_frames(merged)
    assert [e.data for e in parse(frames).events] == ["a1"]
    last = last_id_both_ways(frames)
    assert decode_positions(last) == {"a": a.position_at(2), "b": b.position_at(1)}
    assert frames.endswith(f"id: {last}\n\n".encode())  # id-only, composite

    # Resume: nothing replayed; what comes next, exactly once.
    again = MergedListener([a, b], last_event_id=last, events=["x"])
    b.broadcast_nowait({"event": "x", "data": "b2"})
    frames = await read_frames(again)
    assert [e.data for e in parse(frames).events] == ["b2"]
    assert decode_positions(parse(frames).last_event_id) == {
        "a": a.position_at(2),
        "b": b.position_at(2),
    }
    merged.close()
    again.close()


async def test_merged_stream_without_filter_is_unchanged() -> None:
    a = SSEChannel("a")
    merged = MergedListener([a])
    a.broadcast_nowait({"event": "y", "data": "1"})
    assert [e.data for e in parse(await read_frames(merged)).events] == ["1"]
    merged.close()


# -- the property: filtered = unfiltered filtered, and resumption is exact ----------------------

TYPES = ["a", "b", "c", None]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.lists(st.sampled_from(TYPES), min_size=0, max_size=6), min_size=1, max_size=8
    ),
    wanted=st.sets(st.sampled_from(["a", "b", "c", "message"]), min_size=1),
    cut=st.integers(min_value=0),
)
def test_filtered_stream_is_the_unfiltered_one_filtered(
    backend: str, steps: list[list[str | None]], wanted: set[str], cut: int
) -> None:
    async def run() -> None:
        ch = SSEChannel("p")
        plain, filtered = ch.listen(), ch.listen(events=wanted)
        plain_bytes, filtered_bytes = b"", b""
        published: list[ServerSentEvent] = []
        for batch in steps:  # publish some, then both read what is ready
            for t in batch:
                published.append(ch.broadcast_nowait(ServerSentEvent("d", event=t)))
            if plain.ready:
                plain_bytes += await read_frames(plain)
            if filtered.ready:
                filtered_bytes += await read_frames(filtered)
        unfiltered = parse(plain_bytes).events
        got = parse(filtered_bytes).events
        assert got == [e for e in unfiltered if e.event in wanted]  # same order, same ids
        last = last_id_both_ways(filtered_bytes)
        assert last == (published[-1].id if published else "")
        kept = [e for e in published if kind(e) in wanted]
        assert (filtered.delivered, filtered.filtered) == (len(kept), len(published) - len(kept))

        # Resume from the final Last-Event-ID: nothing replayed, the next kept event once.
        resumed = ch.listen(last_event_id=last, events=wanted)
        assert resumed.take_ready() == []
        # Resume from any point the client could have stopped at: exactly the rest.
        frames = [f + b"\n\n" for f in filtered_bytes.split(b"\n\n")[:-1]]
        head = b"".join(frames[: cut % (len(frames) + 1)])
        head_id = last_id_both_ways(head)
        if head_id:
            rest = ch.listen(last_event_id=head_id, events=wanted)
        else:  # it got nothing yet: it subscribed before the first event
            rest = ch.listen(from_oldest=True, events=wanted)
        replayed = [(e.event or "message", e.id) for e in rest.take_ready()]
        expected = [(e.event, e.last_event_id) for e in got[len(parse(head).events) :]]
        assert replayed == expected

    anyio.run(run, backend=backend)


# -- over HTTP, in process -------------------------------------------------------------------


async def publish(app: SSEApp, channel: str, payload: Any) -> str:
    body = json.dumps(payload).encode()
    client = Client(
        method="POST", path=f"/{channel}", body=body, headers=[("content-type", "application/json")]
    )
    await call(app, client)
    assert client.status == 202, client.body
    return str(client.json()["id"])


async def test_http_filter_live_replay_and_resume() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True, heartbeat_interval=None)
    client = Client(path="/c", query="event=a&event=b")
    async with Stream(app, client) as sub:
        await wait_subscribers(manager, "c", 1)
        ids = [await publish(app, "c", {"event": t, "data": t}) for t in "abcac"]
        await sub.wait_for(lambda: parse(sub.body).last_event_id == ids[-1])
    stream = parse(client.body)
    assert [e.data for e in stream.events] == ["a", "b", "a"]
    assert last_id_both_ways(client.body) == ids[-1]

    # Replay with Last-Event-ID honours the filter.
    replay = Client(path="/c", query="event=c", headers=[("last-event-id", ids[0])])
    async with Stream(app, replay) as sub:
        await sub.wait_for(lambda: len(parse(sub.body).events) == 2)
    assert [e.last_event_id for e in parse(replay.body).events] == [ids[2], ids[4]]

    # A reconnection after the filtered-out tail replays nothing; the next one comes once.
    last = parse(client.body).last_event_id
    again = Client(path="/c", query="event=a&event=b", headers=[("last-event-id", last)])
    async with Stream(app, again) as sub:
        await wait_subscribers(manager, "c", 1)
        new = await publish(app, "c", {"event": "b", "data": "new"})
        await sub.wait_for(lambda: len(parse(sub.body).events) >= 1)
    assert [(e.data, e.last_event_id) for e in parse(again.body).events] == [("new", new)]


async def test_http_merged_stream_filters_every_channel() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True, heartbeat_interval=None)
    client = Client(path="/", query="channel=a&channel=b&event=x")
    async with Stream(app, client) as sub:
        await wait_subscribers(manager, "b", 1)
        await publish(app, "a", {"event": "x", "data": "a-x"})
        await publish(app, "b", {"event": "y", "data": "b-y"})
        await publish(app, "b", {"event": "x", "data": "b-x"})
        await publish(app, "a", {"data": "a-message"})
        a, b = await manager.get("a"), await manager.get("b")
        assert a is not None and b is not None
        # Past every event, filtered or not: by an id-only frame, or by the id of b-x
        # when a's filtered-out event was read in the same batch, before it.
        final = {"a": a.position_at(2), "b": b.position_at(2)}
        await sub.wait_for(lambda: decode_positions(parse(sub.body).last_event_id) == final)
    assert [e.data for e in parse(client.body).events] == ["a-x", "b-x"]
    assert decode_positions(last_id_both_ways(client.body)) == final


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("event=", "needs an event type"),
        ("&".join(f"event=t{i}" for i in range(33)), "at most 32 event types"),
        ("event=" + "x" * 257, "at most 256 characters"),
        ("event=a%0Db", "CR, LF or NUL"),
        ("event=a%0Ab", "CR, LF or NUL"),
        ("event=a%00b", "CR, LF or NUL"),
        ("channel=a&event=a%0Ab", "CR, LF or NUL"),
    ],
)
async def test_http_bad_filters_are_400(query: str, message: str) -> None:
    manager = ChannelManager()
    path = "/" if query.startswith("channel=") else "/c"
    client = await call(SSEApp(manager), Client(path=path, query=query))
    assert client.status == 400
    assert message in client.json()["error"]
    assert manager.stats()["subscribers"] == 0


async def test_http_filter_at_the_limits_is_served() -> None:
    manager = ChannelManager()
    query = "&".join(f"event=t{i}" for i in range(31)) + "&event=" + "x" * 256
    client = await call(SSEApp(manager), Client(method="HEAD", path="/c", query=query))
    assert client.status == 200


# -- over a real uvicorn, read by httpx-sse --------------------------------------------------


def test_over_uvicorn_with_httpx_sse() -> None:
    import threading
    import time

    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True, heartbeat_interval=None)

    def wait_until(predicate: Any) -> None:
        deadline = time.monotonic() + WAIT
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            threading.Event().wait(0.01)

    def subscribed() -> bool:
        channel = manager._channels.get("room")
        return channel is not None and channel.subscriber_count == 1

    def post(client: httpx.Client, url: str, payload: Any) -> str:
        response = client.post(
            url, content=json.dumps(payload), headers={"content-type": "application/json"}
        )
        assert response.status_code == 202
        return str(response.json()["id"])

    with serve(app, "uvicorn") as url, httpx.Client(timeout=WAIT) as client:
        with connect_sse(client, "GET", f"{url}/room?event=a&event=b") as source:
            wait_until(subscribed)
            ids = [post(client, f"{url}/room", {"event": t, "data": t}) for t in "acbcc"]
            got = []
            for event in source.iter_sse():
                got.append(event)
                if event.id == ids[-1]:
                    break
        # httpx-sse yields an id-only frame as an event with empty data (browsers do not).
        kept = [(e.event, e.data, e.id) for e in got if e.data]
        assert kept == [("a", "a", ids[0]), ("b", "b", ids[2])]
        assert (got[-1].event, got[-1].data, got[-1].id) == ("message", "", ids[-1])
        wait_until(lambda: not subscribed())

        # Reconnect with the last id: nothing replayed, the next kept event exactly once.
        headers = {"last-event-id": got[-1].id}
        with connect_sse(client, "GET", f"{url}/room?event=a&event=b", headers=headers) as source:
            wait_until(subscribed)
            post(client, f"{url}/room", {"event": "c", "data": "skip"})
            new = post(client, f"{url}/room", {"event": "b", "data": "new"})
            events = []
            for event in source.iter_sse():
                if event.data:
                    events.append(event)
                    break
        assert [(e.data, e.id) for e in events] == [("new", new)]

        # Replay with Last-Event-ID honours the filter.
        headers = {"last-event-id": ids[0]}
        with connect_sse(client, "GET", f"{url}/room?event=c", headers=headers) as source:
            replayed = []
            for event in source.iter_sse():
                if event.data:
                    replayed.append(event.data)
                if len(replayed) == 4:
                    break
        assert replayed == ["c", "c", "c", "skip"]

        bad = client.get(f"{url}/room?event=a%0Ab")
        assert bad.status_code == 400
        assert "CR, LF or NUL" in bad.json()["error"]
