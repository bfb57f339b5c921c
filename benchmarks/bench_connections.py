"""Connection density: N idle streams on one server process, what they cost, how they behave.

    python benchmarks/bench_connections.py [--n 1000,2000] [--servers bare,listener,sseapp]
        [--heartbeat 5] [--server-impl uvicorn] [--http httptools] [--plot PATH] [--redis]

For each server kind (`benchmarks/connection_apps.py`) and each N, the benchmark starts
``python -m sse_toolkit run benchmarks.connection_apps:<kind>`` in its own process (its
open-file limit raised to N + 1000), reads its RSS with no stream open, then opens N idle
streams from client processes (at most ``--per-client`` connections each; at most
``--per-source`` streams per source address, 127.1.0.1, 127.1.0.2, ...: SSEApp allows 1,000
streams per client address by default; each process an asyncio loop of raw sockets that only looks
for the response head, keep-alives and the published event's marker). Measured:

- accept rate: streams per second until every stream has its response head;
- RSS per stream: (RSS with the N streams open, after the idle window - RSS before) / N;
  ``ours``: that minus the ``bare`` app's figure at the same N (the server's own share: a
  connection, its protocol object, the ASGI task awaiting ``receive()``);
- heartbeats (kinds that send them): during an idle window of two heartbeat intervals
  starting once all streams are open, the share of streams that got a keep-alive within
  interval + 1 s of the window's start, and the longest gap any stream saw;
- max loop stall: the longest lateness of a probe task in the server (sleeping 10 ms in a
  loop) during the idle window, and again during the fan-out;
- fan-out: one ``POST /publish`` of a ~1 KB event; first / median / last delivery, from the
  server's timestamp taken just before its publish call to each client's receipt
  (``time.time_ns()`` when the chunk holding the marker is read), and how many got it;
  ``--fanouts`` rounds (default 3), each figure the median of the rounds; and the server's
  CPU time per delivery (its CPU seconds during a round / N);
- CPU: the server process's CPU seconds while opening, its CPU share while idle.

Clients and server share this machine's cores: past a few thousand streams the client
processes' own CPU is part of what accept rate and delivery times measure.

With ``--redis [URL]``, every kind that shares channels (``listener``, ``sseapp``; ``bare`` as
the baseline) runs on two server processes sharing channels through Redis with a unique
prefix; the clients are split between them, and the event is published on the first one.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import http.client
import itertools
import json
import math
import multiprocessing
import os
import resource
import signal
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.raw_streams import PYTHON, ServerProcess, free_port

KINDS = ("bare", "listener", "sseapp", "sse_starlette", "lilya")
HEARTBEAT_KINDS = ("sseapp", "sse_starlette", "lilya")
SHARED_KINDS = ("bare", "listener", "sseapp")  # served on two processes with --redis
MARKER = b"data: PUB "
STREAM_PATH = "/events"
OPEN_CONCURRENCY = 256  # connections per client process waiting for their head at once


# -- the client processes ------------------------------------------------------------------


class Stream(asyncio.Protocol):
    """One idle stream: its head, the times keep-alives arrived, the published event's."""

    __slots__ = ("client", "ended", "head", "head_at", "keepalives", "pub_ns", "status", "tail")

    def __init__(self, client: Client) -> None:
        self.client = client
        self.head = b""
        self.head_at = 0.0  # monotonic; 0: no head yet
        self.status = 0
        self.keepalives: list[float] | None = None
        self.pub_ns = 0
        self.tail = b""
        self.ended = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.client.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self.head_at:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head_at = time.monotonic()
            self.status = int(self.head[9:12])
            data = self.head[end + 4 :]
            self.head = b""
            self.client.got_head(self)
            if not data:
                return
        if not self.pub_ns and MARKER in self.tail + data:
            self.pub_ns = time.time_ns()
            self.client.got_event()
        elif self.keepalives is None:
            self.keepalives = [time.monotonic()]
        else:
            self.keepalives.append(time.monotonic())
        self.tail = data[-len(MARKER) :]

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        if not self.head_at:
            self.client.got_head(self)


