"""Metrics overhead on the hot path (issue 12): metrics on against metrics off.

    python benchmarks/bench_metrics.py              # 9 alternated rounds, ~1 min
    python benchmarks/bench_metrics.py --quick      # 3 rounds

Two cases, each run with metrics off and on, alternated (off on, on off, ...) in every
round; the table shows the median per operation and the overhead of the medians, plus the
median [min - max] of the in-round ratios (a noisy neighbour hurts those less).

* ``publish``: ``channel.broadcast_nowait(event)`` on a channel with one parked listener:
  "on" is a channel whose publish times are recorded (a metrics stream asked for them:
  `Listener.batch_published_at`), "off" one that never was asked.
* ``delivery batch``: what `SSEApp` runs per subscriber: `EventStreamResponse` over a
  channel listener with ``send_timeout=30`` (so the watched send path) and an in-process
  ASGI ``send`` that only counts; ``--streams`` streams, each event published once every
  stream has sent the previous one (so one event per batch, one batch per stream and
  event). "on": ``observer=Metrics().observer([channel])`` as ``SSEApp(metrics=True)``
  gives each stream (bytes counted, close reason, the publish-to-write histogram); "off":
  no observer (bytes and the close reason are still counted: they are unconditional).

Time is process CPU time by default (``--clock wall`` for perf_counter).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import anyio
import anyio.lowlevel
from _common import CLOCKS

import sse_toolkit
from sse_toolkit import EventStreamResponse, ServerSentEvent, SSEChannel
from sse_toolkit.metrics import DEFAULT_LATENCY_INTERVAL, Metrics

clock: Callable[[], float] = CLOCKS["cpu"]
INTERVAL = [DEFAULT_LATENCY_INTERVAL]
OBSERVED: list[float] = []  # the share of batches whose latency was observed, per run
SCOPE: dict[str, Any] = {"type": "http", "method": "GET", "path": "/c", "headers": []}


# -- publish -------------------------------------------------------------------------------


async def publish_once(metrics: bool, events: int) -> float:
    channel = SSEChannel("bench", capacity=1024)
    listener = channel.listen()
    if metrics:
        listener.batch_published_at()  # what a metrics stream's first batch does
    items = [ServerSentEvent(f"payload number {i}", event="tick") for i in range(events)]
    publish = channel.broadcast_nowait
    gc.collect()
    gc.disable()
    try:
        started = clock()
        for item in items:
            publish(item)
        elapsed = clock() - started
    finally:
        gc.enable()
    listener.close()
    return elapsed / events


# -- delivery batch ------------------------------------------------------------------------


async def never() -> dict[str, Any]:
    await anyio.sleep_forever()
    raise AssertionError


async def delivery_once(metrics: bool, streams: int, events: int) -> float:
    channel = SSEChannel("bench", capacity=1024)
    registry = Metrics(latency_interval=INTERVAL[0]) if metrics else None
    sent = 0
    all_sent = anyio.Event()
    target = 0

    async def send(message: Any) -> None:
        nonlocal sent, all_sent
        if message.get("more_body"):
            sent += 1
            if sent == target:
                all_sent.set()

    async def stream() -> None:
        listener = channel.listen()
        observer = registry.observer([channel]) if registry is not None else None
        response = EventStreamResponse(
            listener, heartbeat_interval=None, send_timeout=30.0, observer=observer
        )
        await response(SCOPE, never, send)

    items = [ServerSentEvent(f"payload number {i}", event="tick") for i in range(events + 1)]
    async with anyio.create_task_group() as tg:
        for _ in range(streams):
            tg.start_soon(stream)
        while channel.subscriber_count < streams:
            await anyio.lowlevel.checkpoint()
        # A first event, untimed: each stream's first batch (the channel starts recording
        # publish times when a metrics stream asks).
        target = streams
        channel.broadcast_nowait(items[0])
        await all_sent.wait()
        gc.collect()
        gc.disable()
        try:
            started = clock()
            for item in items[1:]:
                target += streams
                all_sent = anyio.Event()
                channel.broadcast_nowait(item)
                await all_sent.wait()
            elapsed = clock() - started
        finally:
            gc.enable()
        if registry is not None:
            observed = sum(registry.latency.counts)
            assert 0 < observed <= streams * events, observed
            OBSERVED.append(observed / (streams * events))
        tg.cancel_scope.cancel()
    return elapsed / (streams * events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    parser.add_argument("--streams", type=int, default=100, help="delivery: streams")
    parser.add_argument("--events", type=int, default=300, help="delivery: events")
    parser.add_argument("--publishes", type=int, default=200_000, help="publish: calls")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="cpu")
    parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_LATENCY_INTERVAL,
        help="Metrics(latency_interval=...): 0 observes every batch",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds = 3
    global clock
    clock = CLOCKS[args.clock]
    INTERVAL[0] = args.interval
    cases: dict[str, Callable[[bool], float]] = {
        "publish (one broadcast_nowait)": lambda on: anyio.run(
            publish_once, on, args.publishes, backend=args.backend
        ),
        f"delivery batch (1 event, {args.streams} streams)": lambda on: anyio.run(
            delivery_once, on, args.streams, args.events, backend=args.backend
        ),
    }
    print(
        f"# bench_metrics: {args.rounds} rounds, metrics off/on alternated; {args.clock} clock;"
        f" {args.backend}; load average {os.getloadavg()[0]:.2f}\n"
        f"# python {platform.python_version()} ({sys.platform}), nproc {os.cpu_count()},"
        f" sse_toolkit {sse_toolkit.__version__}; latency_interval {args.interval} s\n"
    )
    for case in cases.values():  # warm up
        case(False)
        case(True)
    print("| case | metrics off (median) | metrics on (median) | overhead | in-round on/off |")
    print("|---|---|---|---|---|")
    for name, case in cases.items():
        off: list[float] = []
        on: list[float] = []
        for round_no in range(args.rounds):
            order = (False, True) if round_no % 2 == 0 else (True, False)
            for flag in order:
                (on if flag else off).append(case(flag))
        ratios = [b / a for a, b in zip(off, on, strict=True)]
        m_off, m_on = statistics.median(off), statistics.median(on)
        print(
            f"| {name} | {m_off * 1e9:,.0f} ns | {m_on * 1e9:,.0f} ns "
            f"| {(m_on / m_off - 1) * 100:+.1f}% | {statistics.median(ratios):.3f}x "
            f"[{min(ratios):.3f} - {max(ratios):.3f}] |"
        )
    if OBSERVED:
        print(
            f"\nDelivery batches whose latency was observed (metrics on): median"
            f" {statistics.median(OBSERVED):.1%} of them."
        )


if __name__ == "__main__":
    main()
