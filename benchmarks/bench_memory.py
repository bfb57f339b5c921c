"""Per-idle-stream memory by allocation site (issue 13): where each byte of a stream goes.

    python benchmarks/bench_memory.py asgi [--n 2000] [--kinds bare,listener,heartbeat,sseapp]
        [--loop asyncio|trio|both] [--top 15]
    python benchmarks/bench_memory.py server [--n 2000] [--kinds ...] [--http h11,httptools]
        [--runner toolkit|plain] [--top 15]

Kinds (each an ASGI app holding one idle stream per request):

- ``bare``: answers the head of an event stream and awaits ``receive()`` until
  ``http.disconnect``: what the server (or, in ``asgi`` mode, the harness standing in for
  it) costs per stream; every other kind's ``ours`` is its figure minus this one;
- ``listener``: ``EventStreamResponse(channel.listen(), heartbeat_interval=None)``;
- ``heartbeat``: ``EventStreamResponse(channel.listen(), heartbeat_interval=15,
  send_timeout=30)``;
- ``sseapp``: ``SSEApp(ChannelManager())`` with its defaults, ``GET /bench`` (every stream
  from its own client address, so that the per-client limit does not bite).

Modes:

- ``asgi``: no server. N streams, each an ASGI call in its own task (as a server runs it)
  with fake ``receive`` (``http.request`` once, then blocks on one shared event until the
  disconnect) and ``send`` (counts body bytes), on asyncio or trio;
- ``server``: the same apps under uvicorn (h11 and/or httptools; ``lifespan="off"``,
  ``ws="none"``, no access log) on this process's loop, run as ``sse_toolkit run`` runs it
  (``--runner toolkit``: `sse_toolkit.contrib.uvicorn.Server` with its `ConnectionGuard`)
  or plain ``uvicorn.Server`` (``--runner plain``); the N clients are raw sockets in a
  subprocess (each from its own source address, 127.1.x.y), so tracemalloc here sees the
  server's allocations only.

Each measurement runs in a fresh process: tracemalloc on (25 frames), a warm-up of a few
streams opened and closed (imports, caches, free lists), ``gc.collect()``, a snapshot and
a count of the gc-tracked objects by type; then N streams are opened and the benchmark
waits until all are idle (the channel's ``subscriber_count == N``, the bare app's streams
in ``receive()``, the clients' response heads in) and a moment more; collect, snapshot,
count. Reported per stream (delta / N):

- bytes (the tracemalloc delta: retained size, no ``sys.getsizeof`` guess), and after
  every stream closed again (``left``: what a closed stream leaves behind; ~0 unless
  something leaks or a cache grew);
- by module of the allocating line (asyncio, anyio, trio, uvicorn, h11, httptools,
  sse_toolkit.<module>, harness, other) and by *owner*: the newest frame on the
  allocation's stack that is application code (sse_toolkit, uvicorn, h11, httptools, the
  harness), so that a Task created by anyio for ``response.py`` is charged to
  ``sse_toolkit.response`` and a write buffer filled by uvicorn's ``send`` to uvicorn;
- the top sites (the allocating line, and the owner's line it came from);
- objects per stream by type (``gc.get_objects()``: containers only; ints, bytes and
  strings are not gc-tracked but are in the bytes above).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import linecache
import os
import resource
import subprocess
import sys
import sysconfig
import time
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KINDS = ("bare", "listener", "heartbeat", "sseapp")
CHANNEL = "bench"
FRAMES = 25
WARMUP = 20
SETTLE = 0.5  # seconds idle once every stream is, before the snapshot
_STDLIB = sysconfig.get_paths()["stdlib"]
_THIS = str(Path(__file__).resolve())
_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


# -- the apps ------------------------------------------------------------------------------


class Kind:
    """One kind's app, and how to tell that its N streams are idle."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = "/bench" if name == "sseapp" else "/events"
        self.in_receive = 0  # bare: streams awaiting the disconnect
        self.channel: Any = None
        self.app: App = self._build()

    def _build(self) -> App:
        if self.name == "bare":

            async def bare(scope: Scope, receive: Receive, send: Send) -> None:
                await send(
                    {"type": "http.response.start", "status": 200, "headers": _STREAM_HEADERS}
                )
                self.in_receive += 1
                try:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                finally:
                    self.in_receive -= 1

            return bare
        from sse_toolkit import EventStreamResponse, SSEApp, SSEChannel
        from sse_toolkit.manager import ChannelManager

        if self.name == "sseapp":
            self.manager = ChannelManager()
            return SSEApp(self.manager)  # type: ignore[return-value]
        channel = self.channel = SSEChannel(CHANNEL)
        options: dict[str, Any] = (
            {"heartbeat_interval": None}
            if self.name == "listener"
            else {"heartbeat_interval": 15.0, "send_timeout": 30.0}
        )

        async def listener(scope: Scope, receive: Receive, send: Send) -> None:
            await EventStreamResponse(channel.listen(), **options)(scope, receive, send)  # type: ignore[arg-type]

        return listener

    async def prepare(self) -> None:
        if self.name == "sseapp":
            self.channel = await self.manager.get_or_create(CHANNEL)

    def streams(self) -> int:
        if self.channel is None:
            return self.in_receive
        return int(self.channel.subscriber_count)


