"""sse_toolkit.client against real sockets: scripted raw servers, the hub, sse-starlette.

The scripted server (tests/sse_servers.py) plays each request's `Response` byte by byte and
records what it saw; timings are the server's (``time.monotonic`` in the same process),
checked with tolerances: never shorter than the delay due (``EPS`` for timer granularity),
never longer than it plus ``TOL`` of scheduling slack. Every wait is on a condition, under
a bound.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from sse_toolkit import LAGGED_EVENT, RESET_EVENT, client

from .conftest import redis_url
from .servers import free_port, serve
from .sse_servers import (
    BYTES,
    END,
    FIN,
    RANDOM,
    RESET,
    SILENT,
    SPLITS,
    WHOLE,
    Gate,
    Pause,
    Publisher,
    Response,
    hub_process,
    live_tasks,
    no_task_outlives,
    script_server,
    sse,
    starlette_app,
    status,
    until_sync,
)

EPS = 0.02  # a delay may end this much early (timer granularity), never more
TOL = 0.25  # scheduling slack: how much longer than due a delay may take
WAIT = 5.0  # bound on a whole test's client loop (longer ones say so)
FAST = 0.01  # a client retry delay that keeps multi-connection tests quick

pytestmark = pytest.mark.anyio


def view(event: Any) -> tuple[str, str, str, int | None]:
    return (event.event, event.data, event.id, event.retry)


async def collect(url: str, n: int, *, timeout: float = WAIT, **options: Any) -> list[Any]:
    """The first ``n`` events of ``client.connect(url, **options)``."""
    got: list[Any] = []
    with anyio.fail_after(timeout):
        async with client.connect(url, **options) as events:
            async for event in events:
                got.append(event)
                if len(got) == n:
                    break
    return got


def summary(events: Any) -> list[tuple[Any, ...]]:
    return [(e, len(d), hashlib.sha256(d.encode()).hexdigest(), i, r) for e, d, i, r in events]


# Scripts that must stop the client follow up with this: it gets an event if it reconnects.
RETRIED = sse(b"data: retried\n\n")


async def drain(url: str, got: list[Any], *, timeout: float = WAIT, **options: Any) -> None:
    """Every event of ``client.connect(url, **options)`` into ``got``, until it raises."""
    with anyio.fail_after(timeout):
        async with client.connect(url, **options) as events:
            async for event in events:
                assert event.data != "retried", "the client reconnected"
                got.append(event)
    raise AssertionError("the event stream ended")


def drain_sync(url: str, got: list[Any], **options: Any) -> None:
    with client.connect_sync(url, **options) as events:
        for event in events:
            assert event.data != "retried", "the client reconnected"
            got.append(event)
    raise AssertionError("the event stream ended")


# -- framing over the wire -----------------------------------------------------------------

BIG_UNIT = "ab é€😀\u2028"  # multi-byte characters (cut by random splits) and U+2028: no line end
BIG_DATA = BIG_UNIT * ((1 << 20) // len(BIG_UNIT.encode()) + 1)  # a little over 1 MB


@dataclass(frozen=True)
class Framing:
    """Bodies for consecutive connections (each but the last ends cleanly; the last stays
    open, so each event must be dispatched without waiting for more bytes), and what the
    client must make of them."""

    name: str
    bodies: tuple[bytes, ...]
    expected: tuple[tuple[str, str, str, int | None], ...]  # (event, data, id, retry)
    sent_ids: tuple[str | None, ...] = (None,)  # Last-Event-ID of each request
    last_event_id: str = ""
    retry: float = FAST  # events.retry at the end (the client's default: FAST)
    splits: tuple[str, ...] = SPLITS


def m(data: str, id: str = "", event: str = "message", retry: int | None = None) -> Any:
    return (event, data, id, retry)


FRAMINGS = [
    Framing(
        "lf",
        (b"id: 1\ndata: a\n\nevent: custom\ndata: b\ndata: c\n\ndata: d\n\n",),
        (m("a", "1"), m("b\nc", "1", "custom"), m("d", "1")),
        last_event_id="1",
    ),
    Framing(
        "crlf",
        (b"id: 1\r\ndata: a\r\n\r\nevent: custom\r\ndata: b\r\ndata: c\r\n\r\ndata: d\r\n\r\n",),
        (m("a", "1"), m("b\nc", "1", "custom"), m("d", "1")),
        last_event_id="1",
    ),
    Framing(
        # A CR ends its line at once: the last event must not wait for a possible LF.
        "cr-only",
        (b"id: 1\rdata: a\r\revent: custom\rdata: b\rdata: c\r\rdata: d\r\r",),
        (m("a", "1"), m("b\nc", "1", "custom"), m("d", "1")),
        last_event_id="1",
    ),
    Framing(
        "mixed-line-ends",
        (b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r\n\n",),
        (m("a\nb\nc"), m("d")),
    ),
    Framing(
        # A BOM is dropped at the start of each connection, and only there: elsewhere it
        # is part of a field name ("\ufeffdata": unknown, ignored).
        "bom",
        (
            b"\xef\xbb\xbfdata: x\n\n\xef\xbb\xbfdata: not a field\n\n",
            b"\xef\xbb\xbfdata: y\n\n",
        ),
        (m("x"), m("y")),
        sent_ids=(None, None),
    ),
    Framing(
        "1mb-event",
        (b"id: big\ndata: " + BIG_DATA.encode() + b"\n\ndata: after\n\n",),
        (m(BIG_DATA, "big"), m("after", "big")),
        last_event_id="big",
        splits=(WHOLE, RANDOM),
    ),
    Framing(
        # An id containing NUL is ignored: the last event id stays "1", and resumes there.
        "id-with-nul",
        (b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n", b"data: c\n\n"),
        (m("a", "1"), m("b", "1"), m("c", "1")),
        sent_ids=(None, "1"),
        last_event_id="1",
    ),
    Framing(
        # retry: only ASCII digits; anything else is ignored, the delay stays the default.
        "retry-non-digits",
        (b"retry: 1a0\ndata: a\n\nretry: 1.5\ndata: b\n\nretry:  50\ndata: c\n\nretry: -1\n\n",),
        (m("a"), m("b"), m("c")),
    ),
    Framing(
        # A valid retry sets the delay (ms); a later invalid one leaves it so.
        "retry-valid",
        (b"retry: 70\ndata: e\n\nretry: 1x\ndata: f\n\n",),
        (m("e", retry=70), m("f")),
        retry=0.07,
    ),
    Framing(
        # Comments and heartbeats only: no event, on any connection (nor an empty one).
        "comments-only",
        (b": hb\n\n:\n\n: x\r\n\r\n:\r\r", b": only\n\n", b"data: real\n\n"),
        (m("real"),),
        sent_ids=(None, None, None),
    ),
    Framing(
        "field-edge-cases",
        (b"data:no-space\n\ndata:  two\n\nevent\ndata\n\nunknown: x\ndata: k\n\n",),
        (m("no-space"), m(" two"), m(""), m("k")),
    ),
    Framing(
        # An event cut off by the end of its connection is dropped, its id with it.
        "partial-event-at-end",
        (b"id: 1\ndata: a\n\nid: 2\ndata: partial\n", b"data: b\n\n"),
        (m("a", "1"), m("b", "1")),
        sent_ids=(None, "1"),
        last_event_id="1",
    ),
]
FRAMING_PARAMS = [
    pytest.param(case, split, id=f"{case.name}-{split}")
    for case in FRAMINGS
    for split in case.splits
]


@pytest.mark.parametrize(("case", "split"), FRAMING_PARAMS)
async def test_framing_is_parsed_right_over_the_wire(case: Framing, split: str) -> None:
    last = len(case.bodies) - 1
    script = [
        sse(
            body,
            end=END if i < last else SILENT,
            split=split,
            pace=0.0005 if split == BYTES else 0.0,
            seed=i,
        )
        for i, body in enumerate(case.bodies)
    ]
    got: list[Any] = []
    with script_server(script) as server:
        with anyio.fail_after(15):
            async with client.connect(f"{server.url}/events", retry=FAST) as events:
                async for event in events:
                    got.append(view(event))
                    if len(got) == len(case.expected):
                        break
                last_event_id = events.last_event_id
                retry = events.retry
        requests = list(server.requests)
    if case.name == "1mb-event":  # no 1 MB diff on failure
        assert summary(got) == summary(case.expected)
    else:
        assert got == list(case.expected)
    assert [request.header("last-event-id") for request in requests] == list(case.sent_ids)
    assert last_event_id == case.last_event_id
    assert retry == pytest.approx(case.retry)


async def test_notices_arrive_as_events() -> None:
    body = (
        b'event: sse.reset\ndata: {"channel": "demo", "last_event_id": "x"}\n\n'
        b'event: sse.lagged\ndata: {"channel": "demo", "missed": 3}\n\n'
        b"id: 7\ndata: next\n\n"
    )
    with script_server([sse(body)]) as server:
        got = await collect(server.url, 3)
    assert [event.event for event in got] == [RESET_EVENT, LAGGED_EVENT, "message"]
    assert got[1].json() == {"channel": "demo", "missed": 3}
    assert got[2].data == "next"


# -- reconnecting --------------------------------------------------------------------------


@pytest.mark.parametrize("end", [END, FIN, RESET])
async def test_reconnects_with_last_event_id_after_the_servers_retry(end: str) -> None:
    gate = Gate()
    script = [
        sse(b"retry: 200\nid: 1\ndata: a\n\nid: 2\ndata: b\n\n", gate, end=end),
        sse(b"id: 3\ndata: c\n\n"),
    ]
    got: list[Any] = []
    with script_server(script) as server:
        with anyio.fail_after(WAIT):
            # The default retry (3 s) would fail the delay check: the server's 200 ms rules.
            async with client.connect(server.url, headers={"x-token": "t"}) as events:
                async for event in events:
                    got.append(event)
                    if event.data == "b":
                        gate.open()  # only now end (a reset may discard unread bytes)
                    if len(got) == 3:
                        break
                assert events.retry == pytest.approx(0.2)
                assert events.reconnects == 1
                assert events.last_event_id == "3"
        first, second = server.requests
        gap = server.gap(0)
    assert [(e.data, e.id) for e in got] == [("a", "1"), ("b", "2"), ("c", "3")]
    assert first.header("last-event-id") is None
    assert second.header("last-event-id") == "2"
    for request in (first, second):
        assert request.method == "GET"
        assert "text/event-stream" in (request.header("accept") or "")
        assert request.header("x-token") == "t"
    assert 0.2 - EPS <= gap <= 0.2 + TOL, gap


async def test_last_event_id_given_is_sent_until_the_server_sends_one() -> None:
    script = [sse(b"data: a\n\n", end=END), sse(b"id: 9\ndata: b\n\n", end=END)]
    script += [sse(b"data: c\n\n")]
    with script_server(script) as server:
        got = await collect(server.url, 3, last_event_id="abc", retry=FAST)
    assert [(event.data, event.id) for event in got] == [("a", "abc"), ("b", "9"), ("c", "9")]
    ids = [request.header("last-event-id") for request in server.requests]
    assert ids == ["abc", "abc", "9"]


async def test_post_with_json_is_repeated_on_every_reconnect() -> None:
    script = [sse(b"id: 1\ndata: a\n\n", end=END), sse(b"id: 2\ndata: b\n\n")]
    with script_server(script) as server:
        got = await collect(server.url, 2, method="POST", json={"q": [1, 2]}, retry=FAST)
        requests = server.requests
    assert [event.data for event in got] == ["a", "b"]
    assert [request.method for request in requests] == ["POST", "POST"]
    for request in requests:
        assert json.loads(request.body) == {"q": [1, 2]}
        assert "application/json" in (request.header("content-type") or "")
    assert [request.header("last-event-id") for request in requests] == [None, "1"]


async def test_a_client_of_the_callers_is_used_and_left_open() -> None:
    with script_server([sse(b"data: a\n\n", Pause(0.05), b": hb\n\n")]) as server:
        async with httpx.AsyncClient(headers={"x-from-client": "yes"}) as http:
            got = await collect(server.url, 1, client=http)
            assert not http.is_closed
            left = time.monotonic()
            closed = await server.wait_closed(0)  # the stream's connection, though
        assert server.requests[0].header("x-from-client") == "yes"
    assert [event.data for event in got] == ["a"]
    assert closed - left < 0.5


async def test_backoff_grows_is_bounded_and_starts_over_after_an_event() -> None:
    retry, max_retry, failures = 0.02, 0.5, 10
    script = [status(500)] * failures
    script += [sse(b"id: 1\ndata: a\n\n", end=END), status(500), status(500)]
    script += [sse(b"id: 2\ndata: b\n\n")]
    with script_server(script) as server:
        got = await collect(server.url, 2, timeout=15, retry=retry, max_retry=max_retry)
        gaps = server.gaps()
        requests = server.requests
    assert [event.data for event in got] == ["a", "b"]
    assert len(requests) == failures + 4
    ids = [request.header("last-event-id") for request in requests]
    assert ids == [None] * (failures + 1) + ["1"] * 3

    # Full jitter: the n-th failure in a row waits up to min(max_retry, retry * 2**n).
    for n, gap in enumerate(gaps[:failures], 1):
        assert gap <= min(max_retry, retry * 2**n) + TOL, (n, gaps)
    # It grew: a flat 20 ms would sum to ~0.15 s; six draws from [0, 0.5 s] fall below
    # 0.35 s with probability 1.6e-4.
    assert sum(gaps[failures - 6 : failures]) > 0.35, gaps

    # An event resets it: the end after it waits the retry delay, failures start over.
    after_event, first_failure, second_failure = gaps[failures:]
    assert retry - EPS <= after_event <= retry + TOL, gaps
    assert first_failure <= 2 * retry + TOL, gaps
    assert second_failure <= 4 * retry + TOL, gaps
    assert after_event + first_failure + second_failure <= 7 * retry + TOL, gaps


async def test_backoff_while_refused_is_bounded_by_max_retry() -> None:
    port = free_port()
    with script_server([sse(b"data: up\n\n")], port=port, listen=False) as server:
        with anyio.fail_after(WAIT):
            async with client.connect(server.url, retry=0.02, max_retry=0.3) as events:
                async with anyio.create_task_group() as tg:

                    async def open_later() -> None:
                        await anyio.sleep(1.0)  # refused meanwhile: the backoff reaches its cap
                        server.listen()

                    tg.start_soon(open_later)
                    got = []
                    async for event in events:
                        got.append(event)
                        break
        assert server.listening_at is not None
        waited = server.requests[0].received_at - server.listening_at
    assert [event.data for event in got] == ["up"]
    assert waited <= 0.3 + TOL, waited


# -- stopping for good ---------------------------------------------------------------------


@pytest.mark.parametrize("after_an_event", [False, True])
async def test_204_stops_for_good(after_an_event: bool) -> None:
    no_content = Response(status=204, headers=())
    script = [sse(b"id: 1\ndata: a\n\n", end=END)] if after_an_event else []
    script += [no_content, RETRIED]
    got: list[Any] = []
    with script_server(script) as server:
        with pytest.raises(client.StreamStopped) as stopped:
            await drain(server.url, got, retry=FAST)
        assert stopped.value.status == 204
        assert len(server.requests) == len(script) - 1  # and no reconnect
        if after_an_event:
            assert server.requests[1].header("last-event-id") == "1"
    assert [event.data for event in got] == (["a"] if after_an_event else [])


@pytest.mark.parametrize("code", [400, 401, 403, 404, 410])
async def test_client_errors_stop_for_good(code: int) -> None:
    with script_server([status(code, body=b"no"), RETRIED]) as server:
        started = time.monotonic()
        with pytest.raises(client.StreamStopped) as stopped:
            await drain(server.url, [], retry=FAST)
        assert time.monotonic() - started < 1.0
        assert len(server.requests) == 1
    assert stopped.value.status == code
    assert isinstance(stopped.value.reason, str)


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/json", None])
async def test_a_wrong_content_type_stops_for_good(content_type: str | None) -> None:
    headers = (("content-type", content_type),) if content_type else ()
    with script_server([Response(headers=headers, body=b"data: x\n\n"), RETRIED]) as server:
        got: list[Any] = []
        with pytest.raises(client.StreamStopped) as stopped:
            await drain(server.url, got, retry=FAST)
        assert len(server.requests) == 1
    assert stopped.value.status == 200
    assert got == []


async def test_content_type_parameters_and_case_are_accepted() -> None:
    headers = (("content-type", "Text/Event-Stream; Charset=UTF-8"),)
    with script_server([Response(headers=headers, body=b"data: x\n\n", end=SILENT)]) as server:
        got = await collect(server.url, 1)
    assert [event.data for event in got] == ["x"]


@pytest.mark.parametrize("code", [429, 503])
async def test_retry_after_is_honoured(code: int) -> None:
    script = [status(code, ("retry-after", "1")), sse(b"data: ok\n\n")]
    with script_server(script) as server:
        got = await collect(server.url, 1, retry=0.05)
        gap = server.gap(0)
    assert [event.data for event in got] == ["ok"]
    assert 1.0 - EPS <= gap <= 1.0 + TOL + 0.1, gap


@pytest.mark.parametrize(
    "first",
    [
        status(503, ("retry-after", "999999999")),
        status(429, ("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")),
        sse(b"retry: 99999999999\ndata: a\n\n", end=END),
    ],
    ids=["retry-after-seconds", "retry-after-date", "server-retry"],
)
async def test_no_wait_is_longer_than_max_retry(first: Response) -> None:
    """A server's huge retry: or Retry-After must not park the client for good."""
    with script_server([first, sse(b"data: ok\n\n")]) as server:
        n = 2 if first.status == 200 else 1
        got = await collect(server.url, n, retry=0.05, max_retry=0.3)
        gap = server.gap(0)
    assert got[-1].data == "ok"
    assert gap <= 0.3 + TOL, gap