class Client:
    """The streams of one client process."""

    def __init__(self, host: str, port: int, first: int, per_source: int) -> None:
        self.host, self.port = host, port
        self.first, self.per_source = first, per_source  # of the streams, globally
        self.request = (
            f"GET {STREAM_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        ).encode()
        self.streams: list[Stream] = []
        self.waiting: dict[int, asyncio.Future[None]] = {}
        self.events = 0
        self.all_events: asyncio.Event | None = None
        self.transports: list[asyncio.Transport] = []

    def got_head(self, stream: Stream) -> None:
        future = self.waiting.pop(id(stream), None)
        if future is not None and not future.done():
            future.set_result(None)

    def got_event(self) -> None:
        self.events += 1
        if self.all_events is not None and self.events >= self.open_count():
            self.all_events.set()

    def open_count(self) -> int:
        return sum(1 for s in self.streams if s.status == 200 and not s.ended)

    async def open(self, count: int, timeout: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        limit = asyncio.Semaphore(OPEN_CONCURRENCY)
        errors: dict[str, int] = {}
        started = time.time()

        async def one(index: int) -> None:
            stream = Stream(self)
            source = source_address((self.first + index) // self.per_source)
            async with limit:
                future = loop.create_future()
                self.waiting[id(stream)] = future
                try:
                    transport, _ = await loop.create_connection(
                        lambda: stream, self.host, self.port, local_addr=(source, 0)
                    )
                    self.transports.append(transport)
                    self.streams.append(stream)
                    await asyncio.wait_for(future, 30)
                except (OSError, asyncio.TimeoutError) as exc:
                    self.waiting.pop(id(stream), None)
                    name = type(exc).__name__
                    errors[name] = errors.get(name, 0) + 1

        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(count))), timeout)
        done = time.time()
        statuses: dict[str, int] = {}
        for stream in self.streams:
            key = str(stream.status) if stream.head_at else "no head"
            statuses[key] = statuses.get(key, 0) + 1
        return {
            "started": started,
            "done": done,
            "ok": self.open_count(),
            "statuses": statuses,
            "errors": errors,
        }

    def heartbeats(self, start: float, end: float, interval: float) -> dict[str, Any]:
        """Keep-alives seen in [start, end] (monotonic): punctual streams and the worst gap."""
        punctual = with_any = 0
        worst = 0.0
        streams = [s for s in self.streams if s.status == 200 and not s.ended]
        for stream in streams:
            times = [t for t in stream.keepalives or () if start <= t <= end]
            if not times:
                worst = max(worst, end - start)
                continue
            with_any += 1
            if times[0] <= start + interval + 1.0:
                punctual += 1
            gap = times[0] - start
            for before, after in itertools.pairwise(times):
                gap = max(gap, after - before)
            worst = max(worst, gap)
        return {"streams": len(streams), "punctual": punctual, "with_any": with_any, "worst": worst}

    async def wait_event(self, timeout: float) -> dict[str, Any]:
        self.all_events = asyncio.Event()
        if self.events >= self.open_count():
            self.all_events.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.all_events.wait(), timeout)
        arrivals = array.array("q", (s.pub_ns for s in self.streams if s.pub_ns))
        return {"arrivals": arrivals.tobytes(), "expected": self.open_count()}

    def forget_event(self) -> None:
        for stream in self.streams:
            stream.pub_ns = 0
            stream.tail = b""
        self.events = 0
        self.all_events = None

    def close(self) -> None:
        for transport in self.transports:
            transport.abort()


def source_address(index: int) -> str:
    """The index-th client source address: 127.1.0.1, ..., 127.1.0.250, 127.1.1.1, ...
    (127.0.0.1 is left to the server and to this process's own requests)."""
    return f"127.{1 + index // 62500}.{index // 250 % 250}.{index % 250 + 1}"