# -- tracemalloc and gc --------------------------------------------------------------------


def category(filename: str) -> str:
    """The module group of a source file."""
    path = filename.replace("\\", "/")
    if path == _THIS or path.endswith("/bench_memory.py"):
        return "harness"
    if "/sse_toolkit/" in path:
        tail = path.rsplit("/sse_toolkit/", 1)[1]
        return "sse_toolkit." + tail.removesuffix(".py").replace("/", ".")
    for name in ("uvicorn", "h11", "httptools", "anyio", "trio", "asyncio"):
        if f"/{name}/" in path:
            return name
    if path.startswith(_STDLIB):
        return "stdlib." + Path(path).stem
    return "other"


_APPLICATION = ("sse_toolkit", "uvicorn", "h11", "httptools", "harness")


def short(filename: str) -> str:
    path = filename.replace("\\", "/")
    for marker in ("site-packages/", "/sse_toolkit/", "/benchmarks/"):
        if marker in path:
            head = "" if marker == "site-packages/" else marker.strip("/") + "/"
            return head + path.rsplit(marker, 1)[1]
    if path.startswith(_STDLIB):
        return path[len(_STDLIB) + 1 :]
    return path


def owner(frames: list[tuple[str, int]]) -> tuple[str, str]:
    """(group, site) of the newest application frame (frames: newest first)."""
    for filename, lineno in frames:
        group = category(filename)
        if group.split(".", 1)[0] in _APPLICATION:
            return group, f"{short(filename)}:{lineno}"
    filename, lineno = frames[0]
    return category(filename), f"{short(filename)}:{lineno}"


def snapshot() -> tracemalloc.Snapshot:
    gc.collect()
    return tracemalloc.take_snapshot().filter_traces(
        [
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<unknown>"),
        ]
    )


def object_counts() -> tuple[Counter[str], Counter[str]]:
    """gc-tracked objects by type: counts and shallow sizes (sys.getsizeof)."""
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        module = kind.__module__
        name = (
            kind.__qualname__ if module in ("builtins", None) else f"{module}.{kind.__qualname__}"
        )
        counts[name] += 1
        with contextlib.suppress(TypeError):
            sizes[name] += sys.getsizeof(obj)
    return counts, sizes