async def test_408_is_retried() -> None:
    with script_server([status(408), sse(b"data: ok\n\n")]) as server:
        got = await collect(server.url, 1, retry=FAST)
        assert len(server.requests) == 2
    assert [event.data for event in got] == ["ok"]


# -- silence -------------------------------------------------------------------------------


async def test_read_timeout_reconnects_a_silent_connection() -> None:
    timeout, retry = 0.3, 0.05
    heartbeats = [step for _ in range(5) for step in (Pause(0.1), b": hb\n\n")]
    script = [sse(b"id: 1\ndata: a\n\n", *heartbeats), sse(b"id: 2\ndata: b\n\n")]
    with script_server(script) as server:
        got = await collect(server.url, 2, read_timeout=timeout, retry=retry)
        first, second = server.requests
        closed = await server.wait_closed(0)
    assert [event.data for event in got] == ["a", "b"]
    assert second.header("last-event-id") == "1"
    assert first.last_write_at is not None
    # Heartbeats count: 0.5 s of them kept the connection, then 0.3 s of silence ended it.
    assert second.received_at > first.last_write_at
    silence = second.received_at - first.last_write_at
    assert timeout - EPS <= silence <= timeout + retry + TOL, silence
    assert closed <= second.received_at + TOL  # the dead connection was closed, not leaked


