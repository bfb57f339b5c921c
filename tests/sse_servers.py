"""Servers for the SSE client's tests, and the harness around them.

* `ScriptServer` (`script_server`): a raw HTTP/1.1 server on 127.0.0.1, asyncio in a thread
  of the test process, that answers each request with the test's script (`Response`): any
  status line and headers, then body bytes written whole, one byte at a time or cut at
  random, with pauses and gates between them, then a clean end (the last chunk), a FIN, a
  reset (RST: ``SO_LINGER`` 0) or silence with the socket kept open (a half-open
  connection, as when a laptop leaves its network). It records each connection and each
  request (headers, body, timings) so that tests check ``Last-Event-ID`` and retry delays
  on the server's own clock, and waits on conditions with bounded timeouts.
* `HubProcess`: the hub command (``python -m sse_toolkit``) on a fixed port, which a test
  may SIGKILL and start again there; `Publisher` POSTs numbered events to it from a
  thread, retrying while it is down, and records the acknowledged ones.
* `starlette_app`: sse-starlette's ``EventSourceResponse`` with fast pings, to serve with
  tests/servers.py's ``serve``.

Everything is bounded: connections per server, every wait (`WAIT`), silences (`HOLD`),
every thread join.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

WAIT = 5.0  # bound on any wait for a condition
MAX_HEAD = 64 * 1024

# How body bytes are cut into writes (each one its own chunk under chunked framing).
WHOLE = "whole"
BYTES = "bytes"  # one byte per write: every possible split point
RANDOM = "random"  # random sizes, 1 byte to 8 KiB (a third at most), from the seed
SPLITS = (WHOLE, BYTES, RANDOM)

# How a response ends once its body is written.
END = "end"  # the framing's clean end: the last chunk (connection kept alive), or a FIN
FIN = "fin"  # close the socket (a FIN) without ending the framing: a chunked body cut short
RESET = "reset"  # close with SO_LINGER 0: the peer sees a reset (RST)
SILENT = "silent"  # write nothing more, keep the socket open until the client leaves
HOLD = 10.0  # ...or for this long at most (then a reset, recorded: `Connection.held_out`)

SSE_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
)


def now() -> float:
    return time.monotonic()


# -- waiting on conditions -----------------------------------------------------------------


async def until(predicate: Callable[[], bool], message: Any, timeout: float = WAIT) -> None:
    """Wait until ``predicate()`` holds (asyncio or trio); fail after ``timeout``."""
    deadline = now() + timeout
    while not predicate():
        if now() > deadline:
            raise AssertionError(message() if callable(message) else message)
        await anyio.sleep(0.005)


def until_sync(predicate: Callable[[], bool], message: Any, timeout: float = WAIT) -> None:
    deadline = now() + timeout
    while not predicate():
        if now() > deadline:
            raise AssertionError(message() if callable(message) else message)
        time.sleep(0.005)


def live_tasks() -> set[Any]:
    """The running tasks of the current event loop (asyncio or trio)."""
    import sniffio

    if sniffio.current_async_library() == "trio":
        import trio

        tasks: set[Any] = set()
        todo = [trio.lowlevel.current_root_task()]
        while todo:
            task = todo.pop()
            if task is None:
                continue
            tasks.add(task)
            for nursery in task.child_nurseries:
                todo.extend(nursery.child_tasks)
        return tasks
    return {task for task in asyncio.all_tasks() if not task.done()}


def _closes_an_abandoned_generator(task: Any) -> bool:
    """A task the event loop runs to close an async generator dropped unfinished: not one
    of the client's. (httpx nests async generators, and closing the outer one drops the
    inner one: asyncio and trio then close it in a task of their own.)"""
    name = getattr(task, "name", None)
    if isinstance(name, str):  # trio
        return name.startswith("close asyncgen ")
    return type(task.get_coro()).__name__ == "async_generator_athrow"  # asyncio: agen.aclose()


async def no_task_outlives(before: set[Any], timeout: float = 1.0) -> None:
    """No task started since ``before`` (`live_tasks`) runs any more.

    The loop's own tasks closing abandoned async generators are let finish (within
    ``timeout``); any other task still running fails at once.
    """
    own = {task for task in live_tasks() - before if not _closes_an_abandoned_generator(task)}
    assert not own, f"task(s) outlive the client: {own}"
    await until(
        lambda: not live_tasks() - before,
        lambda: f"task(s) still running: {live_tasks() - before}",
        timeout,
    )


# -- the script ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pause:
    """Write nothing for ``seconds`` (the client's leaving cuts it short)."""

    seconds: float


class Gate:
    """Hold the script here until the test opens the gate (bounded by ``timeout``).

    ``reached`` is set when the server arrives at the gate: every byte before it has been
    written. A gate that times out is recorded as an error of the server.
    """

    def __init__(self, timeout: float = WAIT) -> None:
        self.timeout = timeout
        self.reached = threading.Event()
        self._open = threading.Event()

    def open(self) -> None:
        self._open.set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()


Step = bytes | Pause | Gate


@dataclass
class Response:
    """How the server answers one request.

    ``status`` 0 sends no response at all: after reading the request the server goes
    straight to ``end`` (RESET: the request fails; SILENT: it never gets an answer).
    ``framing``: ``"chunked"`` (Transfer-Encoding), ``"length"`` (Content-Length; the body
    must be all bytes, its total is sent) or ``"close"`` (neither: the body ends with the
    connection). ``pace``: seconds to sleep after each write (lets one-byte writes reach
    the client one by one). ``hold``: how long SILENT lasts at most (then a reset), so
    that a client that never notices the silence fails its test instead of hanging it.
    """

    status: int = 200
    headers: Sequence[tuple[str, str]] = SSE_HEADERS
    body: bytes | Sequence[Step] = b""
    split: str = WHOLE
    end: str = END
    framing: str = "chunked"
    pace: float = 0.0
    hold: float = HOLD
    reason: str | None = None
    seed: int = 0

    def steps(self) -> list[Step]:
        return [self.body] if isinstance(self.body, bytes) else list(self.body)


def sse(
    *body: Step,
    end: str = SILENT,
    headers: Sequence[tuple[str, str]] = (),
    **options: Any,
) -> Response:
    """A 200 ``text/event-stream`` response with ``body`` (steps), ended by ``end``."""
    return Response(headers=(*SSE_HEADERS, *headers), body=list(body), end=end, **options)


def status(code: int, *headers: tuple[str, str], body: bytes = b"") -> Response:
    """A plain (non-stream) response: ``code``, ``headers``, a Content-Length body."""
    return Response(
        status=code,
        headers=(("content-type", "text/plain; charset=utf-8"), *headers),
        body=body,
        framing="length",
    )


def pieces(data: bytes, split: str, rng: random.Random) -> Iterator[bytes]:
    if split == WHOLE or not data:
        if data:
            yield data
        return
    if split == BYTES:
        for i in range(len(data)):
            yield data[i : i + 1]
        return
    if split != RANDOM:
        raise ValueError(f"unknown split {split!r}")
    i, most = 0, max(1, len(data) // 3)  # at least three pieces
    while i < len(data):
        size = rng.randint(1, min(most, rng.choice((1, 2, 7, 64, 1024, 8192))))
        yield data[i : i + size]
        i += size


# -- what the server saw -------------------------------------------------------------------


@dataclass
class Connection:
    index: int
    accepted_at: float
    requests: list[int] = field(default_factory=list)
    last_write_at: float | None = None  # when the server last wrote a byte to it
    closed_at: float | None = None  # when the server saw the client close or reset it
    ended_at: float | None = None  # when it was over, whoever ended it
    held_out: bool = False  # it was SILENT for the whole `Response.hold`, then reset


@dataclass
class Request:
    index: int  # in arrival order, over all connections
    connection: int
    method: str
    target: str
    headers: list[tuple[str, str]]  # names lowercased, in order
    body: bytes
    received_at: float  # when its head (and body) had arrived
    last_write_at: float | None = None  # the last byte of its response
    ended_at: float | None = None  # its response was over (ended, reset, or the client left)

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (joined with ", " if repeated); None if absent."""
        values = [value for key, value in self.headers if key == name.lower()]
        return ", ".join(values) if values else None


class _Peer:
    """The client side of one connection: what it sent, and whether it has left.

    A pump reads the socket all the time, so that a client leaving is seen at once (its
    time recorded) even while the server pauses, waits at a gate or stays silent.
    """

    def __init__(self, reader: asyncio.StreamReader, connection: Connection) -> None:
        self.reader = reader
        self.connection = connection
        self.buffer = bytearray()
        self.gone = asyncio.Event()
        self.changed = asyncio.Event()
        self.pump = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        try:
            while True:
                try:
                    data = await self.reader.read(65536)
                except (ConnectionError, OSError):
                    data = b""
                if not data:
                    self.left()
                    return
                self.buffer += data
                self.changed.set()
        finally:
            self.changed.set()

    def left(self) -> None:
        if not self.gone.is_set():
            self.connection.closed_at = now()
            self.gone.set()
            self.changed.set()

    async def _wait(self, ready: Callable[[], bool]) -> bool:
        while not ready():
            if self.gone.is_set():
                return False
            self.changed.clear()
            await self.changed.wait()
        return True

    async def read_head(self) -> bytes | None:
        if not await self._wait(lambda: b"\r\n\r\n" in self.buffer or len(self.buffer) > MAX_HEAD):
            return None
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            raise AssertionError("request head too large")
        head = bytes(self.buffer[:end])
        del self.buffer[: end + 4]
        return head

    async def read_body(self, size: int) -> bytes | None:
        if not await self._wait(lambda: len(self.buffer) >= size):
            return None
        body = bytes(self.buffer[:size])
        del self.buffer[:size]
        return body


class ScriptServer:
    """A raw HTTP/1.1 server answering request ``n`` with ``script[n]`` (the last repeats).

    ``script`` may also be a function of the `Request`. The socket is bound at once (so
    the port is reserved), and listens from `listen` on: until then connections to it
    are refused. Use `script_server` to run one.
    """

    def __init__(
        self,
        script: Sequence[Response] | Callable[[Request], Response],
        *,
        port: int = 0,
        max_connections: int = 100,
    ) -> None:
        self.script = script
        self.max_connections = max_connections
        self.connections: list[Connection] = []
        self.requests: list[Request] = []
        self.errors: list[BaseException] = []
        self.overflow = 0  # connections refused past max_connections
        self.listening_at: float | None = None
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self.port: int = self._sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="script-server", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- running ---------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(WAIT)

    def start(self, *, listen: bool = True) -> None:
        self._thread.start()
        if listen:
            self.listen()

    def listen(self) -> None:
        """Start accepting connections (until now they were refused)."""

        async def start() -> None:
            self._server = await asyncio.start_server(self._handle, sock=self._sock, backlog=64)

        self._call(start())
        self.listening_at = now()

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=WAIT)

        if self._thread.is_alive():
            try:
                self._call(shutdown())
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(WAIT)
        assert not self._thread.is_alive(), "the script server did not stop"
        self._loop.close()
        self._sock.close()

    def check(self) -> None:
        """Fail on the server's own errors and on connections past its bound."""
        assert not self.errors, f"the script server failed: {self.errors!r}"
        assert not self.overflow, f"{self.overflow} connection(s) past {self.max_connections}"

    # -- waiting ---------------------------------------------------------------------------

    def _describe(self) -> str:
        return f"requests: {[(r.index, r.method, r.target) for r in self.requests]}"

    async def wait_requests(self, n: int, timeout: float = WAIT) -> list[Request]:
        await until(lambda: len(self.requests) >= n, lambda: f"<{n} {self._describe()}", timeout)
        return self.requests[:n]

    def wait_requests_sync(self, n: int, timeout: float = WAIT) -> list[Request]:
        until_sync(lambda: len(self.requests) >= n, lambda: f"<{n} {self._describe()}", timeout)
        return self.requests[:n]

    async def wait_closed(self, connection: int = 0, timeout: float = WAIT) -> float:
        """When the client closed connection ``connection`` (waits for it, bounded)."""

        def closed() -> bool:
            return (
                len(self.connections) > connection
                and self.connections[connection].closed_at is not None
            )

        await until(closed, f"the client did not close connection {connection}", timeout)
        closed_at = self.connections[connection].closed_at
        assert closed_at is not None
        return closed_at

    def wait_closed_sync(self, connection: int = 0, timeout: float = WAIT) -> float:
        until_sync(
            lambda: (
                len(self.connections) > connection
                and self.connections[connection].closed_at is not None
            ),
            f"the client did not close connection {connection}",
            timeout,
        )
        closed_at = self.connections[connection].closed_at
        assert closed_at is not None
        return closed_at

    def gap(self, i: int) -> float:
        """From the end of response ``i`` to the arrival of request ``i + 1``."""
        ended = self.requests[i].ended_at
        assert ended is not None, f"response {i} has not ended"
        return self.requests[i + 1].received_at - ended

    def gaps(self) -> list[float]:
        return [self.gap(i) for i in range(len(self.requests) - 1)]

    # -- serving ---------------------------------------------------------------------------

    def _response_for(self, request: Request) -> Response:
        if callable(self.script):
            return self.script(request)
        return self.script[min(request.index, len(self.script) - 1)]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        if len(self.connections) >= self.max_connections:
            self.overflow += 1
            writer.transport.abort()
            self._tasks.discard(task)
            return
        connection = Connection(len(self.connections), now())
        self.connections.append(connection)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = _Peer(reader, connection)
        try:
            keep_alive = True
            while keep_alive:
                request = await self._read_request(peer, connection)
                if request is None:
                    break
                response = self._response_for(request)
                keep_alive = await self._answer(writer, peer, connection, request, response)
                if request.ended_at is None:
                    request.ended_at = now()
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            self.errors.append(exc)
        finally:
            peer.pump.cancel()
            if not writer.transport.is_closing():
                writer.transport.abort()
            if connection.ended_at is None:
                connection.ended_at = now()
            self._tasks.discard(task)

    async def _read_request(self, peer: _Peer, connection: Connection) -> Request | None:
        head = await peer.read_head()
        if head is None:
            return None
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers = []
        for line in lines:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        length = sum(int(value) for name, value in headers if name == "content-length")
        assert not any(name == "transfer-encoding" for name, _ in headers), "chunked request"
        body = await peer.read_body(length) if length else b""
        if body is None:
            return None
        request = Request(
            index=len(self.requests),
            connection=connection.index,
            method=method,
            target=target,
            headers=headers,
            body=body,
            received_at=now(),
        )
        self.requests.append(request)
        connection.requests.append(request.index)
        return request

    async def _answer(
        self,
        writer: asyncio.StreamWriter,
        peer: _Peer,
        connection: Connection,
        request: Request,
        response: Response,
    ) -> bool:
        """Play ``response``; whether the connection may carry another request."""
        rng = random.Random(response.seed)
        steps = response.steps()
        chunked = response.framing == "chunked"
        no_body = response.status in (204, 304) or 100 <= response.status < 200

        async def write(data: bytes) -> bool:
            if peer.gone.is_set():
                return False
            writer.write(data)
            try:
                await writer.drain()
            except (ConnectionError, OSError):
                peer.left()
                return False
            connection.last_write_at = request.last_write_at = now()
            return True

        if response.status:
            reason = response.reason
            if reason is None:
                try:
                    reason = http.HTTPStatus(response.status).phrase
                except ValueError:
                    reason = "Whatever"
            head = [f"HTTP/1.1 {response.status} {reason}"]
            head += [f"{name}: {value}" for name, value in response.headers]
            if not no_body:
                if chunked:
                    head.append("transfer-encoding: chunked")
                elif response.framing == "length":
                    size = sum(len(step) for step in steps if isinstance(step, bytes))
                    head.append(f"content-length: {size}")
                elif response.framing == "close":
                    head.append("connection: close")
                else:
                    raise ValueError(f"unknown framing {response.framing!r}")
            if not await write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1")):
                return False

            for step in steps:
                if isinstance(step, Pause):
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(peer.gone.wait(), step.seconds)
                elif isinstance(step, Gate):
                    step.reached.set()
                    deadline = now() + step.timeout
                    while not step.is_open and not peer.gone.is_set():
                        if now() > deadline:
                            raise AssertionError("a gate was never opened")
                        await asyncio.sleep(0.002)
                else:
                    for piece in pieces(step, response.split, rng):
                        frame = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
                        if not await write(frame):
                            return False
                        if response.pace:
                            await asyncio.sleep(response.pace)
                if peer.gone.is_set():
                    return False

        if response.end == SILENT:
            try:  # until the client leaves (or the server stops), at most `hold`
                await asyncio.wait_for(peer.gone.wait(), response.hold)
            except asyncio.TimeoutError:
                connection.held_out = True
            else:
                request.ended_at = connection.closed_at
                return False
        if response.end in (RESET, SILENT):
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            request.ended_at = connection.ended_at = now()
            return False
        if response.end == FIN or (response.end == END and response.framing == "close"):
            writer.transport.close()  # a FIN, once what was written has gone
            request.ended_at = connection.ended_at = now()
            return False
        if response.end != END:
            raise ValueError(f"unknown end {response.end!r}")
        if chunked and response.status and not no_body and not await write(b"0\r\n\r\n"):
            return False
        request.ended_at = now()
        if not response.status:
            return False
        closing = request.header("connection") or ""
        return "close" not in closing.lower()


@contextmanager
def script_server(
    script: Sequence[Response] | Callable[[Request], Response],
    *,
    port: int = 0,
    listen: bool = True,
    max_connections: int = 100,
) -> Iterator[ScriptServer]:
    """Run a `ScriptServer` for the block; afterwards, fail on its own errors."""
    server = ScriptServer(script, port=port, max_connections=max_connections)
    server.start(listen=listen)
    try:
        yield server
    finally:
        server.stop()
    server.check()


# -- the hub, killed and restarted on its port ---------------------------------------------

JSON = {"content-type": "application/json"}


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class HubProcess:
    """``python -m sse_toolkit --port P *args``: `start` it, `kill` it (SIGKILL), start again.

    Every start uses the same port, and appends to one log.
    """

    def __init__(self, log_dir: Path, *args: str, port: int | None = None) -> None:
        from .servers import free_port

        self.port = port or free_port()
        self.args = args
        self.log_path = log_dir / f"hub-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 10.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "the hub is running"
        argv = [sys.executable, "-m", "sse_toolkit", "--port", str(self.port), *self.args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        self.starts += 1
        deadline = now() + timeout
        while not _accepts(self.port):
            try:
                code = self.proc.wait(0.02)  # a bounded wait that notices an early exit
            except subprocess.TimeoutExpired:
                pass
            else:
                raise AssertionError(f"the hub exited with {code}:\n{self.log()}")
            if now() > deadline:
                raise AssertionError(f"the hub did not accept connections:\n{self.log()}")

    def terminate(self) -> int:
        """SIGTERM (the runner ends the streams cleanly), then the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(WAIT)
        return int(self.proc.returncode)

    def kill(self) -> None:
        """SIGKILL: no graceful end, no retry hint; its connections simply drop."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(WAIT)

    def close(self) -> None:
        if self.proc is not None:
            from .test_cli import stop  # (terminate, then kill; always reaped)

            stop(self.proc)


@contextmanager
def hub_process(log_dir: Path, *args: str, port: int | None = None) -> Iterator[HubProcess]:
    hub = HubProcess(log_dir, *args, port=port)
    try:
        hub.start()
        yield hub
    finally:
        hub.close()


class Publisher:
    """POST ``count`` numbered events to ``url`` from a thread, one after another.

    Each attempt carries its own data, ``"<n>.<attempt>"``; a POST that fails (the hub is
    down, or went down before answering) is retried as the next attempt of the same n.
    ``acknowledged`` holds the (id, data) of every 202, in order: the events the hub
    stored for certain. A failed attempt may or may not have been stored. `finish`
    publishes a last event, ``"end"``, and waits for the thread.
    """

    def __init__(self, url: str, count: int, *, interval: float = 0.005) -> None:
        self.url = url
        self.count = count
        self.interval = interval
        self.acknowledged: list[tuple[str, str]] = []
        self.attempts: list[str] = []  # the data of every POST, acknowledged or not
        self.failures = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def post(self, client: httpx.Client, data: str) -> bool:
        self.attempts.append(data)
        try:
            response = client.post(self.url, json={"data": data}, headers=JSON)
        except httpx.TransportError:
            self.failures += 1
            return False
        if response.status_code == 503:  # a hub not ready yet
            self.failures += 1
            return False
        assert response.status_code == 202, response.text
        self.acknowledged.append((response.json()["id"], data))
        return True

    def _run(self) -> None:
        deadline = now() + 30.0
        try:
            with httpx.Client(timeout=2.0) as client:
                n = attempt = 0
                while n < self.count and not self._stop.is_set():
                    assert now() < deadline, "the publisher ran out of time"
                    if self.post(client, f"{n}.{attempt}"):
                        n, attempt = n + 1, 0
                        self._stop.wait(self.interval)
                    else:
                        attempt += 1
                        self._stop.wait(0.02)
        except BaseException as exc:
            self.error = exc

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def finish(self) -> tuple[str, str]:
        """Wait for the numbered events; publish ``"end"`` (retrying); its (id, data)."""
        self._thread.join(30.0)
        assert not self._thread.is_alive(), "the publisher did not finish"
        assert self.error is None, repr(self.error)
        with httpx.Client(timeout=2.0) as client:
            until_sync(lambda: self.post(client, "end"), "could not publish the end", 10.0)
        return self.acknowledged[-1]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(WAIT)


# -- sse-starlette -------------------------------------------------------------------------


@dataclass
class StarletteStats:
    pings: int = 0
    last_event_ids: list[str | None] = field(default_factory=list)


def starlette_app(ping: float = 0.05) -> tuple[Any, StarletteStats]:
    """An ASGI app streaming with sse-starlette's ``EventSourceResponse``.

    A first connection (no ``Last-Event-ID``) gets ``one``, then waits long enough for
    pings every ``ping`` seconds, gets ``two`` (named, two lines) and a JSON ``three``, then
    the stream ends. A reconnect gets ``resumed after <Last-Event-ID>`` and is held open.
    ``stats`` counts the pings sent and records each request's ``Last-Event-ID``.
    """
    from sse_starlette import EventSourceResponse, ServerSentEvent
    from starlette.requests import Request as StarletteRequest

    stats = StarletteStats()

    def ping_message() -> Any:
        stats.pings += 1
        return ServerSentEvent(comment=f"ping {stats.pings}")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        last = StarletteRequest(scope, receive).headers.get("last-event-id")
        stats.last_event_ids.append(last)

        async def events() -> Any:
            if last is None:
                yield {"id": "1", "data": "one"}
                pings = stats.pings
                with anyio.fail_after(WAIT):
                    while stats.pings < pings + 3:
                        await anyio.sleep(ping / 4)
                yield {"id": "2", "event": "custom", "data": "two\nlines"}
                yield {"id": "3", "data": json.dumps({"n": 3})}
            else:
                yield {"id": "4", "data": f"resumed after {last}"}
                await anyio.sleep(WAIT)

        response = EventSourceResponse(events(), ping=ping, ping_message_factory=ping_message)
        await response(scope, receive, send)

    return app, stats