def analyse(
    before: tracemalloc.Snapshot,
    after: tracemalloc.Snapshot,
    n: int,
    counts: tuple[Counter[str], Counter[str]],
    counts_after: tuple[Counter[str], Counter[str]],
) -> dict[str, Any]:
    """Per-stream figures of what ``after`` holds more than ``before``."""
    by_module: dict[str, int] = defaultdict(int)
    by_owner: dict[str, int] = defaultdict(int)
    sites: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    total = 0
    for stat in after.compare_to(before, "traceback"):
        if (not stat.size_diff and not stat.count_diff) or measuring(stat.traceback):
            continue
        # (tracemalloc keeps frames oldest first: newest first here)
        frames = [(frame.filename, frame.lineno) for frame in reversed(stat.traceback)]
        total += stat.size_diff
        filename, lineno = frames[0]
        by_module[category(filename)] += stat.size_diff
        group, via = owner(frames)
        by_owner[group] += stat.size_diff
        site = f"{short(filename)}:{lineno}"
        code = linecache.getline(filename, lineno).strip()
        entry = sites[(site, via if via != site else "", code)]
        entry[0] += stat.size_diff
        entry[1] += stat.count_diff
    top = sorted(sites.items(), key=lambda item: -abs(item[1][0]))[:60]
    types = {
        name: [
            (counts_after[0][name] - counts[0][name]) / n,
            (counts_after[1][name] - counts[1][name]) / n,
        ]
        for name in set(counts[0]) | set(counts_after[0])
    }
    return {
        "bytes": total / n,
        "by_module": {key: value / n for key, value in by_module.items()},
        "by_owner": {key: value / n for key, value in by_owner.items()},
        "sites": [
            [site, via, code, size / n, count / n] for (site, via, code), (size, count) in top
        ],
        "types": {key: value for key, value in types.items() if abs(value[0]) >= 0.05},
    }


def start_tracing() -> None:
    tracemalloc.start(FRAMES)


class Measurement:
    """Snapshots and object counts before, with the streams idle, and once they closed."""

    def begin(self) -> None:
        self.counts = object_counts()
        self.before = snapshot()

    def idle(self) -> None:
        self.counts_idle = object_counts()  # (before the snapshot: its traces are tuples)
        self.after = snapshot()

    def closed(self, n: int) -> dict[str, Any]:
        closed = snapshot()
        result = analyse(self.before, self.after, n, self.counts, self.counts_idle)
        left = closed.compare_to(self.before, "traceback")
        result["left"] = sum(s.size_diff for s in left if not measuring(s.traceback)) / n
        return result


def _lines(function: Any) -> range:
    code = function.__code__
    return range(code.co_firstlineno, max(line for _, _, line in code.co_lines() if line) + 1)


_MEASURING: list[range] = []  # the lines of the measuring code: its allocations are not counted


def measuring(traceback: tracemalloc.Traceback) -> bool:
    if not _MEASURING:
        functions = (
            object_counts,
            analyse,
            Measurement.begin,
            Measurement.idle,
            Measurement.closed,
        )
        _MEASURING.extend(_lines(function) for function in functions)
    return any(
        frame.filename == _THIS and any(frame.lineno in lines for lines in _MEASURING)
        for frame in traceback
    )


async def wait_until(condition: Callable[[], bool], timeout: float, what: str, sleep: Any) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await sleep(0.05)


# -- mode asgi: a fake server --------------------------------------------------------------


class FakeServer:
    """Stands in for a server: one ``receive``/``send`` pair per stream, one shared
    disconnect event per batch of streams."""

    def __init__(self, event_factory: Callable[[], Any]) -> None:
        self.event_factory = event_factory
        self.sent = 0

    def connection(self, disconnect: Any) -> Connection:
        return Connection(self, disconnect)


class Connection:
    __slots__ = ("disconnect", "requested", "server")

    def __init__(self, server: FakeServer, disconnect: Any) -> None:
        self.server = server
        self.disconnect = disconnect
        self.requested = False

    async def receive(self) -> Message:
        if not self.requested:
            self.requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.server.sent += len(message.get("body", b""))