async def test_heartbeat_header_sets_the_read_timeout() -> None:
    # x-sse-heartbeat: 0.2 -> 0.5 s of silence means dead; heartbeats every 0.15 s do not.
    heartbeats = [step for _ in range(5) for step in (Pause(0.15), b":\n\n")]
    announce = [("x-sse-heartbeat", "0.2")]
    script = [
        sse(b"id: 1\ndata: a\n\n", *heartbeats, headers=announce),
        sse(b"id: 2\ndata: b\n\n", headers=announce),
    ]
    with script_server(script) as server:
        got = await collect(server.url, 2, retry=0.05)  # no read_timeout given
        first, second = server.requests
    assert [event.data for event in got] == ["a", "b"]
    assert second.header("last-event-id") == "1"
    assert first.last_write_at is not None
    assert second.received_at > first.last_write_at
    silence = second.received_at - first.last_write_at
    assert 0.5 - EPS <= silence <= 0.5 + 0.05 + TOL, silence


# -- leaving and cancelling ----------------------------------------------------------------

CANCEL_POINTS = {
    "reading": [sse(b"data: a\n\n")],  # an event, then silence: cancelled in a read
    "awaiting-head": [Response(status=0, end=SILENT)],  # the response never starts
    "retry-delay": [sse(b"data: a\n\n", end=END)],  # cancelled while waiting 10 s to retry
}


