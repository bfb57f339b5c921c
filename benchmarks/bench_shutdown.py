"""How long a server takes to stop with N open streams, and how the streams end.

    python benchmarks/bench_shutdown.py [--streams 1000 5000] [--rounds 2]

For each N, every side serves N idle streams (read over raw sockets by this process),
then gets SIGTERM; measured: seconds from the signal to the process's exit, and how many
streams ended cleanly (the terminating chunk arrived), how many of those carried a last
``retry:`` hint, and how many were cut (EOF or reset mid-body: curl's error 18).

Sides, alternated in every round:
- ``runner``: ``python -m sse_toolkit run`` (uvicorn) serving sse_toolkit's response;
- ``uvicorn``: plain ``uvicorn --timeout-graceful-shutdown 10`` serving the same app
  (uvicorn waits, then cancels: the response finishes its body as it is cancelled);
- ``sse-starlette``: plain uvicorn (same timeout) serving sse-starlette's
  `EventSourceResponse` (which watches uvicorn's exit flag itself).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.raw_streams import (
    PYTHON,
    ServerProcess,
    free_port,
    open_streams,
    wait_ended,
)

SIDES = {
    "runner": lambda port: [
        *(PYTHON, "-m", "sse_toolkit", "run", "benchmarks.shutdown_apps:ours"),
        *("--port", str(port), "--no-access-log", "--log-level", "warning"),
    ],
    "uvicorn": lambda port: [
        *(PYTHON, "-m", "uvicorn", "benchmarks.shutdown_apps:ours", "--port", str(port)),
        *("--timeout-graceful-shutdown", "10", "--no-access-log", "--log-level", "warning"),
    ],
    "sse-starlette": lambda port: [
        *(PYTHON, "-m", "uvicorn", "benchmarks.shutdown_apps:starlette", "--port", str(port)),
        *("--timeout-graceful-shutdown", "10", "--no-access-log", "--log-level", "warning"),
    ],
}


def measure(side: str, streams: int, log_dir: Path) -> dict[str, float]:
    port = free_port()
    process = ServerProcess(SIDES[side](port), log_dir / f"{side}-{streams}.log")
    try:
        process.wait_listening(port)

        async def scenario() -> dict[str, float]:
            opened = await open_streams("127.0.0.1", port, ["/"] * streams)
            assert all(s.status == 200 for s in opened)
            started = time.monotonic()
            process.signal(signal.SIGTERM)
            code = await asyncio.to_thread(process.wait, 60)
            exited = time.monotonic() - started
            await wait_ended(opened, 30)
            clean = [s for s in opened if s.complete and s.error is None]
            return {
                "exit_s": exited,
                "clean": len(clean),
                "retry": sum(1 for s in clean if s.retry_at_end is not None),
                "cut": streams - len(clean),
                "status": code,
            }

        return asyncio.run(scenario())
    finally:
        process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--logs", type=Path, default=Path("/tmp/bench_shutdown"))
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    columns = "exit after SIGTERM (median s) | ended cleanly | with retry hint | cut | exit status"
    print(f"| streams | side | {columns} |")
    print("|---|---|---|---|---|---|---|")
    for streams in args.streams:
        results: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
        order = list(SIDES)
        for round_ in range(args.rounds):
            for side in order if round_ % 2 == 0 else reversed(order):
                results[side].append(measure(side, streams, args.logs))
        for side, runs in results.items():
            exit_s = statistics.median(r["exit_s"] for r in runs)
            worst = min(runs, key=lambda r: r["clean"])
            print(
                f"| {streams:,} | {side} | {exit_s:.2f} | {int(worst['clean']):,} |"
                f" {int(worst['retry']):,} | {int(worst['cut']):,} |"
                f" {sorted({int(r['status']) for r in runs})} |"
            )


if __name__ == "__main__":
    main()