def make_scope(path: str, index: int) -> Scope:
    client = f"127.1.{index // 250 % 250}.{index % 250 + 1}"
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": (client, 40000 + index % 20000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"accept", b"text/event-stream"),
            (b"cache-control", b"no-cache"),
        ],
        "state": {},
    }


async def asgi_asyncio(kind: Kind, n: int) -> dict[str, Any]:
    server = FakeServer(asyncio.Event)
    await kind.prepare()
    loop = asyncio.get_running_loop()

    async def batch(count: int, first: int, measure: bool) -> dict[str, Any]:
        disconnect = asyncio.Event()
        measurement = Measurement()
        if measure:
            measurement.begin()
        tasks = []
        for index in range(first, first + count):
            connection = server.connection(disconnect)
            scope = make_scope(kind.path, index)
            tasks.append(loop.create_task(kind.app(scope, connection.receive, connection.send)))
        del connection, scope
        await wait_until(lambda: kind.streams() >= count, 60, "idle streams", asyncio.sleep)
        await asyncio.sleep(SETTLE)
        if measure:
            measurement.idle()
        disconnect.set()
        await asyncio.gather(*tasks)
        del tasks
        await wait_until(lambda: kind.streams() == 0, 30, "streams to close", asyncio.sleep)
        await asyncio.sleep(0.1)
        return measurement.closed(count) if measure else {}

    await batch(WARMUP, 100_000, measure=False)
    return await batch(n, 0, measure=True)


async def asgi_trio(kind: Kind, n: int) -> dict[str, Any]:
    import trio

    server = FakeServer(trio.Event)
    await kind.prepare()

    async def batch(count: int, first: int, measure: bool) -> dict[str, Any]:
        disconnect = trio.Event()
        measurement = Measurement()
        if measure:
            measurement.begin()
        async with trio.open_nursery() as nursery:
            for index in range(first, first + count):
                connection = server.connection(disconnect)
                nursery.start_soon(
                    kind.app, make_scope(kind.path, index), connection.receive, connection.send
                )
            del connection
            await wait_until(lambda: kind.streams() >= count, 60, "idle streams", trio.sleep)
            await trio.sleep(SETTLE)
            if measure:
                measurement.idle()
            disconnect.set()
        await wait_until(lambda: kind.streams() == 0, 30, "streams to close", trio.sleep)
        await trio.sleep(0.1)
        return measurement.closed(count) if measure else {}

    await batch(WARMUP, 100_000, measure=False)
    return await batch(n, 0, measure=True)


def run_asgi(kind_name: str, n: int, loop: str) -> dict[str, Any]:
    kind = Kind(kind_name)  # (imports done before tracing: fewer traces, faster snapshots)
    if loop == "trio":
        import trio

        start_tracing()
        return trio.run(asgi_trio, kind, n)
    start_tracing()
    return asyncio.run(asgi_asyncio(kind, n))


# -- mode server: uvicorn in this process, raw-socket clients in another -------------------


def raise_files(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, n + 1000))
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class _ClientStream(asyncio.Protocol):
    __slots__ = ("done", "head", "request")

    def __init__(self, request: bytes, done: asyncio.Future[bool]) -> None:
        self.request = request
        self.done = done
        self.head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self.done.done():
            self.head += data
            if b"\r\n\r\n" in self.head:
                self.done.set_result(self.head.startswith(b"HTTP/1.1 200"))
                self.head = b""

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(False)