@pytest.mark.parametrize("where", list(CANCEL_POINTS))
async def test_cancellation_closes_the_connection_at_once(where: str) -> None:
    with script_server(CANCEL_POINTS[where]) as server:
        before = live_tasks()
        started = time.monotonic()
        got: list[Any] = []
        with anyio.move_on_after(0.3) as scope:
            async with client.connect(server.url, retry=10.0) as events:
                async for event in events:
                    got.append(event.data)
        left = time.monotonic()
        await no_task_outlives(before)
        assert scope.cancelled_caught
        assert left - started < 0.3 + TOL
        closed = await server.wait_closed(0)
        assert len(server.requests) == 1
    assert closed - left < 0.5
    assert got == ([] if where == "awaiting-head" else ["a"])


async def test_leaving_the_block_closes_the_connection_at_once() -> None:
    heartbeats = [step for _ in range(50) for step in (Pause(0.05), b": hb\n\n")]
    with script_server([sse(b"data: a\n\n", *heartbeats)]) as server:
        before = live_tasks()
        with anyio.fail_after(WAIT):
            async with client.connect(server.url) as events:
                async for _ in events:
                    break
        left = time.monotonic()
        await no_task_outlives(before)
        closed = await server.wait_closed(0)
    assert closed - left < 0.5


