"""Client-side parsing throughput: sse_toolkit's EventParser against httpx-sse, side by side.

    python benchmarks/bench_client_parser.py            # 7 rounds, ~40 s
    python benchmarks/bench_client_parser.py --quick    # 3 rounds, a tenth of the events, ~4 s

Every timing turns one byte stream, already cut into ``--chunk``-byte pieces (4 KiB, as a
socket read returns them), into a list of events, the whole way from bytes:

* ``sse_toolkit``: ``parser.feed(chunk)`` for each chunk, the lists joined;
* ``httpx-sse``: the pipeline its ``EventSource.iter_sse()`` runs (httpx-sse 0.4.2 and
  later), rebuilt without the HTTP response around it: ``Response.iter_text()`` (httpx's
  ``TextDecoder``, UTF-8 with replacement, and its no-op ``TextChunker``) feeds httpx-sse's
  ``SSELineDecoder`` in its ``_iter_sse_lines`` generator, and ``iter_sse`` strips each
  line's LF and hands it to ``SSEDecoder.decode``, yielding every event it returns;
* ``httpx-sse (LineDecoder)``: the same, but lines split by httpx's own
  ``httpx._decoders.LineDecoder`` (``Response.iter_lines()``), as httpx-sse up to 0.4.1 did.
  It splits on ``str.splitlines()``'s breaks (U+2028 and friends too), wrongly for SSE but
  harmlessly for these streams.

Cases: (a) 100,000 small events (``id``, ``event``, one ``data`` line of compact JSON,
~100 bytes), LF line ends; (b) the same with CRLF line ends; (c) 2,000 events with 10 KiB
of JSON data on one line, so each line spans chunks; (d) 20,000 small events fed one
event per chunk (a client keeping up with a server that flushes every event), which
weighs the cost per chunk rather than per line.

Sides alternate (A B C, then C B A, ...) inside every round, gc is off while timing (as
in timeit), and the table shows each side's best round plus the ratio taken within each
round, median [min - max]. Before timing, each case checks that every side parses the
stream into the same events (data, event, id, retry).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import httpx
import httpx_sse
from _common import CLOCKS, add_clock_option
from httpx._decoders import LineDecoder, TextChunker, TextDecoder
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

import sse_toolkit
from sse_toolkit.frames import encode
from sse_toolkit.parser import EventParser

Parse = Callable[[list[bytes]], list[Any]]


def ours(chunks: list[bytes]) -> list[Any]:
    parser = EventParser()
    feed = parser.feed
    events: list[Any] = []
    for chunk in chunks:
        events += feed(chunk)
    return events


def _iter_text(chunks: Iterable[bytes]) -> Iterator[str]:
    # httpx.Response.iter_text() over iter_bytes(), minus the response.
    decoder = TextDecoder(encoding="utf-8")
    chunker = TextChunker(chunk_size=None)
    for byte_content in chunks:
        text_content = decoder.decode(byte_content)
        for chunk in chunker.decode(text_content):
            yield chunk
    text_content = decoder.flush()
    for chunk in chunker.decode(text_content):
        yield chunk
    for chunk in chunker.flush():
        yield chunk


def _iter_sse_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    # httpx_sse._api._iter_sse_lines (0.4.2+).
    decoder = SSELineDecoder()
    for text in _iter_text(chunks):
        for line in decoder.decode(text):
            yield line
    for line in decoder.flush():
        yield line


def _iter_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    # httpx.Response.iter_lines(), which httpx-sse up to 0.4.1 read.
    decoder = LineDecoder()
    for text in _iter_text(chunks):
        for line in decoder.decode(text):
            yield line
    for line in decoder.flush():
        yield line


def _iter_sse(lines: Iterator[str]) -> Iterator[Any]:
    # httpx_sse.EventSource.iter_sse, minus the content-type check.
    decoder = SSEDecoder()
    for line in lines:
        line = line.rstrip("\n")
        sse = decoder.decode(line)
        if sse is not None:
            yield sse


def theirs(chunks: list[bytes]) -> list[Any]:
    return list(_iter_sse(_iter_sse_lines(chunks)))


def theirs_line_decoder(chunks: list[bytes]) -> list[Any]:
    return list(_iter_sse(_iter_lines(chunks)))


SIDES: list[tuple[str, Parse]] = [
    ("sse_toolkit", ours),
    ("httpx-sse", theirs),
    ("httpx-sse (LineDecoder)", theirs_line_decoder),
]


def small_events(count: int) -> bytes:
    return b"".join(
        encode(
            {"user": "alice", "action": "update", "seq": n, "ok": True, "score": 12.5},
            event="update",
            id=str(n),
        )
        for n in range(count)
    )


def large_events(count: int, size: int = 10 * 1024) -> bytes:
    blob = "x" * (size - 40)
    return b"".join(
        encode({"seq": n, "blob": blob}, event="snapshot", id=str(n)) for n in range(count)
    )


def cases(scale: int, size: int) -> list[tuple[str, list[bytes]]]:
    """(label, chunks) per case: the stream cut into ``size``-byte chunks, but for (d)."""
    small = small_events(100_000 // scale)
    streams = [
        (f"(a) {100_000 // scale:,} small JSON events, LF", small),
        (f"(b) {100_000 // scale:,} small JSON events, CRLF", small.replace(b"\n", b"\r\n")),
        (f"(c) {2_000 // scale:,} events of 10 KiB, LF", large_events(2_000 // scale)),
    ]
    table = [
        (label, [stream[i : i + size] for i in range(0, len(stream), size)])
        for label, stream in streams
    ]
    # A server flushes each event as it is written: a client that keeps up reads them one
    # at a time, so this case weighs the per-chunk cost.
    one_each = [frame + b"\n\n" for frame in small_events(20_000 // scale).split(b"\n\n")[:-1]]
    table.append((f"(d) {20_000 // scale:,} small JSON events, one per chunk", one_each))
    return table


def fields(event: Any) -> tuple[str, str, str, int | None]:
    return (event.data, event.event, event.id, event.retry)


def events_per_second(parse: Parse, chunks: list[bytes], clock: Callable[[], float]) -> float:
    gc.collect()
    gc.disable()
    try:
        start = clock()
        count = len(parse(chunks))
        elapsed = clock() - start
    finally:
        gc.enable()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds per side (best is kept)")
    parser.add_argument("--chunk", type=int, default=4096, help="bytes per fed chunk")
    parser.add_argument("--quick", action="store_true", help="3 rounds, a tenth of the events")
    add_clock_option(parser)
    args = parser.parse_args()
    scale = 1
    if args.quick:
        args.rounds, scale = 3, 10
    clock = CLOCKS[args.clock]

    print(
        f"# bench_client_parser: {args.rounds} rounds per side, {args.chunk:,}-byte chunks; "
        f"best round shown; {args.clock} clock; load average {os.getloadavg()[0]:.2f}\n"
        f"# python {platform.python_version()} ({sys.platform}), nproc {os.cpu_count()}, "
        f"sse_toolkit {sse_toolkit.__version__}, httpx-sse {httpx_sse.__version__}, "
        f"httpx {httpx.__version__}\n"
    )
    table = cases(scale, args.chunk)
    for label, chunks in table:
        expected = [fields(event) for event in ours(chunks)]
        assert expected, label
        for name, parse in SIDES:
            got = [fields(event) for event in parse(chunks)]
            assert got == expected, (label, name)
            events_per_second(parse, chunks, clock)  # warm up

    rates: dict[tuple[str, int], list[float]] = {}
    for round_no in range(args.rounds):
        for label, chunks in table:
            order = list(enumerate(SIDES))
            if round_no % 2:
                order.reverse()  # A B C, C B A, ...: no side always runs first
            for index, (_, parse) in order:
                rates.setdefault((label, index), []).append(events_per_second(parse, chunks, clock))

    print(
        "| case | MB | sse_toolkit `EventParser.feed` | httpx-sse `iter_sse` "
        "| httpx-sse via httpx `LineDecoder` | ours / httpx-sse | ours / LineDecoder |"
    )
    print("|" + "---|" * 7)
    for label, chunks in table:
        size = sum(map(len, chunks))
        best = [max(rates[label, i]) for i in range(len(SIDES))]
        ratios = [
            [a / b for a, b in zip(rates[label, 0], rates[label, i], strict=True)] for i in (1, 2)
        ]
        print(
            f"| {label} | {size / 1e6:.1f} | {best[0]:,.0f} /s | {best[1]:,.0f} /s "
            f"| {best[2]:,.0f} /s | {_spread(ratios[0])} | {_spread(ratios[1])} |"
        )
    print(
        "\nEvents/s = events parsed from bytes per second (best round), one core, gc off "
        "while timing.\nRatios: taken within each round (the sides ran back to back), "
        "median [min - max] over rounds.\n\nGoal: >= 2x httpx-sse."
    )


def _spread(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f}x [{min(ratios):.2f} - {max(ratios):.2f}]"


if __name__ == "__main__":
    main()