async def client_main(port: int, path: str) -> None:
    """The client process: ``open <count> <first>`` opens streams and answers
    ``ready <ok>``; ``close`` aborts them all and answers ``closed``; EOF ends it."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    ).encode()
    transports: list[asyncio.BaseTransport] = []
    limit = asyncio.Semaphore(128)

    async def one(index: int) -> bool:
        source = f"127.1.{index // 250 % 250}.{index % 250 + 1}"
        async with limit:
            done: asyncio.Future[bool] = loop.create_future()
            try:
                transport, _ = await loop.create_connection(
                    lambda: _ClientStream(request, done), "127.0.0.1", port, local_addr=(source, 0)
                )
            except OSError:
                return False
            transports.append(transport)
            try:
                return await asyncio.wait_for(done, 30)
            except asyncio.TimeoutError:
                return False

    while line := (await reader.readline()).decode().split():
        if line[0] == "open":
            count, first = int(line[1]), int(line[2])
            results = await asyncio.gather(*(one(first + i) for i in range(count)))
            print(f"ready {sum(results)}", flush=True)
        elif line[0] == "close":
            for transport in transports:
                transport.abort()  # type: ignore[attr-defined]
            transports.clear()
            print("closed", flush=True)


async def server_main(kind: Kind, n: int, http: str, runner: str) -> dict[str, Any]:
    import socket

    import uvicorn

    await kind.prepare()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        kind.app,
        http=http,
        ws="none",
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server: Any
    if runner == "toolkit":
        from sse_toolkit.contrib.uvicorn import ConnectionGuard, Server

        server = Server(config, guard=ConnectionGuard())
    else:
        server = uvicorn.Server(config)
    serving = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    await wait_until(lambda: server.started, 30, "uvicorn to start", asyncio.sleep)
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        _THIS,
        "_client",
        json.dumps({"port": port, "path": kind.path, "n": n}),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert client.stdin is not None
    assert client.stdout is not None
    stdin, stdout = client.stdin, client.stdout
    state = server.server_state

    async def ask(command: str) -> str:
        stdin.write(command.encode() + b"\n")
        await stdin.drain()
        return (await asyncio.wait_for(stdout.readline(), 120)).decode().strip()

    async def batch(count: int, first: int, measure: bool) -> dict[str, Any]:
        measurement = Measurement()
        if measure:
            measurement.begin()
        answer = await ask(f"open {count} {first}")
        if answer != f"ready {count}":
            raise RuntimeError(f"the clients opened {answer!r} of {count} streams")
        await wait_until(lambda: kind.streams() >= count, 60, "idle streams", asyncio.sleep)
        await asyncio.sleep(SETTLE)
        if measure:
            measurement.idle()
        await ask("close")
        await wait_until(
            lambda: kind.streams() == 0 and not state.connections and not state.tasks,
            30,
            "streams to close",
            asyncio.sleep,
        )
        await asyncio.sleep(0.2)
        return measurement.closed(count) if measure else {}

    try:
        await batch(WARMUP, 60_000, measure=False)
        return await batch(n, 0, measure=True)
    finally:
        stdin.close()
        await client.wait()
        server.should_exit = True
        await serving


def run_server(kind_name: str, n: int, http: str, runner: str) -> dict[str, Any]:
    raise_files(n)
    import uvicorn.protocols.http.h11_impl
    import uvicorn.protocols.http.httptools_impl  # noqa: F401

    import sse_toolkit.contrib.uvicorn  # noqa: F401

    kind = Kind(kind_name)  # (imports done before tracing: fewer traces, faster snapshots)
    start_tracing()
    return asyncio.run(server_main(kind, n, http, runner))


# -- the driver and its tables -------------------------------------------------------------


def measure_in_child(spec: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, _THIS, "_one", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{spec} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    result["seconds"] = time.monotonic() - started
    return result


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(
        cell.rjust(width) if index else cell.ljust(width)
        for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
    ).rstrip()


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [_row(header, widths), _row(["-" * w for w in widths], widths)]
    lines += [_row(row, widths) for row in rows]
    return "\n".join(lines)


def report(title: str, results: dict[str, dict[str, Any]], n: int, top: int) -> None:
    print(f"\n=== {title}, N={n} ===\n")
    base = results.get("bare", {}).get("bytes")
    rows = []
    for kind, r in results.items():
        objects = sum(count for count, _ in r["types"].values())
        rows.append(
            [
                kind,
                f"{r['bytes']:,.0f}",
                "" if base is None or kind == "bare" else f"{r['bytes'] - base:+,.0f}",
                f"{sum(v for k, v in r['by_owner'].items() if k.startswith('sse_toolkit')):,.0f}",
                f"{objects:.1f}",
                f"{r['left']:,.0f}",
                f"{r['seconds']:.0f}",
            ]
        )
    header = ["kind", "B/stream", "vs bare", "owner=sse_toolkit", "gc objs", "left", "s"]
    print(table(header, rows))
    groups = sorted(
        {g for r in results.values() for g in r["by_module"]}
        | {g for r in results.values() for g in r["by_owner"]}
    )
    print(
        "\nBytes per stream by module of the allocating line, and by owner"
        " (the newest application frame)\n"
    )
    rows = []
    for group in groups:
        cells = []
        for r in results.values():
            cells += [f"{r['by_module'].get(group, 0):,.0f}", f"{r['by_owner'].get(group, 0):,.0f}"]
        if any(cell not in ("0", "-0") for cell in cells):
            rows.append([group, *cells])
    rows.sort(key=lambda row: -max(abs(float(c.replace(",", ""))) for c in row[1:]))
    header = ["module"] + [f"{kind}:{what}" for kind in results for what in ("line", "owner")]
    print(table(header, rows))
    for kind, r in results.items():
        print(f"\n-- {kind}: top sites (bytes, allocations per stream) --\n")
        rows = [
            [f"{size:,.0f}", f"{count:.2f}", site, via, code[:58]]
            for site, via, code, size, count in r["sites"][:top]
        ]
        print(table(["B", "allocs", "allocating line", "owner frame", "code"], rows))
        print(f"\n-- {kind}: gc objects per stream by type (count, shallow B) --\n")
        kinds = sorted(r["types"].items(), key=lambda item: -abs(item[1][1]))[:top]
        rows = [[name, f"{count:.2f}", f"{size:,.0f}"] for name, (count, size) in kinds]
        print(table(["type", "count", "getsizeof B"], rows))


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "_one":
        spec = json.loads(sys.argv[2])
        if spec["mode"] == "asgi":
            result = run_asgi(spec["kind"], spec["n"], spec["loop"])
        else:
            result = run_server(spec["kind"], spec["n"], spec["http"], spec["runner"])
        print(json.dumps(result))
        return
    if len(sys.argv) >= 3 and sys.argv[1] == "_client":
        spec = json.loads(sys.argv[2])
        raise_files(spec["n"] + WARMUP)
        asyncio.run(client_main(spec["port"], spec["path"]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("asgi", "server"))
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--loop", choices=("asyncio", "trio", "both"), default="asyncio")
    parser.add_argument("--http", default="h11,httptools", help="uvicorn parsers, comma-separated")
    parser.add_argument("--runner", choices=("toolkit", "plain"), default="toolkit")
    parser.add_argument("--top", type=int, default=15, help="sites and types shown per kind")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    for kind in kinds:
        if kind not in KINDS:
            parser.error(f"unknown kind {kind!r} (one of {', '.join(KINDS)})")
    print(f"python {sys.version.split()[0]}, pid {os.getpid()}, {' '.join(sys.argv[1:])}")
    everything: dict[str, Any] = {}
    if args.mode == "asgi":
        variants = [
            ("loop", loop)
            for loop in (("asyncio", "trio") if args.loop == "both" else (args.loop,))
        ]
    else:
        variants = [("http", http) for http in args.http.split(",")]
    for key, value in variants:
        results = {}
        for kind in kinds:
            spec = {"mode": args.mode, "kind": kind, "n": args.n, key: value, "runner": args.runner}
            results[kind] = measure_in_child(spec)
        title = f"{args.mode} {value}" + (
            f" (runner {args.runner})" if args.mode == "server" else ""
        )
        report(title, results, args.n, args.top)
        everything[title] = results
    if args.json is not None:
        args.json.write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