# -- the sync twin (no threads of its own) -------------------------------------------------


def test_sync_reconnects_with_last_event_id_after_a_reset() -> None:
    gate = Gate()
    script = [
        sse(b"retry: 100\nid: 1\ndata: a\n\nid: 2\ndata: b\n\n", gate, end=RESET),
        sse(b"id: 3\ndata: c\n\n"),
    ]
    got: list[Any] = []
    with script_server(script) as server:
        threads = set(threading.enumerate())
        with client.connect_sync(server.url, headers={"x-token": "t"}) as events:
            for event in events:
                got.append((event.data, event.id))
                if event.data == "b":
                    gate.open()
                if len(got) == 3:
                    break
            assert events.last_event_id == "3"
            assert events.reconnects == 1
            assert events.retry == pytest.approx(0.1)
        assert set(threading.enumerate()) <= threads
        closed = server.wait_closed_sync(1)
        left = time.monotonic()
        first, second = server.requests
        gap = server.gap(0)
    assert got == [("a", "1"), ("b", "2"), ("c", "3")]
    assert first.header("last-event-id") is None
    assert second.header("last-event-id") == "2"
    assert second.header("x-token") == "t"
    assert 0.1 - EPS <= gap <= 0.1 + TOL, gap
    assert closed - left < 0.5


