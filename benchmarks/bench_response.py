"""Streaming throughput through the ASGI response: sse_toolkit against sse-starlette.

    python benchmarks/bench_response.py             # 5 rounds, ~30-45 s
    python benchmarks/bench_response.py --quick     # 3 rounds, fewer events, ~10 s
    python benchmarks/bench_response.py --backend asyncio --scenario yield
    python benchmarks/bench_response.py --items dicts   # the generator yields plain dicts

Each run drives one response object with an in-process ASGI ``send`` that only counts:
messages, bytes, and frames (the ``\\n\\n`` terminators in the body bytes, since sse_toolkit
coalesces several frames into one body message). ``receive`` blocks until cancelled, so
no disconnect ever happens. The source is an async generator over ``--events`` events
built before the timer starts, one per library (each library's own ``ServerSentEvent``,
same fields; sse-starlette's with ``sep="\\n"`` so both write the same frame terminator).

Sides:

* ``sse_toolkit``: ``EventStreamResponse(gen(), heartbeat_interval=None)``;
* ``sse-starlette``: ``EventSourceResponse(gen(), ping=0)`` (0 disables its ping task, the
  counterpart of ``heartbeat_interval=None``); no ``data_sender_callable``, no
  ``send_timeout`` (its default);
* ``bare loop``: the least any response must do: ``async for frame in gen(): await
  send(body message)``, over the same generator yielding pre-encoded ``bytes``.

Scenarios:

* ``burst``: the generator never yields to the event loop; everything is ready at once,
  so coalescing can send huge batches (the best case for sse_toolkit);
* ``yield``: the generator awaits ``anyio.sleep(0)`` after every event, so the sender gets
  to run between events and there is little to coalesce;
* ``slow-send``: ``send`` awaits ``anyio.sleep(0)`` before counting, like a socket write
  that lets the loop run; the generator does not yield.

Sides alternate (A B C, then C B A, ...) inside every round; the table shows each side's
best round. Every run checks that exactly ``--events`` frames arrived and the body ended.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import anyio
import sse_starlette
from _common import CLOCKS, add_clock_option
from sse_starlette.sse import EventSourceResponse
from sse_starlette.sse import ServerSentEvent as StarletteEvent

import sse_toolkit
from sse_toolkit import EventStreamResponse, ServerSentEvent

SIDES = ("sse_toolkit", "sse-starlette", "bare loop")
clock = CLOCKS["wall"]
SCENARIOS = ("burst", "yield", "slow-send")
SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.4"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/events",
    "raw_path": b"/events",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"accept", b"text/event-stream")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}


class CountingSend:
    """An ASGI ``send`` that counts body messages, bytes and frame terminators."""

    def __init__(self, slow: bool) -> None:
        self.slow = slow
        self.messages = 0
        self.bytes = 0
        self.frames = 0
        self.started = False
        self.finished = False

    async def __call__(self, message: dict[str, Any]) -> None:
        if self.slow:
            await anyio.sleep(0)  # noqa: ASYNC115 (the brief's model of a socket write)
        if message["type"] == "http.response.start":
            self.started = True
            return
        body = message.get("body", b"")
        self.messages += 1
        self.bytes += len(body)
        # (sse-starlette ends a frame built from a dict with its default CRLF separator)
        self.frames += body.count(b"\r\n\r\n") or body.count(b"\n\n")
        if not message.get("more_body", False):
            self.finished = True


async def receive() -> dict[str, Any]:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def source(items: Sequence[Any], pause: bool) -> AsyncIterator[Any]:
    if pause:
        for item in items:
            yield item
            await anyio.sleep(0)  # noqa: ASYNC115 (what user code writes)
    else:
        for item in items:
            yield item


def build_items(side: str, events: int, kind: str = "events") -> list[Any]:
    """The side's pre-built items: ~60-byte frames with event, id and data; with ``kind``
    "dicts", both libraries get the same plain dicts of those fields (each encodes them as
    it streams) and the bare loop still its pre-encoded bytes."""
    if kind == "dicts" and side != "bare loop":
        return [
            {"data": f"payload number {i}", "event": "tick", "id": str(i)} for i in range(events)
        ]
    if side == "sse_toolkit":
        return [
            ServerSentEvent(f"payload number {i}", event="tick", id=str(i)) for i in range(events)
        ]
    if side == "sse-starlette":
        return [
            StarletteEvent(f"payload number {i}", event="tick", id=str(i), sep="\n")
            for i in range(events)
        ]
    return [
        ServerSentEvent(f"payload number {i}", event="tick", id=str(i)).encode()
        for i in range(events)
    ]


async def bare_loop(content: AsyncIterator[bytes], send: CountingSend) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    async for frame in content:
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def run_once(side: str, scenario: str, items: Sequence[Any]) -> tuple[float, CountingSend]:
    send = CountingSend(slow=scenario == "slow-send")
    content = source(items, pause=scenario == "yield")
    call: Callable[[], Any]
    if side == "sse_toolkit":
        ours = EventStreamResponse(content, heartbeat_interval=None)
        call = lambda: ours(SCOPE, receive, send)  # noqa: E731
    elif side == "sse-starlette":
        theirs = EventSourceResponse(content, ping=0)
        call = lambda: theirs(SCOPE, receive, send)  # noqa: E731
    else:
        call = lambda: bare_loop(content, send)  # noqa: E731
    gc.collect()
    started = clock()
    await call()
    elapsed = clock() - started
    return elapsed, send


def measure(side: str, scenario: str, backend: str, items: Sequence[Any]) -> float:
    elapsed, send = anyio.run(run_once, side, scenario, items, backend=backend)
    assert send.started, (side, scenario, backend)
    assert send.finished, (side, scenario, backend)
    assert send.frames == len(items), (side, scenario, backend, send.frames)
    return len(items) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per side (best is kept)")
    parser.add_argument("--events", type=int, default=20_000, help="events per run")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 5,000 events")
    parser.add_argument(
        "--backend", choices=("asyncio", "trio", "both"), default="both", help="event loop"
    )
    parser.add_argument(
        "--scenario", choices=(*SCENARIOS, "all"), default="all", help="which scenario"
    )
    parser.add_argument(
        "--items",
        choices=("events", "dicts"),
        default="events",
        help="what the generator yields: each library's own event objects, or plain dicts",
    )
    add_clock_option(parser)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.events = 3, 5_000
    global clock
    clock = CLOCKS[args.clock]
    backends = ("asyncio", "trio") if args.backend == "both" else (args.backend,)
    scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)

    print(
        f"# bench_response: {args.rounds} rounds x {args.events:,} events per side; "
        f"{args.items}; best round shown; {args.clock} clock; "
        f"load average {os.getloadavg()[0]:.2f}\n"
        f"# python {platform.python_version()} ({sys.platform}), nproc {os.cpu_count()}, "
        f"sse_toolkit {sse_toolkit.__version__}, sse-starlette {sse_starlette.__version__}, "
        f"anyio {version('anyio')}, trio {version('trio')}\n"
    )
    items = {side: build_items(side, args.events, args.items) for side in SIDES}
    combos = [(backend, scenario) for backend in backends for scenario in scenarios]
    for backend, scenario in combos:  # warm up every path once
        for side in SIDES:
            measure(side, scenario, backend, items[side][: args.events // 10])

    rates: dict[tuple[str, str, str], list[float]] = {}
    started = time.perf_counter()
    for round_no in range(args.rounds):
        for backend, scenario in combos:
            order = list(SIDES) if round_no % 2 == 0 else list(reversed(SIDES))
            for side in order:
                rate = measure(side, scenario, backend, items[side])
                rates.setdefault((backend, scenario, side), []).append(rate)

    print(
        "| loop | scenario | sse_toolkit | sse-starlette | bare loop "
        "| toolkit / starlette | toolkit / bare loop | starlette / bare loop |"
    )
    print("|" + "---|" * 8)
    for backend, scenario in combos:
        ours, theirs, bare = (max(rates[backend, scenario, side]) for side in SIDES)
        print(
            f"| {backend} | {scenario} | {ours:,.0f} ev/s | {theirs:,.0f} ev/s "
            f"| {bare:,.0f} ev/s | {ours / theirs:.2f}x | {ours / bare:.2f}x "
            f"| {theirs / bare:.2f}x |"
        )
    print(
        "\nSame ratios taken within each round (the sides ran back to back), "
        "median [min - max] over rounds: a check on the best-round ratios above.\n"
    )
    print("| loop | scenario | toolkit / starlette | toolkit / bare loop |")
    print("|" + "---|" * 4)
    for backend, scenario in combos:
        ours, theirs, bare = (rates[backend, scenario, side] for side in SIDES)
        vs_theirs = [a / b for a, b in zip(ours, theirs, strict=True)]
        vs_bare = [a / b for a, b in zip(ours, bare, strict=True)]
        print(f"| {backend} | {scenario} | {_spread(vs_theirs)} | {_spread(vs_bare)} |")
    print(
        f"\nTimed runs took {time.perf_counter() - started:.1f} s; "
        f"load average now {os.getloadavg()[0]:.2f}. "
        "Goals (issue): toolkit >= 5x sse-starlette and >= 0.5x the bare loop."
    )


def _spread(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f}x [{min(ratios):.2f} - {max(ratios):.2f}]"


if __name__ == "__main__":
    main()
