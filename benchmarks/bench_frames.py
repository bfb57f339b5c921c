"""Frame encoding throughput: sse_toolkit against sse-starlette, side by side.

    python benchmarks/bench_frames.py            # 11 rounds, ~10-20 s
    python benchmarks/bench_frames.py --quick    # 3 rounds, fewer frames, ~3 s

Every timing builds *and* encodes one event per iteration, the way a server meets each
event once: ``ServerSentEvent(...).encode()`` (sse_toolkit encodes at construction and
caches), ``encode(...)`` (sse_toolkit's function form) and sse-starlette's
``ServerSentEvent(data=..., event=..., id=...).encode()``. sse-starlette does not encode JSON,
so its dict case pays for ``json.dumps`` with the arguments its own ``JSONServerSentEvent``
uses (compact separators, ``ensure_ascii=False``): the same JSON text sse_toolkit writes.

The machine is noisy, so the sides alternate (A B C, then C B A, ...) inside every round
and the table reports each side's best round. Before timing, each case checks that both
libraries' frames parse into the same event.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import sse_starlette
from _common import CLOCKS, add_clock_option
from sse_starlette.sse import ServerSentEvent as StarletteEvent

import sse_toolkit
from sse_toolkit import ServerSentEvent, encode

Encoder = Callable[[], bytes]

PAYLOAD: dict[str, Any] = {
    "user": "alice",
    "action": "login",
    "count": 3,
    "ok": True,
    "tags": ["a", "b"],
    "score": 12.5,
}
LINES5 = "first line\nsecond line\nthird line\nfourth line\nfifth line"


def _starlette_json(value: Any) -> str:
    # What sse_starlette.JSONServerSentEvent does (minus allow_nan/indent, which are defaults
    # or do not change the text here).
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def cases() -> list[tuple[str, Encoder, Encoder, Encoder]]:
    """(label, sse_toolkit event, sse_toolkit encode(), sse-starlette) per case."""
    payload = PAYLOAD
    return [
        (
            "(a) small str, event + id",
            lambda: ServerSentEvent("hello world", event="message", id="42").encode(),
            lambda: encode("hello world", event="message", id="42"),
            lambda: StarletteEvent(data="hello world", event="message", id="42").encode(),
        ),
        (
            "(b) dict (JSON), event + id [*]",
            lambda: ServerSentEvent(payload, event="update", id="43").encode(),
            lambda: encode(payload, event="update", id="43"),
            lambda: StarletteEvent(data=_starlette_json(payload), event="update", id="43").encode(),
        ),
        (
            "(c) 5-line str data",
            lambda: ServerSentEvent(LINES5).encode(),
            lambda: encode(LINES5),
            lambda: StarletteEvent(data=LINES5).encode(),
        ),
    ]


def parse(frame: bytes) -> dict[str, Any]:
    """A minimal WHATWG parse of one frame: field name -> value (data lines as a list)."""
    text = frame.decode("utf-8")
    assert text.endswith(("\n\n", "\r\n\r\n")), frame
    fields: dict[str, Any] = {"data": []}
    for line in re.split(r"\r\n|\r|\n", text):
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            fields["data"].append(value)
        else:
            fields[name] = value
    return fields


def frames_per_second(fn: Encoder, number: int, clock: Callable[[], float]) -> float:
    gc.collect()
    return number / timeit.Timer(fn, timer=clock).timeit(number)  # gc is off while timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=11, help="rounds per side (best is kept)")
    parser.add_argument("--number", type=int, default=20_000, help="frames per timing")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 10,000 frames")
    add_clock_option(parser)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.number = 3, 10_000
    clock = CLOCKS[args.clock]

    print(
        f"# bench_frames: {args.rounds} rounds x {args.number:,} frames per side; "
        f"best round shown; {args.clock} clock; load average {os.getloadavg()[0]:.2f}\n"
        f"# python {platform.python_version()} ({sys.platform}), nproc {os.cpu_count()}, "
        f"sse_toolkit {sse_toolkit.__version__}, sse-starlette {sse_starlette.__version__}\n"
    )
    table = cases()
    for label, ours_event, ours_encode, theirs in table:
        a, b, c = parse(ours_event()), parse(ours_encode()), parse(theirs())
        assert a == b == c, (label, a, b, c)
        for fn in (ours_event, ours_encode, theirs):  # warm up
            frames_per_second(fn, args.number // 10, clock)

    rates: dict[tuple[str, int], list[float]] = {}
    for round_no in range(args.rounds):
        for label, *sides in table:
            order = list(enumerate(sides))
            if round_no % 2:
                order.reverse()  # A B C, C B A, ...: no side always runs first
            for index, fn in order:
                rate = frames_per_second(fn, args.number, clock)
                rates.setdefault((label, index), []).append(rate)

    header = (
        "| case | sse_toolkit `ServerSentEvent(...).encode()` | sse_toolkit `encode(...)` "
        "| sse-starlette `ServerSentEvent(...).encode()` | event / starlette "
        "| encode() / starlette |"
    )
    print(header)
    print("|" + "---|" * 6)
    for label, *_ in table:
        ours_event, ours_encode, theirs = (max(rates[label, i]) for i in range(3))
        print(
            f"| {label} | {ours_event:,.0f} /s | {ours_encode:,.0f} /s | {theirs:,.0f} /s "
            f"| {ours_event / theirs:.2f}x | {ours_encode / theirs:.2f}x |"
        )
    print(
        "\n[*] sse-starlette does not encode JSON: its column includes "
        "json.dumps(payload, ensure_ascii=False, separators=(',', ':')), the call its "
        "JSONServerSentEvent makes (same JSON text sse_toolkit writes).\n"
        "Frames/s = events built and encoded per second, one core, gc off while timing.\n"
        "\nSame ratios taken within each round (the sides ran back to back), "
        "median [min - max] over rounds: a check on the best-round ratios above.\n"
    )
    print("| case | event / starlette | encode() / starlette |")
    print("|" + "---|" * 3)
    for label, *_ in table:
        ours_event, ours_encode, theirs = (rates[label, i] for i in range(3))
        event_ratios = [a / b for a, b in zip(ours_event, theirs, strict=True)]
        encode_ratios = [a / b for a, b in zip(ours_encode, theirs, strict=True)]
        print(f"| {label} | {_spread(event_ratios)} | {_spread(encode_ratios)} |")
    print("\nGoal (issue): >= 4x sse-starlette.")


def _spread(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f}x [{min(ratios):.2f} - {max(ratios):.2f}]"


if __name__ == "__main__":
    main()