def test_sync_stops_for_good_on_404() -> None:
    with script_server([status(404), RETRIED]) as server:
        with pytest.raises(client.StreamStopped) as stopped:
            drain_sync(server.url, [], retry=FAST)
        assert len(server.requests) == 1
    assert stopped.value.status == 404


def test_sync_read_timeout_reconnects_a_silent_connection() -> None:
    # (A client that missed the silence is reset after 2 s: it fails, and does not hang.)
    script = [sse(b"id: 1\ndata: a\n\n", hold=2.0), sse(b"id: 2\ndata: b\n\n")]
    got: list[str] = []
    with script_server(script) as server:
        with client.connect_sync(server.url, read_timeout=0.3, retry=0.05) as events:
            for event in events:
                got.append(event.data)
                if len(got) == 2:
                    break
        first, second = server.requests
    assert got == ["a", "b"]
    assert second.header("last-event-id") == "1"
    assert first.last_write_at is not None
    silence = second.received_at - first.last_write_at
    assert 0.3 - EPS <= silence <= 0.3 + 0.05 + TOL, silence


# -- interop: this toolkit's hub, killed mid-stream ----------------------------------------


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis; its keys are deleted after."""
    import redis

    value = f"test-client-{uuid.uuid4().hex}:"
    yield value
    shared = redis.Redis.from_url(redis_url(), socket_timeout=WAIT)
    try:
        keys = list(shared.scan_iter(match=f"{value}*"))
        if keys:
            shared.delete(*keys)
    finally:
        shared.close()


@pytest.mark.redis
async def test_hub_killed_and_restarted_loses_and_repeats_nothing(
    tmp_path: Path, redis_prefix: str
) -> None:
    count, kill_after = 60, 15
    options = ["--allow-publish", "--heartbeat", "0.5", "--log-level", "warning"]
    options += ["--redis-url", redis_url(), "--redis-prefix", redis_prefix]
    with hub_process(tmp_path, *options) as hub:
        url = f"{hub.url}/sse/demo"
        publisher = Publisher(url, count)
        with httpx.Client(timeout=WAIT) as http:
            assert publisher.post(http, "start")
        start_id = publisher.acknowledged[0][0]  # the client resumes after it: nothing missed
        received: list[Any] = []
        problems: list[BaseException] = []

        def kill_and_restart() -> None:
            try:
                until_sync(lambda: len(received) >= kill_after, "no events before the kill", WAIT)
                hub.kill()
                failures = publisher.failures
                until_sync(lambda: publisher.failures >= failures + 3, "no failed POST", WAIT)
                hub.start()
                publisher.finish()  # every numbered event acknowledged, then "end"
            except BaseException as exc:
                problems.append(exc)

        chaos = threading.Thread(target=kill_and_restart, daemon=True)
        publisher.start()
        chaos.start()
        try:
            with anyio.fail_after(30):
                async with client.connect(
                    url, last_event_id=start_id, retry=0.1, max_retry=0.5
                ) as events:
                    async for event in events:
                        received.append(event)
                        if event.data == "end" or problems:
                            break
                    reconnects = events.reconnects
        finally:
            publisher.stop()
            chaos.join(30)
        assert not chaos.is_alive()
        log = hub.log()
    assert not problems, problems
    assert hub.starts == 2
    assert reconnects >= 1
    assert publisher.failures >= 3
    assert not [e for e in received if e.event in (RESET_EVENT, LAGGED_EVENT)], log
    datas = [event.data for event in received]
    assert len(set(datas)) == len(datas), "an event arrived twice"
    assert len({event.id for event in received}) == len(received)
    acknowledged = publisher.acknowledged[1:]  # all but "start"
    assert len(acknowledged) == count + 1
    stored = {data for _, data in acknowledged}
    # Every acknowledged event exactly once, in order, with its id.
    assert [(e.id, e.data) for e in received if e.data in stored] == acknowledged
    # Anything else is an attempt whose POST failed (the hub may have stored it first).
    assert {data for data in datas if data not in stored} <= set(publisher.attempts)


# -- interop: sse-starlette ----------------------------------------------------------------


async def test_sse_starlette_events_arrive_and_its_pings_are_not_events() -> None:
    app, stats = starlette_app(ping=0.05)
    with serve(app) as url:
        got = await collect(f"{url}/events", 4, retry=0.05)
    assert [(e.event, e.data, e.id) for e in got] == [
        ("message", "one", "1"),
        ("custom", "two\nlines", "2"),
        ("message", '{"n": 3}', "3"),
        ("message", "resumed after 3", "4"),
    ]
    assert got[2].json() == {"n": 3}
    assert stats.pings >= 3  # pings went out between "one" and "two"; none became an event
    assert stats.last_event_ids == [None, "3"]


# -- found by an outside review --------------------------------------------------------------


async def test_a_non_ascii_id_is_sent_back_as_utf8() -> None:
    script = [sse("id: café\ndata: a\n\n".encode(), end=END), sse(b"data: b\n\n")]
    with script_server(script) as server:
        got = await collect(server.url, 2, retry=FAST)
        header = server.requests[1].header("last-event-id")
    assert [e.data for e in got] == ["a", "b"]
    assert header is not None and header.encode("latin-1").decode() == "café"


async def test_a_loop_left_by_a_cancellation_can_start_again_where_it_was() -> None:
    script = [sse(b"id: 1\ndata: a\n\n", Pause(0.5), b"id: 2\ndata: b\n\n")]
    with script_server(script) as server:
        async with client.connect(server.url, retry=FAST) as events:
            with anyio.move_on_after(0.2):  # (cancelled while b is not yet there)
                async for event in events:
                    assert event.data == "a"
            with anyio.fail_after(WAIT):
                async for event in events:  # a new loop: resumes, not silently empty
                    assert event.data in ("a", "b")
                    if event.data == "b":
                        break
        assert events.last_event_id == "2"
        assert server.requests[-1].header("last-event-id") in ("1", None)


@pytest.mark.parametrize("header", ["\u00b2", "-1", "1e9999", "soon"])
async def test_a_garbled_retry_after_is_a_reconnect_not_a_crash(header: str) -> None:
    script = [status(503, ("retry-after", header)), sse(b"data: ok\n\n")]
    with script_server(script) as server:
        got = await collect(server.url, 1, retry=FAST, max_retry=0.5)
        assert len(server.requests) == 2
    assert [e.data for e in got] == ["ok"]


def test_backoff_never_overflows_and_never_spins() -> None:
    """1,100 failures in a row (hours of outage at the defaults; seconds once a server said
    ``retry: 0``): every delay stays within [0.1 s, max_retry]."""
    policy = client._Policy(
        "http://x", headers=None, last_event_id=None, retry=0.0, max_retry=30.0, read_timeout=None
    )
    policy.failures = 1  # (a connection that worked waits the server's 0 once: then fails)
    delays = [policy.next_delay(None) for _ in range(1100)]
    assert all(0.1 <= delay <= 30.0 for delay in delays), (min(delays), max(delays))
