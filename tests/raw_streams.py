"""Many event-stream clients at once over raw sockets, and a server process to stop.

httpx holds a thread or a connection pool per client; hundreds of streams read at once are
cheaper as plain asyncio connections that speak just enough HTTP/1.1: send a GET, read
the head, de-chunk the body, and tell a clean end (the last chunk, ``0\\r\\n\\r\\n``) from a
stream cut short (EOF or a reset inside the body, which browsers and curl report as an
error: curl's exit 18).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from .sse_parser import parse

ROOT = Path(__file__).resolve().parent.parent
RETRY_AT_END = re.compile(rb"retry: (\d+)\n\n$")


@dataclass
class RawStream:
    path: str
    status: int = 0
    head: bytes = b""
    body: bytes = b""
    complete: bool = False  # the terminating chunk arrived
    error: str | None = None
    first_byte: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def events(self) -> list[str]:
        return [event.data for event in parse(self.body).events]

    @property
    def retry_at_end(self) -> int | None:
        match = RETRY_AT_END.search(self.body)
        return int(match.group(1)) if match else None

    async def run(self, host: str, port: int) -> None:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            self.error = f"connect: {exc}"
            self.first_byte.set()
            return
        try:
            writer.write(
                f"GET {self.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "Accept: text/event-stream\r\n\r\n".encode()
            )
            self.head = await reader.readuntil(b"\r\n\r\n")
            self.status = int(self.head.split(b" ", 2)[1])
            self.first_byte.set()
            if b"transfer-encoding: chunked" not in self.head.lower():
                self.body = await reader.read()
                self.complete = True
                return
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    self.complete = True
                    return
                self.body += chunk[:-2]
        except (asyncio.IncompleteReadError, OSError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.first_byte.set()
            writer.close()


async def open_streams(host: str, port: int, paths: list[str]) -> list[RawStream]:
    """Open one stream per path; return once every one has its response head."""
    streams = [RawStream(path) for path in paths]
    for stream in streams:
        stream.task = asyncio.create_task(stream.run(host, port))
    await asyncio.wait_for(asyncio.gather(*(s.first_byte.wait() for s in streams)), 30)
    return streams


async def wait_ended(streams: list[RawStream], timeout: float) -> None:
    tasks = [s.task for s in streams if s.task is not None]
    await asyncio.wait_for(asyncio.gather(*tasks), timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A server command line in its own process, its output collected in a file."""

    def __init__(
        self,
        args: list[str],
        log: Path,
        *,
        env: dict[str, str] | None = None,
        rlimit_nofile: tuple[int, int] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.args = args
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,  # a signal to the test's group does not reach it
            preexec_fn=None if rlimit_nofile is None else lambda: _limit_files(rlimit_nofile),
        )

    def wait_listening(self, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited ({self.proc.returncode}): {self.log()}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError(f"the server did not listen on {port}: {self.log()}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Make sure nothing is left running (the whole session: workers too)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()


def _limit_files(limits: tuple[int, int]) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


PYTHON = sys.executable


@dataclass
class SignalledStop:
    """What `stop_one_stream` saw: the stream, the process's exit status and its log."""

    stream: RawStream
    code: int
    log: str


def stop_one_stream(
    process: ServerProcess,
    port: int,
    path: str,
    signum: int,
    *,
    before: Callable[[RawStream], Awaitable[None]] | None = None,
    timeout: float = 10.0,
) -> SignalledStop:
    """Open one stream on ``path``, run ``before(stream)``, send ``signum``; wait for the
    stream to end and the process to exit (the process is stopped in any case)."""

    async def scenario() -> tuple[RawStream, int]:
        (stream,) = await open_streams("127.0.0.1", port, [path])
        if before is not None:
            await before(stream)
        process.signal(signum)
        await wait_ended([stream], timeout)
        return stream, await asyncio.to_thread(process.wait, timeout)

    try:
        process.wait_listening(port)
        stream, code = asyncio.run(scenario())
        return SignalledStop(stream, code, process.log())
    finally:
        process.stop()
