"""Stopping real servers with open streams: every stream ends cleanly, the process exits 0.

Each server runs `tests/shutdown_app.py` in its own process, as users run it: the runner
(``python -m sse_toolkit run``) on uvicorn (h11; httptools with uvloop; two workers),
hypercorn (asyncio, trio) and granian, and gunicorn with our worker class. 200 streams
of three kinds (a managed channel through `SSEApp`, a standalone `SSEChannel`, an async
generator) are read over raw sockets; then SIGTERM or SIGINT. Every client must see a
last ``retry:`` hint and the terminating chunk (no incomplete chunked body), the process
must exit with status 0 within 2 s, and its log must hold no traceback.

Plain ``uvicorn --timeout-graceful-shutdown 1`` and ``hypercorn --graceful-timeout 1``,
where the server itself cancels the streams: they still end cleanly, and nothing of ours
is in the log (hypercorn's asyncio worker logs a traceback of its own as it cancels).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .raw_streams import PYTHON, RawStream, ServerProcess, free_port, open_streams, wait_ended

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")

APP = "tests.shutdown_app:app"
KINDS = ["/sse/managed", "/standalone", "/generator"]
STREAMS = 200
EXIT_WITHIN = 2.0


def command(server: str, port: int) -> list[str]:
    run = [PYTHON, "-m", "sse_toolkit", "run", APP, "--port", str(port), "--no-access-log"]
    if server == "uvicorn":
        return run
    if server == "uvicorn-httptools-uvloop":
        return [*run, "--http", "httptools", "--loop", "uvloop"]
    if server.endswith("-2-workers"):
        return [*command(server.removesuffix("-2-workers"), port), "--workers", "2"]
    if server.startswith("hypercorn-"):
        return [*run, "--server", "hypercorn", "--loop", server.removeprefix("hypercorn-")]
    if server == "granian":
        return [*run, "--server", "granian"]
    if server == "gunicorn":
        gunicorn = shutil.which("gunicorn") or "gunicorn"
        return [
            gunicorn,
            APP,
            "--worker-class",
            "sse_toolkit.contrib.gunicorn.Worker",
            "--bind",
            f"127.0.0.1:{port}",
        ]
    raise ValueError(server)


SERVERS = [
    "uvicorn",
    "uvicorn-httptools-uvloop",
    "uvicorn-2-workers",
    "hypercorn-asyncio",
    "hypercorn-trio",
    "hypercorn-trio-2-workers",
    "granian",
    "granian-2-workers",
    "gunicorn",
]


async def post(port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    return int(head.split(b" ", 2)[1])


async def until(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@dataclass
class Stopped:
    """What stopping a server with open streams showed."""

    streams: list[RawStream]
    code: int  # the process's exit status
    elapsed: float  # seconds from the signal to the exit
    log: str


def stop_with_open_streams(
    args: list[str], port: int, log: Path, signum: int, count: int, *, one_process: bool
) -> Stopped:
    """Start ``args`` (listening on ``port``), open ``count`` streams, publish one event
    (``one_process``: else each worker has its own standalone channel), send ``signum``."""
    process = ServerProcess(args, log)

    async def scenario() -> tuple[list[RawStream], int, float]:
        paths = [KINDS[i % len(KINDS)] for i in range(count)]
        streams = await open_streams("127.0.0.1", port, paths)
        assert [s.status for s in streams] == [200] * count, [s.error for s in streams][:5]
        if one_process:
            assert await post(port, "/publish") == 202
            await until(lambda: all(s.events for s in streams), 10)
        started = time.monotonic()
        process.signal(signum)
        await wait_ended(streams, 15)
        code = await asyncio.to_thread(process.wait, 15)
        return streams, code, time.monotonic() - started

    try:
        process.wait_listening(port)
        streams, code, elapsed = asyncio.run(scenario())
        return Stopped(streams, code, elapsed, process.log())
    finally:
        process.stop()


def assert_clean(streams: list[RawStream], log: str) -> None:
    for stream in streams:
        assert stream.error is None and stream.complete, (stream.path, stream.error, log[-2000:])
        hint = stream.retry_at_end
        assert hint is not None, (stream.path, stream.body[-200:])
        assert 500 <= hint <= 5500, hint
    assert len({s.retry_at_end for s in streams}) > 1, "the retry hints are not spread"
    assert "Traceback" not in log, log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("server", SERVERS)
def test_every_stream_ends_cleanly_and_the_server_exits_0(
    server: str, signum: int, tmp_path: Path
) -> None:
    port = free_port()
    one_process = not server.endswith("-2-workers")
    stopped = stop_with_open_streams(
        command(server, port), port, tmp_path / "log", signum, STREAMS, one_process=one_process
    )
    assert_clean(stopped.streams, stopped.log)
    if one_process:
        for stream in stopped.streams:
            assert stream.events, stream.path  # what was published before arrived
    assert stopped.code == 0, stopped.log[-3000:]
    assert stopped.elapsed < EXIT_WITHIN, f"{stopped.elapsed:.2f}s: {stopped.log[-2000:]}"


@pytest.mark.soak
def test_a_thousand_streams_end_cleanly_on_the_runner(tmp_path: Path) -> None:
    port = free_port()
    stopped = stop_with_open_streams(
        command("uvicorn", port), port, tmp_path / "log", signal.SIGTERM, 1000, one_process=True
    )
    assert_clean(stopped.streams, stopped.log)
    assert stopped.code == 0, stopped.log[-3000:]
    assert stopped.elapsed < 5.0, f"{stopped.elapsed:.2f}s to exit"


PLAIN = {
    "uvicorn": ["-m", "uvicorn", APP, "--timeout-graceful-shutdown", "1", "--port"],
    "hypercorn-asyncio": ["-m", "hypercorn", APP, "-k", "asyncio", "--graceful-timeout", "1"],
    "hypercorn-trio": ["-m", "hypercorn", APP, "-k", "trio", "--graceful-timeout", "1"],
}


@pytest.mark.parametrize("server", list(PLAIN))
def test_a_plain_server_cancelling_streams_ends_them_cleanly_and_logs_nothing_of_ours(
    server: str, tmp_path: Path
) -> None:
    """The server's own command line, not our runner: it cancels the streams at its
    graceful timeout; each finishes its body with a retry hint as it is cancelled."""
    port = free_port()
    args = [PYTHON, *PLAIN[server]]
    args += [str(port)] if server == "uvicorn" else ["--bind", f"127.0.0.1:{port}"]
    stopped = stop_with_open_streams(
        args, port, tmp_path / "log", signal.SIGTERM, 30, one_process=True
    )
    log = stopped.log
    for stream in stopped.streams:
        assert stream.error is None and stream.complete, (stream.path, stream.error)
        assert stream.retry_at_end is not None, stream.body[-200:]
    assert "sse_toolkit" not in log and "Exception in ASGI application" not in log, log
    if server == "uvicorn":
        assert "Cancel 30 running task(s)" in log  # uvicorn did cancel them itself
        assert stopped.code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after
    else:
        assert stopped.code == 0, log


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_http2_streams_on_hypercorn_end_cleanly(loop: str, tmp_path: Path) -> None:
    """HTTP/2 (cleartext, prior knowledge): several streams on one connection each end
    with a retry hint and a clean end of stream, not a reset."""
    import httpx
    from httpx_sse import aconnect_sse

    port = free_port()
    args = [PYTHON, "-m", "sse_toolkit", "run", APP, "--port", str(port), "--server"]
    process = ServerProcess([*args, "hypercorn", "--loop", loop], tmp_path / "server.log")

    async def read(client: httpx.AsyncClient, path: str, seen: asyncio.Event) -> list[str]:
        lines: list[str] = []
        async with aconnect_sse(client, "GET", f"http://127.0.0.1:{port}{path}") as source:
            assert source.response.http_version == "HTTP/2"
            async for event in source.aiter_sse():
                lines.append(f"{event.event}:{event.data}:{event.retry}")
                seen.set()
        return lines

    async def scenario() -> tuple[list[list[str]], int]:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=15) as client:
            seen = [asyncio.Event() for _ in KINDS]
            readers = [
                asyncio.create_task(read(client, path, event))
                for path, event in zip(KINDS, seen, strict=True)
            ]
            await until(lambda: all(e.is_set() for e in seen[2:]), 10)  # the generator ticks
            await asyncio.sleep(0.1)  # (the channel streams are subscribed by now)
            process.signal(signal.SIGTERM)
            results = await asyncio.wait_for(asyncio.gather(*readers), 15)
        return results, await asyncio.to_thread(process.wait, 15)

    try:
        process.wait_listening(port)
        results, code = asyncio.run(scenario())
        log = process.log()
    finally:
        process.stop()
    for lines in results:
        assert lines and lines[-1].endswith(tuple(f":{n}" for n in range(500, 5501))), lines
    assert code == 0, log
    assert "Traceback" not in log, log