def client_main(
    conn: Connection, host: str, port: int, first: int, per_source: int, files: int
) -> None:
    """A client process: obey the parent's commands until ``close``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
    asyncio.run(_client_loop(conn, Client(host, port, first, per_source)))


async def _client_loop(conn: Connection, client: Client) -> None:
    loop = asyncio.get_running_loop()
    while True:
        command, *args = await loop.run_in_executor(None, conn.recv)
        cpu_before = time.process_time()
        if command == "open":
            reply: dict[str, Any] = await client.open(*args)
        elif command == "heartbeats":
            reply = client.heartbeats(*args)
        elif command == "event":
            reply = await client.wait_event(*args)
        elif command == "forget_event":  # (before the next fan-out round)
            client.forget_event()
            reply = {}
        else:
            client.close()
            conn.send({"cpu": time.process_time()})
            return
        reply["cpu"] = time.process_time() - cpu_before
        conn.send(reply)


@dataclass
class Clients:
    """The client processes of one measurement, each with its share of the streams."""

    processes: list[Any] = field(default_factory=list)
    pipes: list[Connection] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    @classmethod
    def start(cls, ports: list[int], n: int, per_client: int, per_source: int) -> Clients:
        context = multiprocessing.get_context("fork")
        k = max(math.ceil(n / per_client), len(ports))
        k = math.ceil(k / len(ports)) * len(ports)  # (the same share for every server)
        clients = cls()
        first = 0
        for index in range(k):
            count = n // k + (1 if index < n % k else 0)
            parent, child = context.Pipe()
            # (each process starts on a fresh source address)
            first = math.ceil(first / per_source) * per_source
            port = ports[index % len(ports)]
            args = (child, "127.0.0.1", port, first, per_source, count + 1000)
            first += count
            process = context.Process(target=client_main, args=args, daemon=True)
            process.start()
            clients.processes.append(process)
            clients.pipes.append(parent)
            clients.counts.append(count)
        return clients

    def ask(self, commands: list[tuple[Any, ...]], timeout: float) -> list[dict[str, Any]]:
        for pipe, command in zip(self.pipes, commands, strict=True):
            pipe.send(command)
        deadline = time.monotonic() + timeout
        replies = []
        for pipe in self.pipes:
            if not pipe.poll(max(deadline - time.monotonic(), 0.0)):
                raise TimeoutError(f"a client process did not answer {commands[0][0]!r} in time")
            replies.append(pipe.recv())
        return replies

    def ask_all(self, command: tuple[Any, ...], timeout: float) -> list[dict[str, Any]]:
        return self.ask([command] * len(self.pipes), timeout)

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError, ValueError):
                pipe.send(("close",))
        deadline = time.monotonic() + 10
        for process in self.processes:
            process.join(max(deadline - time.monotonic(), 0.1))
            if process.is_alive():
                process.kill()
                process.join()


# -- the server ----------------------------------------------------------------------------


def request(port: int, method: str, path: str, timeout: float = 30.0) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=b"" if method == "POST" else None)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: {response.status} {body[:200]!r}")
        return dict(json.loads(body))
    finally:
        connection.close()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_servers(
    kind: str, n: int, args: argparse.Namespace, count: int
) -> list[tuple[ServerProcess, int]]:
    env = {"SSE_BENCH_HEARTBEAT": repr(args.heartbeat)}
    if args.redis:
        env |= {
            "SSE_BENCH_REDIS_URL": args.redis,
            "SSE_BENCH_REDIS_PREFIX": f"sse-bench-{uuid.uuid4().hex[:12]}:",
        }
    # As many files as N needs, up to the hard limit: raising that needs CAP_SYS_RESOURCE,
    # which a sandbox may not grant (here the hard limit is 20,000: N <= ~19,000 then).
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    n = -(-n // count)  # (per server process: the clients are split between them)
    files = min(max(n + 1000, 4096), hard) if hard != resource.RLIM_INFINITY else n + 1000
    if n + 200 > files and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (n + 1000, n + 1000))
            files = n + 1000
        except (ValueError, OSError):
            raise SystemExit(
                f"{n:,} streams per server process need about {n + 1000} open files, and"
                f" the hard limit is {hard} (raising it needs CAP_SYS_RESOURCE): use at"
                f" most {hard - 1000} per process"
            ) from None
    servers: list[tuple[ServerProcess, int]] = []
    try:
        for index in range(count):
            port = free_port()
            command = [
                *(PYTHON, "-m", "sse_toolkit", "run", f"benchmarks.connection_apps:{kind}"),
                *("--port", str(port), "--server", args.server_impl, "--http", args.http),
                *("--no-access-log", "--log-level", "warning"),
            ]
            log = args.logs / f"{kind}-{n}-{index}.log"
            server = ServerProcess(command, log, env=env, rlimit_nofile=(files, files))
            servers.append((server, port))
        for server, port in servers:
            server.wait_listening(port, 60)
        return servers
    except BaseException:
        for server, _ in servers:
            server.stop()
        raise


def measure(kind: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    processes = 2 if args.redis else 1
    started = start_servers(kind, n, args, processes)
    servers = [server for server, _ in started]
    ports = [port for _, port in started]
    clients: Clients | None = None
    result: dict[str, Any] = {"server": kind, "n": n, "processes": processes}
    try:
        time.sleep(1.0)  # (imports done, the loop settled)
        result["base_rss"] = sum(request(port, "GET", "/_probe")["rss_bytes"] for port in ports)
        clients = Clients.start(ports, n, args.per_client, args.per_source)
        cpu = [cpu_seconds(server.proc.pid) for server in servers]
        open_timeout = 60 + n / 200
        opened = clients.ask([("open", c, open_timeout) for c in clients.counts], open_timeout + 30)
        cpu_open = sum(cpu_seconds(s.proc.pid) for s in servers) - sum(cpu)
        ok = sum(r["ok"] for r in opened)
        seconds = max(r["done"] for r in opened) - min(r["started"] for r in opened)
        statuses: dict[str, int] = {}
        errors: dict[str, int] = {}
        for reply in opened:
            for key, value in reply["statuses"].items():
                statuses[key] = statuses.get(key, 0) + value
            for key, value in reply["errors"].items():
                errors[key] = errors.get(key, 0) + value
        result |= {
            "opened": ok,
            "open_s": seconds,
            "accept_rate": ok / seconds if seconds > 0 else None,
            "statuses": statuses,
            "errors": errors,
            "server_cpu_open_s": cpu_open,
            "client_cpu_open_s": sum(r["cpu"] for r in opened),
        }

        # Idle: two heartbeat intervals, the probe watching.
        for port in ports:
            request(port, "POST", "/_probe/reset")
        idle_start = time.monotonic()
        cpu = [cpu_seconds(server.proc.pid) for server in servers]
        time.sleep(2 * args.heartbeat)
        idle_end = time.monotonic()
        idle_cpu = sum(cpu_seconds(s.proc.pid) for s in servers) - sum(cpu)
        probes = [request(port, "GET", "/_probe") for port in ports]
        rss = sum(p["rss_bytes"] for p in probes)
        result |= {
            "rss": rss,
            "server_streams": sum(p["streams"] for p in probes),
            "rss_per_stream": (rss - result["base_rss"]) / ok if ok else None,
            "stall_idle_ms": max(p["max_lateness_ms"] for p in probes),
            "late_50ms_idle": sum(p["late_50ms"] for p in probes),
            "server_cpu_idle": idle_cpu / (idle_end - idle_start),
        }
        if kind in HEARTBEAT_KINDS:
            beats = clients.ask_all(("heartbeats", idle_start, idle_end, args.heartbeat), 60)
            streams = sum(b["streams"] for b in beats)
            result |= {
                "hb_punctual": sum(b["punctual"] for b in beats) / streams if streams else None,
                "hb_with_any": sum(b["with_any"] for b in beats),
                "hb_worst_gap_s": max(b["worst"] for b in beats),
            }

        # Fan-out: one ~1 KB event, --fanouts times (each figure: the median of the rounds).
        targets = ports if kind == "bare" else ports[:1]  # bare shares nothing
        rounds: list[dict[str, Any]] = []
        for round_no in range(args.fanouts):
            if round_no:
                clients.ask_all(("forget_event",), 30)
                time.sleep(0.5)
            for port in ports:
                request(port, "POST", "/_probe/reset")
            cpu = [cpu_seconds(server.proc.pid) for server in servers]
            stamps = [request(port, "POST", "/publish")["stamp_ns"] for port in targets]
            events = clients.ask_all(("event", args.fanout_timeout), args.fanout_timeout + 30)
            cpu_fanout = sum(cpu_seconds(s.proc.pid) for s in servers) - sum(cpu)
            stall = max(request(port, "GET", "/_probe")["max_lateness_ms"] for port in ports)
            latencies = sorted(
                (arrival - min(stamps)) / 1e6
                for reply in events
                for arrival in array.array("q", reply["arrivals"])
            )
            rounds.append(
                {
                    "server_cpu_fanout_s": cpu_fanout,
                    "stall_fanout_ms": stall,
                    "delivered": len(latencies),
                    "expected": sum(r["expected"] for r in events),
                    "fanout_first_ms": latencies[0] if latencies else None,
                    "fanout_median_ms": statistics.median(latencies) if latencies else None,
                    "fanout_last_ms": latencies[-1] if latencies else None,
                }
            )
        result["fanout_rounds"] = rounds
        for key in rounds[0]:
            values = [r[key] for r in rounds if r[key] is not None]
            result[key] = statistics.median(values) if values else None
        result["delivered"] = min(r["delivered"] for r in rounds)
        result["server_us_per_delivery"] = result["server_cpu_fanout_s"] / ok * 1e6 if ok else None
        return result
    finally:
        if clients is not None:
            clients.stop()
        for server in servers:
            server.stop()


# -- output --------------------------------------------------------------------------------

COLUMNS = (
    "server | N | opened | accept/s | base RSS MB | RSS MB | KB/stream | ours KB/stream"
    " | heartbeat on time | worst gap s | max stall idle ms | stall fan-out ms"
    " | fan-out first / median / last ms | server µs per delivery | delivered"
    " | server CPU open s / idle %"
)


def _f(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def row(result: dict[str, Any], bare: dict[str, Any] | None) -> str:
    if "error" in result:
        return f"| {result['server']} | {result['n']:,} | failed: {result['error']} |"
    per = result["rss_per_stream"]
    ours = per - bare["rss_per_stream"] if bare and bare.get("rss_per_stream") is not None else None
    punctual = result.get("hb_punctual")
    fanout = " / ".join(_f(result.get(f"fanout_{k}_ms")) for k in ("first", "median", "last"))
    cells = [
        result["server"] + (" x2 (Redis)" if result["processes"] > 1 else ""),
        f"{result['n']:,}",
        f"{result['opened']:,}",
        _f(result["accept_rate"], ",.0f"),
        _f(result["base_rss"] / 2**20),
        _f(result["rss"] / 2**20),
        _f(per / 1024 if per is not None else None, ".2f"),
        _f(ours / 1024 if ours is not None else None, ".2f"),
        "-" if punctual is None else f"{punctual:.1%}",
        _f(result.get("hb_worst_gap_s"), ".2f"),
        _f(result["stall_idle_ms"]),
        _f(result["stall_fanout_ms"]),
        fanout,
        _f(result.get("server_us_per_delivery")),
        f"{result['delivered']:,}/{result['expected']:,}",
        f"{result['server_cpu_open_s']:.1f} / {result['server_cpu_idle']:.1%}",
    ]
    return "| " + " | ".join(cells) + " |"


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (memory, fanout) = plt.subplots(1, 2, figsize=(12, 4.5))
    for kind in dict.fromkeys(r["server"] for r in results):
        runs = [r for r in results if r["server"] == kind and "error" not in r]
        ns = [r["n"] for r in runs]
        memory.plot(ns, [r["rss_per_stream"] / 1024 for r in runs], marker="o", label=kind)
        last = [(r["n"], r["fanout_last_ms"]) for r in runs if r["fanout_last_ms"] is not None]
        if last:
            fanout.plot([n for n, _ in last], [ms for _, ms in last], marker="o", label=kind)
    memory.set(xscale="log", xlabel="idle streams (N)", ylabel="RSS per stream (KB)")
    memory.set_title("Server RSS per idle stream (above the empty server)")
    fanout.set(xscale="log", yscale="log", xlabel="idle streams (N)", ylabel="ms")
    fanout.set_title("One 1 KB event: last delivery after publish")
    ns = sorted({r["n"] for r in results})
    for axes in (memory, fanout):
        axes.set_xticks(ns, [f"{n:,}" for n in ns])
        axes.minorticks_off()
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _int_list(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=_int_list, default=[1000, 2000], help="e.g. 1000,10000")
    parser.add_argument(
        "--servers",
        type=lambda text: text.split(","),
        default=["bare", "listener", "sseapp", "sse_starlette", "lilya"],
        help=f"comma-separated, from {','.join(KINDS)}",
    )
    parser.add_argument("--server-impl", default="uvicorn", help="the runner's --server")
    parser.add_argument("--http", default="httptools", choices=("h11", "httptools", "auto"))
    parser.add_argument(
        "--heartbeat", type=float, default=5.0, help="heartbeat/ping interval (s); idle = 2x"
    )
    parser.add_argument(
        "--per-client",
        type=int,
        default=2500,
        help="streams per client process (one process reading 10,000 streams is slower than"
        " the server: its last delivery came 3.4 s after the publish, 0.6 s with 2,500)",
    )
    parser.add_argument(
        "--per-source",
        type=int,
        default=500,
        help="streams per client source address (SSEApp allows 1,000 per client by default)",
    )
    parser.add_argument("--fanout-timeout", type=float, default=15.0)
    parser.add_argument(
        "--fanouts", type=int, default=3, help="fan-out rounds (each figure: their median)"
    )
    parser.add_argument(
        "--redis",
        nargs="?",
        const="redis://127.0.0.1:6379/0",
        default=None,
        help="two server processes sharing channels through Redis (default URL: %(const)s)",
    )
    parser.add_argument("--json", type=Path, default=Path("/tmp/bench_connections/results.json"))
    parser.add_argument("--logs", type=Path, default=Path("/tmp/bench_connections"))
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG plot there")
    args = parser.parse_args()
    unknown = set(args.servers) - set(KINDS)
    if unknown:
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    if args.redis:
        skipped = [kind for kind in args.servers if kind not in SHARED_KINDS]
        if skipped:
            print(f"# --redis: skipping {', '.join(skipped)} (no shared channels)")
        args.servers = [kind for kind in args.servers if kind in SHARED_KINDS]
    args.logs.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))  # (finally blocks run)

    print(
        f"# bench_connections: {args.server_impl} ({args.http}), heartbeat {args.heartbeat:g} s,"
        f" idle window {2 * args.heartbeat:g} s, {os.cpu_count()} CPUs"
    )
    print(f"| {COLUMNS} |")
    print("|" + "---|" * (COLUMNS.count("|") + 1))
    results: list[dict[str, Any]] = []
    for n in args.n:
        bare: dict[str, Any] | None = None
        for kind in args.servers:
            try:
                result = measure(kind, n, args)
            except (RuntimeError, TimeoutError, AssertionError, OSError) as exc:
                result = {"server": kind, "n": n, "error": f"{type(exc).__name__}: {exc}"[:300]}
            if kind == "bare" and "error" not in result:
                bare = result
            if bare is not None and "error" not in result and bare is not result:
                result["ours_per_stream"] = result["rss_per_stream"] - bare["rss_per_stream"]
            results.append(result)
            print(row(result, bare if bare is not result else None), flush=True)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1))
    print(f"# results: {args.json}; server logs: {args.logs}")
    if args.plot is not None:
        plot(results, args.plot)
        print(f"# plot: {args.plot}")


if __name__ == "__main__":
    main()
