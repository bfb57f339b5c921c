"""The Redis backend end to end: hub processes, real sockets, one shared Redis.

    python benchmarks/bench_redis.py            # 3 rounds, 1.5-2.5 min on a 2-core VM
    python benchmarks/bench_redis.py --quick    # 1 round, 200 subscribers, 20-45 s
    python benchmarks/bench_redis.py --only throughput --publishers 4 --events 400
    python benchmarks/bench_redis.py --only throughput --profile /tmp/prof   # + py-spy

Needs a Redis (``--redis-url``, 127.0.0.1:6379 by default). Everything goes under a key
prefix of this run's own (``bench-<uuid>:``), deleted at the end; nothing else is touched.
Every hub is ``python -m sse_toolkit --allow-publish --heartbeat 3600 --log-level
warning`` (plus ``--redis-url URL --redis-prefix PFX`` for the Redis ones): the hub's
defaults otherwise, so ``send_timeout`` 30 s (a watchdog task per stream) and uvicorn's
auto loop and HTTP parser (asyncio and h11 unless uvloop/httptools are installed: the
header says which). The heartbeat is pushed out of the way so that every ``\\n\\n`` the
clients count is an event. Every hub process is started and stopped by this script (in
``finally``), and so is the client process.

1. Throughput. Two hubs on Redis, A and B, ``--subscribers`` (1,000) streams in total,
   half on each, all on one channel. The streams are held by a separate client process
   (asyncio ``Protocol``s on raw sockets, one per stream) that does nothing but count the
   ``\\n\\n`` frame terminators in what it receives (no parsing, no httpx): per chunk, one
   ``bytes.count``. The clock runs from the first publish until the client process saw
   every stream receive all ``--events`` (2,000) events (both processes read
   ``time.monotonic()``: CLOCK_MONOTONIC, one clock for the whole machine). Reported:
   events/s (N / time: each event reaching all subscribers), deliveries/s (N x
   subscribers / time), the publish rate (N / time until the last publish returned) and
   how long after it the last delivery came. Each timed run follows an untimed warm-up
   through the same path, and checks that every stream got exactly N frames and no
   ``sse.lagged`` notice. Setups, alternated inside every round:

   * ``http``: the benchmark process POSTs to hub A (``POST /sse/bench``) over
     ``--publishers`` (64) keep-alive connections, each sending its next request when the
     previous 202 arrived (raw sockets, requests built before the clock starts). A hub
     takes at most one request per connection per turn of its event loop, and a turn
     includes the fan-out to its 500 streams, so fewer connections publish slower: try
     ``--publishers 4``. Past 100, a Redis hub answers 503 (redis-py's connection pool
     holds 100 connections) and the script stops with that error.
   * ``direct``: the same events published straight into the stream by an
     ``SSEChannel`` on a ``RedisBackend`` of the benchmark process (``--publishers``
     concurrent ``broadcast`` calls): what the two hubs can fan out when publishing
     costs them nothing.
   * ``memory``: the reference without Redis: two independent in-memory hubs C and D,
     500 streams each on the same client process, every event POSTed to both
     (``--publishers`` connections to each).

   CPU seconds of every process (hubs, client, publisher, and Redis through ``INFO cpu``)
   are read around each timed run, to show where the machine's cores went and that the
   client was not the limit. ``--profile DIR`` adds one run per setup with ``py-spy
   record`` on its hubs (not in the tables) and prints where their samples went.

2. Latency. One hub, ``--latency-subscribers`` (100) streams, held by the benchmark
   process itself, which also publishes: one event every ``--interval-ms`` (20) on time
   (open loop, over a pool of 4 keep-alive connections, so a slow 202 does not delay the
   next event), data = its sequence number. Latency = ``time.perf_counter()`` when the
   client's ``data_received`` sees the frame minus ``perf_counter()`` just before the POST
   was written: the HTTP request, the store (with Redis: XADD, then the hub's reader
   reading it back), the fan-out and the socket. Once with the hub on the in-memory
   backend, once with ``--redis-url``. p50/p90/p99 over every (subscriber, event)
   delivery, and of each event's first and last subscriber. 20 ms, not 5: on a 2-core VM
   a pass over 100 streams costs the hub ~5-7 ms of CPU, so at 5 ms the hub saturates and
   latency measures the queue.

The machine may be busy: the setups alternate inside every round (A B C, then C B A, ...),
tables show the best round and the median round, and the per-round rows are printed so
the noise is visible.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout: publish_direct imports sse_toolkit
CHANNEL = "bench"
HOST = "127.0.0.1"
WARMUP = 20
PUBLISH_CONNECTIONS = 64
LATENCY_CONNECTIONS = 4
CONNECT_BATCH = 100
START_TIMEOUT = 20.0
HZ = os.sysconf("SC_CLK_TCK")


# -- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, from /proc (None if it is not visible)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill; always reap."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class Hub:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@contextmanager
def run_hubs(
    log_dir: Path, specs: Sequence[tuple[str, str | None]], redis_url: str
) -> Iterator[list[Hub]]:
    """Start hubs (name, Redis prefix or None for in-memory) in parallel; stop them all."""
    hubs: list[Hub] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    try:
        for name, prefix in specs:
            port = free_port()
            argv = [sys.executable, "-m", "sse_toolkit", "--host", HOST, "--port", str(port)]
            argv += ["--allow-publish", "--heartbeat", "3600"]
            argv += ["--log-level", "warning"]
            if prefix is not None:
                argv += ["--redis-url", redis_url, "--redis-prefix", prefix]
            log_path = log_dir / f"hub-{name}-{port}.log"
            with log_path.open("wb") as log_file:
                proc = subprocess.Popen(
                    argv, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=ROOT
                )
            hubs.append(Hub(name, port, proc, log_path))
        deadline = time.monotonic() + START_TIMEOUT
        for hub in hubs:
            while not _accepts(hub.port):
                if hub.proc.poll() is not None:
                    raise RuntimeError(f"hub {hub.name} exited:\n{hub.log()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"hub {hub.name} did not start:\n{hub.log()}")
                time.sleep(0.05)
        yield hubs
    finally:
        for hub in hubs:
            stop(hub.proc)
        for hub in hubs:
            log = hub.log()
            if "Traceback" in log or "ERROR" in log:
                print(f"[hub {hub.name} log]\n{log}", file=sys.stderr)


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


class ClientProc:
    """The subscriber process: JSON commands on its stdin, one JSON reply line each."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--role", "client"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            bufsize=0,
        )
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ask(self, limit: float, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        deadline = time.monotonic() + limit
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the client process did not answer {command}")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"the client process exited ({self.proc.wait()})")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"client process: {reply['error']}")
        return reply

    def close(self) -> None:
        with suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            stop(self.proc)


# -- the subscriber client process ---------------------------------------------------------------


def _request(port: int) -> bytes:
    return (
        f"GET /sse/{CHANNEL} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()


class _Stream(asyncio.Protocol):
    """One event stream that only counts frame terminators (``\\n\\n``)."""

    def __init__(self, request: bytes, group: Group, ready: asyncio.Future[None]) -> None:
        self.request = request
        self.group = group
        self.ready = ready
        self.head = b""
        self.streaming = False
        self.count = 0
        self.base = 0
        self.goal = -1  # count that completes the armed run; -1: not armed
        self.lagged = 0
        self.open_newline = False  # the last chunk ended in one "\n" of a "\n\n"
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self.streaming:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            status = self.head.partition(b"\r\n")[0]
            if b" 200" not in status:
                if not self.ready.done():
                    self.ready.set_exception(RuntimeError(status.decode(errors="replace")))
                return
            data = self.head[end + 4 :]
            self.head = b""
            self.streaming = True
            if not self.ready.done():
                self.ready.set_result(None)
            if not data:
                return
        # HTTP/1.1 chunked framing never forms "\n\n" (a chunk size line follows "\r\n"),
        # and every chunk holds whole frames, so "\n\n" counts frames exactly.
        if self.open_newline and data[:1] == b"\n":
            n = 1 + data.count(b"\n\n", 1)
        else:
            n = data.count(b"\n\n")
        self.open_newline = data[-1:] == b"\n" and data[-2:] != b"\n\n"
        if b"sse.lagged" in data:
            self.lagged += data.count(b"sse.lagged")
        self.count += n
        group = self.group
        if group.t_first is None and group.armed:
            group.t_first = time.monotonic()
        if self.goal >= 0 and self.count >= self.goal:
            self.goal = -1
            group.remaining -= 1
            if group.remaining == 0:
                group.t_done = time.monotonic()
                group.done.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(f"connection lost: {exc}"))


@dataclass
class Group:
    streams: list[_Stream] = field(default_factory=list)
    transports: list[asyncio.BaseTransport] = field(default_factory=list)
    remaining: int = 0
    armed: bool = False
    t_first: float | None = None
    t_done: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


async def _client_command(groups: dict[str, Group], command: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    name = command.get("group", "")
    if command["cmd"] == "connect":
        group = groups.setdefault(name, Group())
        started = time.monotonic()
        for port, count in command["targets"]:
            request = _request(port)
            for first in range(0, count, CONNECT_BATCH):
                batch = []
                for _ in range(min(CONNECT_BATCH, count - first)):
                    ready: asyncio.Future[None] = loop.create_future()
                    transport, stream = await loop.create_connection(
                        lambda r=request, f=ready, g=group: _Stream(r, g, f), HOST, port
                    )
                    group.streams.append(stream)
                    group.transports.append(transport)
                    batch.append(ready)
                await asyncio.wait_for(asyncio.gather(*batch), 30)
        return {"connected": len(group.streams), "seconds": time.monotonic() - started}
    group = groups[name]
    if command["cmd"] == "arm":
        n = command["n"]
        for stream in group.streams:
            stream.base = stream.count
            stream.goal = stream.count + n
        group.remaining = len(group.streams)
        group.t_first = group.t_done = None
        group.done.clear()
        group.armed = True
        return {"armed": len(group.streams)}
    if command["cmd"] == "wait":
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(group.done.wait(), command["timeout"])
        if not group.done.is_set():
            # Give stragglers a last chance to be counted, then report what arrived.
            await asyncio.sleep(0.2)
        group.armed = False
        deltas = [stream.count - stream.base for stream in group.streams]
        for stream in group.streams:
            stream.goal = -1
        return {
            "done": group.done.is_set(),
            "t_first": group.t_first,
            "t_done": group.t_done,
            "min": min(deltas),
            "max": max(deltas),
            "short": sum(1 for d in deltas if d < command["n"]),
            "lagged": sum(stream.lagged for stream in group.streams),
            "lost": sum(stream.lost for stream in group.streams),
        }
    if command["cmd"] == "close":
        for transport in group.transports:
            transport.close()
        await asyncio.sleep(0.1)
        return {"closed": len(group.transports)}
    raise ValueError(f"unknown command {command!r}")


async def client_main() -> None:
    loop = asyncio.get_running_loop()
    groups: dict[str, Group] = {}
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        try:
            reply = await _client_command(groups, json.loads(line))
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    for group in groups.values():
        for transport in group.transports:
            transport.close()


# -- publishing over HTTP ------------------------------------------------------------------------


def post_request(port: int, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST /sse/{CHANNEL} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.partition(b"\r\n")[0]
    match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    body = await reader.readexactly(int(match.group(1))) if match else b""
    if b" 202" not in status:
        raise RuntimeError(f"publish failed: {status!r} {body!r}")
    return body


async def publish(
    ports: Sequence[int], requests: Sequence[Sequence[bytes]], connections: int
) -> tuple[float, float]:
    """POST every request of ``requests[i]`` to ``ports[i]`` (``connections`` per port).

    Returns (time of the first write, time of the last 202), on ``time.monotonic()``.
    """
    lanes = []
    for port, reqs in zip(ports, requests, strict=True):
        position = [0]
        for _ in range(connections):
            reader, writer = await asyncio.open_connection(HOST, port)
            lanes.append((reader, writer, reqs, position))

    async def lane(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        reqs: Sequence[bytes],
        position: list[int],
    ) -> None:
        while position[0] < len(reqs):
            i = position[0]
            position[0] = i + 1
            writer.write(reqs[i])
            await read_response(reader)

    try:
        started = time.monotonic()
        await asyncio.gather(*(lane(*item) for item in lanes))
        finished = time.monotonic()
    finally:
        for _, writer, _, _ in lanes:
            writer.close()
    return started, finished


# -- 1. throughput -------------------------------------------------------------------------------

SETUPS = {
    "http": "Redis, POST to hub A; streams on A + B",
    "direct": "Redis, XADD from this process; streams on A + B",
    "memory": "in-memory, POST to C and to D; streams on C + D",
}
GROUPS = {"http": "redis", "direct": "redis", "memory": "memory"}
PROCESSES = ["hub A", "hub B", "hub C", "hub D", "client", "publisher", "redis"]


def tick_body(i: int) -> dict[str, Any]:
    return {"event": "tick", "data": {"n": i, "text": "hello, subscribers"}}


async def publish_direct(
    redis_url: str, prefix: str, bodies: Sequence[dict[str, Any]], concurrency: int
) -> tuple[float, float]:
    """``broadcast`` straight into the stream, from a RedisBackend of this process's own.

    The channel is not attached to a manager, so this process publishes (XADD) only: its
    backend's reader has no stream to read. ``concurrency`` broadcasts are in flight at
    once (redis-py opens as many connections; they are opened before the clock starts).
    """
    from sse_toolkit import ServerSentEvent, SSEChannel
    from sse_toolkit.backends.redis import RedisBackend

    backend = RedisBackend(redis_url, prefix=prefix)
    try:
        warm = SSEChannel(f"{CHANNEL}-warm", backend=backend)
        await asyncio.gather(*(warm.broadcast("warm") for _ in range(concurrency)))
        channel = SSEChannel(CHANNEL, backend=backend)
        events = [ServerSentEvent(body["data"], event=body["event"]) for body in bodies]
        position = [0]

        async def lane() -> None:
            while position[0] < len(events):
                i = position[0]
                position[0] = i + 1
                await channel.broadcast(events[i])

        started = time.monotonic()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        finished = time.monotonic()
    finally:
        await backend.close()
    return started, finished


class Cpu:
    """CPU seconds of named processes (and Redis, through INFO cpu) between two points."""

    def __init__(self, pids: dict[str, int], redis_client: Any) -> None:
        self.pids = pids
        self.redis = redis_client

    def snapshot(self) -> dict[str, float | None]:
        values: dict[str, float | None] = {
            name: cpu_seconds(pid) for name, pid in self.pids.items()
        }
        try:
            info = self.redis.info("cpu")
            values["redis"] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        except Exception:
            values["redis"] = None
        return values

    @staticmethod
    def delta(
        before: dict[str, float | None], after: dict[str, float | None]
    ) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, value in before.items():
            later = after.get(name)
            out[name] = None if value is None or later is None else later - value
        return out


@dataclass
class ThroughputRun:
    setup: str
    events: int
    seconds: float
    publish_seconds: float
    complete: bool
    check: dict[str, Any]
    cpu: dict[str, float | None]

    @property
    def rate(self) -> float:
        """Events/s: each event delivered to every subscriber (the slowest stream's count)."""
        return float(self.check["min"]) / self.seconds if self.seconds > 0 else 0.0

    @property
    def publish_rate(self) -> float:
        return self.events / self.publish_seconds


@dataclass
class Rig:
    """The running hubs, the client process and what the runs need to reach them."""

    args: argparse.Namespace
    prefix: str
    client: ClientProc
    hubs: dict[str, Hub]
    cpu: Cpu
    offset: int = 0

    def publish(
        self, setup: str, bodies: list[dict[str, Any]], concurrency: int
    ) -> tuple[float, float]:
        if setup == "direct":
            return asyncio.run(
                publish_direct(self.args.redis_url, self.prefix, bodies, concurrency)
            )
        names = ["A"] if setup == "http" else ["C", "D"]
        ports = [self.hubs[name].port for name in names]
        requests = [[post_request(port, body) for body in bodies] for port in ports]
        return asyncio.run(publish(ports, requests, concurrency))

    def bodies(self, n: int) -> list[dict[str, Any]]:
        first, self.offset = self.offset, self.offset + n
        return [tick_body(first + i) for i in range(n)]


def throughput_run(rig: Rig, setup: str, profile: Path | None = None) -> ThroughputRun:
    args, client = rig.args, rig.client
    group, events, publishers = GROUPS[setup], args.events, args.publishers
    # Warm-up through the same path, not timed: every stream must get exactly these.
    warmup = max(WARMUP, publishers)
    client.ask(10, cmd="arm", group=group, n=warmup)
    rig.publish(setup, rig.bodies(warmup), publishers)
    reply = client.ask(60, cmd="wait", group=group, timeout=30, n=warmup)
    if not (reply["done"] and reply["max"] == warmup and reply["lagged"] == 0):
        raise RuntimeError(f"{setup}: the warm-up did not arrive exactly: {reply}")
    bodies = rig.bodies(events)
    spies = start_profilers(rig, setup, profile) if profile is not None else []
    time.sleep(0.3)
    try:
        client.ask(10, cmd="arm", group=group, n=events)
        before = rig.cpu.snapshot()
        started, published = rig.publish(setup, bodies, publishers)
        timeout = max(30.0, 10 * (published - started))
        check = client.ask(timeout + 30, cmd="wait", group=group, timeout=timeout, n=events)
        after = rig.cpu.snapshot()
    finally:
        stop_profilers(spies)
    end = check["t_done"] if check["done"] else time.monotonic()
    return ThroughputRun(
        setup=setup,
        events=events,
        seconds=end - started,
        publish_seconds=published - started,
        complete=check["done"] and check["max"] == events and check["lagged"] == 0,
        check=check,
        cpu=Cpu.delta(before, after),
    )


def start_profilers(rig: Rig, setup: str, directory: Path) -> list[subprocess.Popen[bytes]]:
    """``py-spy record`` on the setup's hubs (raw collapsed stacks), until stopped."""
    names = ["A", "B"] if GROUPS[setup] == "redis" else ["C", "D"]
    spies = []
    for name in names:
        output = directory / f"{setup}-hub{name}.txt"
        argv = ["py-spy", "record", "-p", str(rig.hubs[name].proc.pid), "-r", "200"]
        argv += ["-f", "raw", "-o", str(output), "--nonblocking"]
        spies.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1.0)  # attached
    return spies


def stop_profilers(spies: list[subprocess.Popen[bytes]]) -> None:
    for spy in spies:
        if spy.poll() is None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    for spy in spies:
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            stop(spy)


def summarize_profile(path: Path, top: int = 12) -> None:
    """Where a hub's samples went: the hottest frames, self and inclusive."""
    total = 0
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
    if not total:
        print(f"  {path.name}: no samples")
        return
    print(f"\n  {path.name}: {total} samples; self time:")
    for frame, n in sorted(own.items(), key=lambda item: -item[1])[:top]:
        print(f"    {n / total:6.1%}  {frame}")
    print("  inclusive (sse_toolkit, redis, h11, uvicorn frames):")
    interesting = ("sse_toolkit", "redis", "h11", "uvicorn", "write", "send")
    shown = 0
    for frame, n in sorted(inclusive.items(), key=lambda item: -item[1]):
        if any(word in frame for word in interesting) and n < total:
            print(f"    {n / total:6.1%}  {frame}")
            shown += 1
            if shown == top * 2:
                break


def bench_throughput(
    args: argparse.Namespace, log_dir: Path, prefix: str, redis_client: Any
) -> list[ThroughputRun]:
    half = args.subscribers // 2
    split = [(0, half), (1, args.subscribers - half)]
    specs = [("A", prefix), ("B", prefix), ("C", None), ("D", None)]
    runs: list[ThroughputRun] = []
    client = ClientProc()
    try:
        with run_hubs(log_dir, specs, args.redis_url) as hub_list:
            hubs = {hub.name: hub for hub in hub_list}
            for group, names in (("redis", "AB"), ("memory", "CD")):
                targets = [[hubs[names[i]].port, n] for i, n in split]
                reply = client.ask(120, cmd="connect", group=group, targets=targets)
                print(f"  {group}: {reply['connected']} streams in {reply['seconds']:.1f} s")
            pids = {f"hub {hub.name}": hub.proc.pid for hub in hub_list}
            pids |= {"client": client.pid, "publisher": os.getpid()}
            rig = Rig(args, prefix, client, hubs, Cpu(pids, redis_client))
            order = list(SETUPS)
            for round_no in range(args.rounds):
                for setup in order if round_no % 2 == 0 else order[::-1]:
                    run = throughput_run(rig, setup)
                    runs.append(run)
                    print(f"  round {round_no + 1} {describe_throughput(run)}")
            if args.profile is not None:
                args.profile.mkdir(parents=True, exist_ok=True)
                print(f"\n  profiled runs (py-spy, not in the tables) -> {args.profile}")
                for setup in order:
                    run = throughput_run(rig, setup, args.profile)
                    print(f"  profiled {describe_throughput(run)}")
                for path in sorted(args.profile.glob("*-hub*.txt")):
                    summarize_profile(path)
            for group in ("redis", "memory"):
                client.ask(30, cmd="close", group=group)
    finally:
        client.close()
    return runs


def describe_throughput(run: ThroughputRun) -> str:
    status = "ok" if run.complete else f"INCOMPLETE {run.check}"
    cpu = ", ".join(
        f"{name} {value / run.seconds:.0%}"
        for name, value in run.cpu.items()
        if value is not None and value / run.seconds >= 0.01
    )
    return (
        f"{run.setup:<6}: {run.seconds:6.3f} s, {run.rate:7,.0f} events/s "
        f"(last 202 at {run.publish_seconds:6.3f} s); CPU/wall: {cpu}; {status}"
    )


# -- 2. latency ----------------------------------------------------------------------------------


_DATA = re.compile(rb"\ndata: (\d+)\n")


class _LatencyStream(asyncio.Protocol):
    """One stream that notes when each event's frame arrived (parses ``data: <seq>``)."""

    def __init__(self, request: bytes, ready: asyncio.Future[None], probe: LatencyProbe) -> None:
        self.request = request
        self.ready = ready
        self.probe = probe
        self.head = b""
        self.streaming = False
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if not self.streaming:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 200" not in self.head.partition(b"\r\n")[0]:
                if not self.ready.done():
                    error = RuntimeError(self.head[:200].decode(errors="replace"))
                    self.ready.set_exception(error)
                return
            data = self.head[end + 4 :]
            self.streaming = True
            if not self.ready.done():
                self.ready.set_result(None)
        buffer = self.buffer + data
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self.buffer = buffer
            return
        self.buffer = buffer[end + 2 :]
        probe = self.probe
        for match in _DATA.finditer(buffer, 0, end + 2):
            probe.arrived(int(match.group(1)), now)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(f"connection lost: {exc}"))


class LatencyProbe:
    """Send and arrival times of the events of one run (sequence numbers 0..total-1)."""

    def __init__(self, total: int, first_timed: int, subscribers: int) -> None:
        self.total = total
        self.first_timed = first_timed
        self.subscribers = subscribers
        self.sent: list[float | None] = [None] * total
        self.counts = [0] * total
        self.last = [0.0] * total  # each event's latency to its last subscriber
        self.first = [float("inf")] * total  # ... and to its first
        self.deliveries: list[float] = []
        self.acks: list[float] = []  # POST written -> 202 read
        self.complete = asyncio.Event()
        self.delivered = 0

    def arrived(self, seq: int, now: float) -> None:
        sent = self.sent[seq] if 0 <= seq < self.total else None
        if sent is None:
            return
        self.counts[seq] += 1
        self.delivered += 1
        if seq >= self.first_timed:
            latency = now - sent
            self.deliveries.append(latency)
            if latency > self.last[seq]:
                self.last[seq] = latency
            if latency < self.first[seq]:
                self.first[seq] = latency
        if self.delivered == self.total * self.subscribers:
            self.complete.set()


@dataclass
class LatencyRun:
    backend: str
    deliveries: list[float]
    first: list[float]
    last: list[float]
    acks: list[float]
    missing: int
    late_sends: int
    hub_cpu: float | None  # CPU / wall of the hub while publishing


async def latency_run(
    backend: str, hub: Hub, subscribers: int, events: int, interval: float
) -> LatencyRun:
    """Pace events open loop: each POST goes out on time on a free connection of a pool."""
    loop = asyncio.get_running_loop()
    port = hub.port
    total = WARMUP + events
    probe = LatencyProbe(total, WARMUP, subscribers)
    transports: list[asyncio.BaseTransport] = []
    writers: list[asyncio.StreamWriter] = []
    try:
        request = _request(port)
        readies = []
        for _ in range(subscribers):
            ready: asyncio.Future[None] = loop.create_future()
            transport, _ = await loop.create_connection(
                lambda f=ready: _LatencyStream(request, f, probe), HOST, port
            )
            transports.append(transport)
            readies.append(ready)
        await asyncio.wait_for(asyncio.gather(*readies), 30)
        pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        for _ in range(LATENCY_CONNECTIONS):
            reader, writer = await asyncio.open_connection(HOST, port)
            writers.append(writer)
            pool.put_nowait((reader, writer))
        requests = [post_request(port, {"data": str(i)}) for i in range(total)]

        async def post(i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sent = probe.sent[i] = time.perf_counter()
            writer.write(requests[i])
            await read_response(reader)
            if i >= WARMUP:
                probe.acks.append(time.perf_counter() - sent)
            pool.put_nowait((reader, writer))

        await asyncio.sleep(0.2)
        late = 0
        posts = []
        cpu_before = cpu_seconds(hub.proc.pid)
        start = time.perf_counter()
        for i in range(total):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if pool.empty() and i >= WARMUP:
                late += 1  # every connection still waits for its 202
            connection = await pool.get()
            posts.append(asyncio.create_task(post(i, *connection)))
        await asyncio.gather(*posts)
        cpu_after = cpu_seconds(hub.proc.pid)
        wall = time.perf_counter() - start
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(probe.complete.wait(), 10)
        hub_cpu = None
        if cpu_before is not None and cpu_after is not None:
            hub_cpu = (cpu_after - cpu_before) / wall
        return LatencyRun(
            backend,
            probe.deliveries,
            probe.first[WARMUP:],
            probe.last[WARMUP:],
            probe.acks,
            total * subscribers - probe.delivered,
            late,
            hub_cpu,
        )
    finally:
        for writer in writers:
            writer.close()
        for transport in transports:
            transport.close()
        await asyncio.sleep(0.2)


def bench_latency(args: argparse.Namespace, log_dir: Path, prefix: str) -> list[LatencyRun]:
    runs: list[LatencyRun] = []
    specs = [("memory", None), ("redis", f"{prefix}lat:")]
    with run_hubs(log_dir, specs, args.redis_url) as hub_list:
        hubs = {hub.name: hub for hub in hub_list}
        order = ["memory", "redis"]
        for round_no in range(args.rounds):
            for backend in order if round_no % 2 == 0 else order[::-1]:
                run = asyncio.run(
                    latency_run(
                        backend,
                        hubs[backend],
                        args.latency_subscribers,
                        args.latency_events,
                        args.interval_ms / 1000,
                    )
                )
                runs.append(run)
                p = percentiles(run.deliveries)
                cpu = "n/a" if run.hub_cpu is None else f"{run.hub_cpu:.0%}"
                print(
                    f"  round {round_no + 1} {backend:<6}: p50 {ms(p[50])}, p90 {ms(p[90])}, "
                    f"p99 {ms(p[99])}, max {ms(max(run.deliveries))} ms; "
                    f"POST->202 p50 {ms(percentiles(run.acks)[50])} ms; hub CPU {cpu}; "
                    f"{len(run.deliveries):,} deliveries, {run.missing} missing, "
                    f"{run.late_sends} late sends"
                )
    return runs


def percentiles(values: Sequence[float]) -> dict[int, float]:
    ordered = sorted(values)
    last = len(ordered) - 1
    return {q: ordered[min(last, round(q / 100 * last))] for q in (50, 90, 99)}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


# -- report --------------------------------------------------------------------------------------


def median_and_range(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} [{fmt(min(values))} - {fmt(max(values))}]"


def report_throughput(runs: list[ThroughputRun], args: argparse.Namespace) -> None:
    subscribers = args.subscribers
    print(
        f"\n### Throughput: {args.events:,} events to {subscribers:,} subscribers "
        f"({subscribers // 2:,} per hub process), {args.publishers} publishers\n"
    )
    print(
        "| setup | events/s, best | events/s, median [min - max] | deliveries/s, best "
        "| publish rate, best | publish rate, median | last 202 -> last delivery, median "
        "| complete runs |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for setup, title in SETUPS.items():
        mine = [run for run in runs if run.setup == setup]
        if not mine:
            continue
        rates = [run.rate for run in mine]
        publish_rates = [run.publish_rate for run in mine]
        tails = [run.seconds - run.publish_seconds for run in mine]
        complete = sum(run.complete for run in mine)
        print(
            f"| {title} | {max(rates):,.0f} | "
            f"{median_and_range(rates, lambda v: f'{v:,.0f}')} | "
            f"{max(rates) * subscribers:,.0f} | {max(publish_rates):,.0f} /s | "
            f"{statistics.median(publish_rates):,.0f} /s | "
            f"{statistics.median(tails) * 1000:,.0f} ms | {complete}/{len(mine)} |"
        )
    by_setup = {setup: [run for run in runs if run.setup == setup] for setup in SETUPS}
    ratios = [
        http.rate / memory.rate
        for http, memory in zip(by_setup["http"], by_setup["memory"], strict=False)
    ]
    if ratios:
        print(
            "\nRedis (POST) / in-memory events/s, within each round: "
            f"{median_and_range(ratios, lambda v: f'{v:.2f}x')}"
        )
    print(
        "\nCPU per event in the median round: CPU µs / event, and (CPU / wall time); "
        "Redis = INFO cpu of the shared server\n"
    )
    print("| setup | " + " | ".join(PROCESSES) + " | total |")
    print("|---|" + "---|" * (len(PROCESSES) + 1))
    for setup, mine in by_setup.items():
        if not mine:
            continue
        run = sorted(mine, key=lambda r: r.rate)[len(mine) // 2]
        cells = []
        total = 0.0
        for name in PROCESSES:
            value = run.cpu.get(name)
            if value is None:
                cells.append("n/a")
                continue
            total += value
            share = value / run.seconds
            cells.append("-" if share < 0.01 else f"{value / run.events * 1e6:,.0f} ({share:.0%})")
        cells.append(f"{total / run.events * 1e6:,.0f} ({total / run.seconds:.0%})")
        print(f"| {setup} | " + " | ".join(cells) + " |")


def report_latency(runs: list[LatencyRun], args: argparse.Namespace) -> None:
    print(
        f"\n### Latency: 1 hub, {args.latency_subscribers} subscribers, "
        f"{args.latency_events:,} events, one every {args.interval_ms:g} ms\n"
    )
    print(
        "Milliseconds from writing the POST to reading the frame. Every (subscriber, event) "
        "delivery; then per event, its first and its last subscriber. Best and median round."
    )
    print(
        "\n| backend | p50, best / median | p90, median | p99, best / median "
        "| first subscriber p50 / p99 | last subscriber p50 / p99 | POST -> 202 p50 | hub CPU |"
    )
    print("|---|---|---|---|---|---|---|---|")
    table: dict[str, dict[str, list[float]]] = {}
    for backend in ("memory", "redis"):
        rows: dict[str, list[float]] = {}
        for run in (r for r in runs if r.backend == backend):
            p, first, last = (percentiles(v) for v in (run.deliveries, run.first, run.last))
            values = {
                "p50": p[50],
                "p90": p[90],
                "p99": p[99],
                "f50": first[50],
                "f99": first[99],
                "l50": last[50],
                "l99": last[99],
                "ack": percentiles(run.acks)[50],
                "cpu": run.hub_cpu or 0.0,
            }
            for key, value in values.items():
                rows.setdefault(key, []).append(value)
        table[backend] = rows
        med = {key: statistics.median(values) for key, values in rows.items()}
        print(
            f"| {backend} | {ms(min(rows['p50']))} / {ms(med['p50'])} | {ms(med['p90'])} | "
            f"{ms(min(rows['p99']))} / {ms(med['p99'])} | {ms(med['f50'])} / {ms(med['f99'])} | "
            f"{ms(med['l50'])} / {ms(med['l99'])} | {ms(med['ack'])} | {med['cpu']:.0%} |"
        )
    mem, red = table["memory"], table["redis"]

    def diff(key: str, pick: Callable[[list[float]], float] = statistics.median) -> str:
        return ms(pick(red[key]) - pick(mem[key]))

    print(
        f"| **Redis - memory** | {diff('p50', min)} / {diff('p50')} | {diff('p90')} | "
        f"{diff('p99', min)} / {diff('p99')} | {diff('f50')} / {diff('f99')} | "
        f"{diff('l50')} / {diff('l99')} | {diff('ack')} | |"
    )
    print()
    for key, label in (("p50", "p50"), ("p99", "p99"), ("f50", "first-subscriber p50")):
        paired = [r - m for r, m in zip(red[key], mem[key], strict=True)]
        print(
            f"Redis - memory, {label}, within each round: "
            f"{median_and_range(paired, lambda v: f'{v * 1000:.2f} ms')}"
        )
    missing = sum(run.missing for run in runs)
    late = sum(run.late_sends for run in runs)
    print(f"Missing deliveries: {missing}; publishes that found no free connection: {late}")


# -- main ----------------------------------------------------------------------------------------


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def header(args: argparse.Namespace, redis_client: Any) -> None:
    redis_server = "n/a"
    if shutil.which("redis-server"):
        done = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        )
        redis_server = done.stdout.strip()
    info = redis_client.info("server")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    ).stdout.strip()
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"machine: {platform.platform()}, nproc {os.cpu_count()}, load {os.getloadavg()}")
    print(f"python {platform.python_version()}; redis-server: {redis_server}")
    print(f"redis at {args.redis_url}: {info.get('redis_version')}, pid {info.get('process_id')}")
    print(
        f"uvicorn {_version('uvicorn')}, h11 {_version('h11')}, uvloop {_version('uvloop')}, "
        f"httptools {_version('httptools')}, redis-py {_version('redis')}, "
        f"anyio {_version('anyio')}; sse_toolkit at {commit or '?'}"
    )
    print(
        f"args: subscribers {args.subscribers}, events {args.events}, rounds {args.rounds}; "
        f"latency: {args.latency_subscribers} subscribers, {args.latency_events} events "
        f"every {args.interval_ms:g} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000, help="throughput: streams")
    parser.add_argument("--events", type=int, default=2000, help="throughput: events per run")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (3; --quick: 1)")
    parser.add_argument("--quick", action="store_true", help="1 round, 200 subscribers")
    parser.add_argument(
        "--publishers",
        type=int,
        default=PUBLISH_CONNECTIONS,
        help="throughput: concurrent publishes (POST connections per hub; at most 100)",
    )
    parser.add_argument("--latency-subscribers", type=int, default=100)
    parser.add_argument("--latency-events", type=int, default=300)
    parser.add_argument("--interval-ms", type=float, default=20.0, help="latency: pacing")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="after the rounds, one more run per setup with py-spy on the hubs; files here",
    )
    parser.add_argument(
        "--only", choices=["throughput", "latency"], default=None, help="one part only"
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("SSE_TOOLKIT_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    parser.add_argument(
        "--role", choices=["main", "client"], default="main", help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.role == "client":
        asyncio.run(client_main())
        return
    if args.quick:
        if args.subscribers == parser.get_default("subscribers"):
            args.subscribers = 200
        if args.events == parser.get_default("events"):
            args.events = 500
        if args.latency_events == parser.get_default("latency_events"):
            args.latency_events = 150
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3

    import redis

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwind: the finally blocks stop every process

    signal.signal(signal.SIGTERM, terminate)
    redis_client = redis.Redis.from_url(args.redis_url, socket_timeout=10)
    redis_client.ping()
    prefix = f"bench-{uuid.uuid4().hex}:"
    header(args, redis_client)
    print(f"key prefix: {prefix}")
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
            log_dir = Path(tmp)
            throughput: list[ThroughputRun] = []
            latency: list[LatencyRun] = []
            if args.only in (None, "throughput"):
                print("\nthroughput:")
                throughput = bench_throughput(args, log_dir, prefix, redis_client)
            if args.only in (None, "latency"):
                print("\nlatency:")
                latency = bench_latency(args, log_dir, prefix)
            if throughput:
                report_throughput(throughput, args)
            if latency:
                report_latency(latency, args)
    finally:
        keys = list(redis_client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            redis_client.delete(*keys)
        redis_client.close()
    print(f"\nload average at the end: {os.getloadavg()}; took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
