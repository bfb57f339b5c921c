"""RedisBackend against real Redis servers.

In-process managers stand in for processes (each has its own backend, so its own
connections and reader); the hub command runs as real processes for the end-to-end
tests. Tests that stop, restart or cut Redis run their own ``redis-server`` on a free
port; the others use the shared one (``SSE_TOOLKIT_REDIS_URL``, 127.0.0.1:6379 by default)
under a unique key prefix, deleted afterwards. Without a Redis, tests/conftest.py skips
these tests (fails them with CI=true).

The backend is asyncio-only, so the in-process tests run on asyncio only; one test checks
the clear error on trio.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import re
import shutil
import subprocess
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest
from httpx_sse import connect_sse

from sse_toolkit import (
    HEARTBEAT,
    LAGGED_EVENT,
    BackendUnavailable,
    ChannelManager,
    ServerSentEvent,
    SSEChannel,
)
from sse_toolkit.channel import BACKEND_ORIGIN, Listener

from .conftest import redis_url
from .servers import free_port
from .test_cli import JSON, Hub, run_hub, stop, wait_subscribers

try:
    import redis
    import redis.exceptions

    from sse_toolkit.backends.redis import RedisBackend
except ImportError:  # the conftest hook skips these tests (fails them with CI=true)
    pass

pytestmark = pytest.mark.redis

WAIT = 10.0  # bound on any wait for a condition (generous: the reader backs off up to 5 s)
SHARED_URL = redis_url()
STREAM_ID = re.compile(r"[0-9]+-[0-9]+")
READER_TASK = "sse-toolkit redis reader"

asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


def stream_id(value: str | None) -> tuple[int, int]:
    assert value is not None and STREAM_ID.fullmatch(value), value
    ms, _, seq = value.partition("-")
    return int(ms), int(seq)


def assert_strictly_increasing(ids: Sequence[str | None]) -> None:
    keys = [stream_id(value) for value in ids]
    assert all(a < b for a, b in itertools.pairwise(keys)), ids


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- Redis servers -------------------------------------------------------------------------


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis; its keys are deleted after."""
    value = f"test-{uuid.uuid4().hex}:"
    yield value
    client = redis.Redis.from_url(SHARED_URL, socket_timeout=WAIT)
    try:
        keys = list(client.scan_iter(match=f"{value}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class RedisServer:
    """A ``redis-server`` of the test's own, which it may stop, restart and cut.

    The AOF is fsynced on every write, so whatever Redis acknowledged survives a restart
    (on the same port and directory).
    """

    def __init__(
        self,
        directory: Path,
        *args: str,
        password: str | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.port = free_port()
        self.directory = directory
        self.args = args
        self.password = password
        self.tls = tls  # (certificate, key)
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password is not None else ""
        if self.tls is None:
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={quote(str(self.tls[0]))}"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=1.0, socket_timeout=WAIT)

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        argv = ["redis-server", "--bind", "127.0.0.1", "--dir", str(self.directory)]
        argv += ["--logfile", str(self.directory / "redis.log")]
        argv += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        if self.tls is None:
            argv += ["--port", str(self.port)]
        else:
            certificate, key = (str(path) for path in self.tls)
            argv += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            argv += ["--tls-cert-file", certificate, "--tls-key-file", key]
            argv += ["--tls-ca-cert-file", certificate]
        self.proc = subprocess.Popen(
            [*argv, *self.args], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + WAIT
        while True:
            code = self.proc.poll()
            if code is not None:
                raise AssertionError(f"redis-server exited with {code}:\n{self.log()}")
            client = self.client()
            try:
                client.ping()
                return
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"redis-server did not answer:\n{self.log()}") from None
                time.sleep(0.02)
            finally:
                client.close()

    def stop(self) -> None:
        """A clean stop (SIGTERM: Redis syncs its AOF and exits), not SHUTDOWN NOSAVE."""
        assert self.proc is not None
        self.proc.terminate()
        assert self.proc.wait(WAIT) == 0, self.log()

    def close(self) -> None:
        if self.proc is not None:
            stop(self.proc)  # terminate, then kill; always reaped


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start Redis servers of the test's own; every one is stopped at the end."""
    servers: list[RedisServer] = []

    def start(*args: str, **options: Any) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}", *args, **options)
        servers.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()


# -- in-process helpers --------------------------------------------------------------------


async def until(predicate: Callable[[], bool], message: Any, timeout: float = WAIT) -> None:
    """Poll ``predicate`` until it holds; fail with ``message`` (or its call) past ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(message() if callable(message) else message)
        await anyio.sleep(0.005)


def redis_backend(manager: ChannelManager) -> RedisBackend:
    backend = manager.backend
    assert isinstance(backend, RedisBackend)
    return backend


@asynccontextmanager
async def managers(
    url: str,
    prefix: str,
    count: int = 2,
    *,
    block_ms: int = 5000,
    stream_ttl: float | None = 3600.0,
    **options: Any,
) -> AsyncIterator[list[ChannelManager]]:
    """``count`` managers each on its own RedisBackend: as many processes, as Redis sees it."""
    made = [
        ChannelManager(
            backend=RedisBackend(url, prefix=prefix, block_ms=block_ms, stream_ttl=stream_ttl),
            **options,
        )
        for _ in range(count)
    ]
    try:
        yield made
    finally:
        with anyio.CancelScope(shield=True):
            for manager in made:
                await manager.close()


class Collector:
    """Consumes one listener in a task: its events, and its heartbeats counted apart."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.events: list[ServerSentEvent] = []
        self.heartbeats = 0
        self.ended = False

    async def run(self) -> None:
        async for event in self.listener:
            if event == HEARTBEAT:
                self.heartbeats += 1
            else:
                self.events.append(event)
        self.ended = True

    def has(self, event: ServerSentEvent) -> bool:
        return event in self.events


@asynccontextmanager
async def collecting(*listeners: Listener) -> AsyncIterator[list[Collector]]:
    collectors = [Collector(listener) for listener in listeners]
    async with anyio.create_task_group() as tg:
        for collector in collectors:
            tg.start_soon(collector.run)
        try:
            yield collectors
        finally:
            tg.cancel_scope.cancel()


async def all_received(collectors: Sequence[Collector], event: ServerSentEvent) -> None:
    await until(
        lambda: all(collector.has(event) for collector in collectors),
        lambda: f"{event!r} did not reach every listener: {[c.events for c in collectors]}",
    )


def running_readers() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == READER_TASK and not t.done()]


# -- 1. two managers as two processes ------------------------------------------------------


@pytest.mark.anyio
@asyncio_only
async def test_two_managers_share_a_channel_like_two_processes(prefix: str) -> None:
    shared = redis.Redis.from_url(SHARED_URL, socket_timeout=WAIT)
    try:
        async with managers(SHARED_URL, prefix) as (one, two):
            room_one = await one.get_or_create("room")
            room_two = await two.get_or_create("room")
            listeners = [room_one.listen(), room_one.listen(), room_two.listen()]
            async with collecting(*listeners) as collectors:
                published: list[ServerSentEvent] = []
                expected_data: list[Any] = []
                for n in range(6):
                    channel = room_two if n % 3 == 2 else room_one
                    if n % 2:
                        message: Any = ServerSentEvent({"n": n}, event="tick")
                        expected_data.append({"n": n})
                    else:
                        message = f"text {n}"
                        expected_data.append(message)
                    published.append(await channel.broadcast(message))
                await until(
                    lambda: all(len(c.events) >= len(published) for c in collectors),
                    lambda: [c.events for c in collectors],
                )
                # The same frames (ids included), in the same order, in both "processes".
                for collector in collectors:
                    assert collector.events == published
                    assert [e.data for e in collector.events] == expected_data
                    assert [e.event for e in collector.events] == [None, "tick"] * 3

                # The ids are the stream's entry ids.
                ids = [event.id for event in published]
                assert_strictly_increasing(ids)
                stored = shared.xrange(f"{prefix}room")
                assert [text(entry_id) for entry_id, _ in stored] == ids

                # A third process, started later, loads the history when the channel is
                # attached: a client that saw up to event k resumes with exactly the rest.
                k = 2
                async with managers(SHARED_URL, prefix, 1) as (three,):
                    room_three = await three.get_or_create("room")
                    assert room_three.history() == published
                    late_listener = room_three.listen(last_event_id=ids[k])
                    async with collecting(late_listener) as (late,):
                        await until(lambda: len(late.events) >= len(published) - k - 1, "replay")
                        newer = await room_one.broadcast("after the late join")
                        await all_received([late, *collectors], newer)
                        assert late.events == [*published[k + 1 :], newer]
                assert [c.events for c in collectors] == [[*published, newer]] * 3

                # With Redis, the stream assigns ids: a caller's id is refused, not stored.
                length = shared.xlen(f"{prefix}room")
                with pytest.raises(ValueError, match=r"^id: "):
                    await room_one.broadcast(ServerSentEvent("mine", id="42"))
                with pytest.raises(ValueError, match=r"^id: "):
                    await room_two.broadcast({"data": "mine", "id": "43"})
                assert shared.xlen(f"{prefix}room") == length

                # Closing is prompt even with listeners open and the readers blocked in XREAD.
                assert len(running_readers()) == 2
                started = time.monotonic()
                await one.close()
                await two.close()
                elapsed = time.monotonic() - started
                assert elapsed < 2.0, f"close() took {elapsed:.2f}s"
                await until(lambda: all(c.ended for c in collectors), "a listener did not end")
                assert running_readers() == []
    finally:
        shared.close()


@pytest.mark.anyio
@asyncio_only
async def test_a_new_channel_hears_its_first_event_at_once(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: the reader read its wake-up stream from "$", so when its XREAD (with the
    # streams of before) reached Redis after attach() had written the wake-up, the new
    # channel stayed deaf for a whole block_ms. Here that XREAD is held back until then,
    # which happened by chance about once in 15 attaches; a long block_ms makes it plain.
    backend = RedisBackend(SHARED_URL, prefix=prefix, block_ms=60_000)
    attached = asyncio.Event()
    connect = backend._connect

    def connect_with_late_xread(*, timeout: float) -> Any:
        client = connect(timeout=timeout)
        xread = client.xread

        async def late_xread(*args: Any, **kwargs: Any) -> Any:
            await attached.wait()
            return await xread(*args, **kwargs)

        client.xread = late_xread  # type: ignore[method-assign]
        return client

    monkeypatch.setattr(backend, "_connect", connect_with_late_xread)
    manager = ChannelManager(backend=backend)
    try:
        channel = await manager.get_or_create("room")
        attached.set()
        async with collecting(channel.listen()) as (collector,):
            event = await channel.broadcast("first")
            await until(lambda: collector.has(event), "the new channel is deaf", timeout=3)
    finally:
        await manager.close()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_on_trio_the_backend_says_it_needs_asyncio(prefix: str) -> None:
    manager = ChannelManager(backend=RedisBackend(SHARED_URL, prefix=prefix))
    with pytest.raises(RuntimeError, match="asyncio"):
        await manager.get_or_create("room")
    channel = SSEChannel("room", backend=manager.backend)
    with pytest.raises(RuntimeError, match="asyncio"):
        await channel.broadcast("hi")
    # Closing still works (it once failed on trio with "unrecognized yield message").
    await manager.close()


# -- 2. hub processes sharing one Redis ----------------------------------------------------


@dataclass
class StreamReader:
    """Reads one stream in a thread: events as (id, event, data), and heartbeat comments.

    With ``stop_after``, disconnects after that many events. With ``raw``, parses the
    lines itself, to see comments (httpx-sse drops them).
    """

    url: str
    last_event_id: str | None = None
    stop_after: int | None = None
    raw: bool = False
    status: int | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)
    heartbeats: int = 0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> StreamReader:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        headers = {"last-event-id": self.last_event_id} if self.last_event_id else {}
        try:
            with httpx.Client(timeout=httpx.Timeout(WAIT)) as client:
                with connect_sse(client, "GET", self.url, headers=headers) as source:
                    self.status = source.response.status_code
                    if self.raw:
                        self._read_lines(source.response.iter_lines())
                    else:
                        for sse in source.iter_sse():
                            if sse.retry is not None and not sse.data:
                                continue  # a retry hint alone (at a shutdown): no event
                            if self._add(sse.id, sse.event, sse.data):
                                break
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def _read_lines(self, lines: Iterator[str]) -> None:
        fields: dict[str, str] = {}
        for line in lines:
            if line.startswith(":"):
                self.heartbeats += 1
            elif line == "":
                if "data" in fields and self._add(
                    fields.get("id", ""), fields.get("event", "message"), fields["data"]
                ):
                    return
                fields = {}
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                fields[name] = f"{fields[name]}\n{value}" if name in fields else value

    def _add(self, event_id: str, event: str, data: str) -> bool:
        self.events.append((event_id, event, data))
        return self.stop_after is not None and len(self.events) >= self.stop_after

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + WAIT
        while len(self.events) < count:
            assert self.error is None, repr(self.error)
            assert time.monotonic() < deadline, f"{self.url}: {count} events? {self.events}"
            time.sleep(0.01)


def post(client: httpx.Client, hub: Hub, data: str) -> httpx.Response:
    return client.post(f"{hub.url}/sse/demo", json={"data": data}, headers=JSON)


def publish(client: httpx.Client, hub: Hub, data: str) -> tuple[str, str, str]:
    response = post(client, hub, data)
    assert response.status_code == 202, response.text
    return (response.json()["id"], "message", data)


@contextmanager
def readers_stopped_at_the_end(readers: list[StreamReader]) -> Iterator[None]:
    """Readers end when their hub stops; make sure of it (and wait for their threads)."""
    try:
        yield
    finally:
        for reader in readers:
            reader.done.wait(WAIT)


def test_hubs_on_one_redis_share_events_and_resume_across_processes(
    tmp_path: Path, prefix: str
) -> None:
    options = ["--allow-publish", "--stats", "--heartbeat", "1"]
    options += ["--redis-url", SHARED_URL, "--redis-prefix", prefix]
    readers: list[StreamReader] = []
    with readers_stopped_at_the_end(readers):
        with run_hub(tmp_path, *options) as a, run_hub(tmp_path, *options) as b:
            with httpx.Client(timeout=WAIT) as client:
                k = 3
                leaving = StreamReader(f"{a.url}/sse/demo", stop_after=k).start()
                on_a = StreamReader(f"{a.url}/sse/demo").start()
                on_b = StreamReader(f"{b.url}/sse/demo").start()
                readers += [leaving, on_a, on_b]
                wait_subscribers(client, a, 2)
                wait_subscribers(client, b, 1)

                # Published to A, received through B as well, with the same id.
                published = [publish(client, a, "one")]
                for reader in (leaving, on_a, on_b):
                    reader.wait_for(1)
                    assert reader.events == published
                published += [publish(client, a, "two"), publish(client, b, "three")]
                assert leaving.done.wait(WAIT) and leaving.error is None, leaving.error
                assert leaving.events == published  # it left after event k

                # Published on B while that client is away; it comes back to B.
                published += [publish(client, b, f"missed {n}") for n in range(3)]
                back = StreamReader(
                    f"{b.url}/sse/demo", last_event_id=published[k - 1][0], stop_after=4
                ).start()
                readers.append(back)
                back.wait_for(3)
                published.append(publish(client, a, "live again"))
                assert back.done.wait(WAIT) and back.error is None, back.error
                assert back.status == 200
                # Exactly the missed events, then live ones: no reset, no gap, no duplicate.
                assert back.events == published[k:]

                for reader in (on_a, on_b):
                    reader.wait_for(len(published))
                    assert reader.events == published
                ids = [event_id for event_id, _, _ in published]
                assert_strictly_increasing(ids)
                shared = redis.Redis.from_url(SHARED_URL, socket_timeout=WAIT)
                try:
                    stored = shared.xrange(f"{prefix}demo")
                finally:
                    shared.close()
                assert [text(entry_id) for entry_id, _ in stored] == ids
    for reader in (on_a, on_b):
        assert reader.error is None, repr(reader.error)
        assert reader.events == published  # nothing more arrived before the end


# -- 3. Redis restarts mid-stream ----------------------------------------------------------


def test_hub_rides_out_a_redis_restart(tmp_path: Path, redis_server: Any) -> None:
    server = redis_server()
    options = ["--allow-publish", "--stats", "--heartbeat", "0.2"]
    options += ["--redis-url", server.url, "--redis-prefix", "restart:"]
    readers: list[StreamReader] = []
    with readers_stopped_at_the_end(readers):
        with run_hub(tmp_path, *options) as hub, httpx.Client(timeout=WAIT) as client:
            readers += [StreamReader(f"{hub.url}/sse/demo", raw=True).start() for _ in range(2)]
            wait_subscribers(client, hub, 2)
            acknowledged = [publish(client, hub, f"before {n}") for n in range(3)]
            for reader in readers:
                reader.wait_for(3)

            server.stop()
            for n in range(2):
                response = post(client, hub, f"while down {n}")
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"]
                assert "Redis is unavailable" in response.json()["error"]
            # The streams stay open and their heartbeats go on (they come from the hub).
            beats = [reader.heartbeats for reader in readers]
            deadline = time.monotonic() + WAIT
            while not all(r.heartbeats >= b + 3 for r, b in zip(readers, beats, strict=True)):
                assert time.monotonic() < deadline, "heartbeats stopped while Redis was down"
                time.sleep(0.02)
            assert not any(reader.done.is_set() for reader in readers)
            assert not any(reader.events[3:] for reader in readers)

            server.start()
            acknowledged += [publish(client, hub, f"after {n}") for n in range(3)]
            for reader in readers:
                reader.wait_for(len(acknowledged))
            # One more, last: anything duplicated would have arrived before it.
            acknowledged.append(publish(client, hub, "last"))
            for reader in readers:
                reader.wait_for(len(acknowledged))
                assert reader.events == acknowledged
                assert_strictly_increasing([event_id for event_id, _, _ in reader.events])
            log = hub.log()
    assert "Traceback" not in log, log
    for reader in readers:
        assert reader.error is None, repr(reader.error)


@pytest.mark.anyio
@asyncio_only
async def test_managers_ride_out_a_redis_restart(redis_server: Any) -> None:
    server = redis_server()
    async with managers(server.url, "restart:") as (one, two):
        rooms = [await one.get_or_create("room"), await two.get_or_create("room")]
        listeners = [room.listen(heartbeat_interval=0.1) for room in rooms for _ in range(2)]
        async with collecting(*listeners) as collectors:
            acknowledged = []
            for n in range(3):
                acknowledged.append(await rooms[n % 2].broadcast(f"before {n}"))
            await all_received(collectors, acknowledged[-1])
            await until(lambda: all(redis_backend(m).connected for m in (one, two)), "up")

            server.stop()
            for room in rooms:
                with anyio.fail_after(WAIT):  # an error at once, not a hang
                    with pytest.raises(BackendUnavailable, match="Redis is unavailable"):
                        await room.broadcast("lost")
            await until(
                lambda: not any(redis_backend(m).connected for m in (one, two)),
                "the readers did not notice that Redis is down",
            )
            beats = [collector.heartbeats for collector in collectors]
            await until(
                lambda: all(c.heartbeats >= b + 3 for c, b in zip(collectors, beats, strict=True)),
                "heartbeats stopped while Redis was down",
            )
            assert all(not collector.ended for collector in collectors)

            server.start()
            for n in range(3):
                acknowledged.append(await rooms[n % 2].broadcast(f"after {n}"))
            await all_received(collectors, acknowledged[-1])
            last = await rooms[0].broadcast("last")
            acknowledged.append(last)
            await all_received(collectors, last)
            for collector in collectors:
                assert collector.events == acknowledged
                assert [e.data for e in collector.events] == (
                    [f"before {n}" for n in range(3)] + [f"after {n}" for n in range(3)] + ["last"]
                )
                assert_strictly_increasing([event.id for event in collector.events])
            # A publish may have fetched its own event while its reader was still away.
            await until(lambda: all(redis_backend(m).connected for m in (one, two)), "down")
            for manager in (one, two):
                assert redis_backend(manager).reconnects >= 1


@pytest.mark.anyio
@asyncio_only
async def test_a_channel_first_used_while_redis_is_down_hears_it_once_up(
    redis_server: Any,
) -> None:
    server = redis_server()
    server.stop()
    async with managers(server.url, "down:") as (one, two):
        with pytest.raises(BackendUnavailable):
            await one.get_or_create("room")
        server.start()
        room = await one.get_or_create("room")
        async with collecting(room.listen()) as (collector,):
            event = await (await two.get_or_create("room")).broadcast("hello")
            deadline = time.monotonic() + 3
            while not collector.has(event) and time.monotonic() < deadline:
                await anyio.sleep(0.01)
    # Asserted outside the task group, which would wrap the error in an ExceptionGroup.
    assert collector.has(event), "the channel is deaf"


# -- 4. the reader never goes deaf ---------------------------------------------------------


@pytest.mark.anyio
@asyncio_only
async def test_reader_survives_its_connection_being_killed(
    redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import redis.asyncio

    server = redis_server()
    # An asyncio admin client: a blocking one would stall the event loop, so the backends
    # could not see their connections close before the next publish, as they would in a
    # real process.
    admin = redis.asyncio.Redis.from_url(server.url, socket_timeout=WAIT)

    async def blocked_readers() -> list[dict[str, Any]]:
        clients = await admin.client_list()
        return [c for c in clients if c.get("cmd") == "xread" and "b" in c.get("flags", "")]

    try:
        async with managers(server.url, "kill:") as (one, two):
            backends = [redis_backend(one), redis_backend(two)]
            rooms = [await one.get_or_create("room"), await two.get_or_create("room")]
            listeners = [room.listen() for room in rooms for _ in range(2)]
            async with collecting(*listeners) as collectors:
                warmup = await rooms[0].broadcast("warm-up")
                await all_received(collectors, warmup)
                sent = [warmup]
                for round_ in range(4):
                    # Both readers are blocked in XREAD; cut their connections under them
                    # (every normal client on even rounds, the readers alone on odd ones).
                    deadline = time.monotonic() + WAIT
                    while len(blocked := await blocked_readers()) != 2:
                        assert time.monotonic() < deadline, blocked
                        await anyio.sleep(0.01)
                    reconnects = [backend.reconnects for backend in backends]
                    if round_ % 2 == 0:
                        assert await admin.client_kill_filter(_type="normal") >= 2
                    else:
                        for client in blocked:
                            assert await admin.client_kill_filter(_id=client["id"]) == 1
                    await until(
                        lambda: not any(backend.connected for backend in backends),
                        "a reader did not notice that its connection was cut",
                    )
                    event = await rooms[round_ % 2].broadcast(f"after kill {round_}")
                    sent.append(event)
                    await all_received(collectors, event)
                    await until(
                        lambda: all(
                            backend.connected and backend.reconnects > before
                            for backend, before in zip(backends, reconnects, strict=True)  # noqa: B023
                        ),
                        lambda: [(b.connected, b.reconnects) for b in backends],
                    )
                for collector in collectors:
                    assert collector.events == sent
    finally:
        await admin.aclose()
    assert "Redis reader lost its connection" in caplog.text
    assert "Redis reader reconnected" in caplog.text


# -- 5. connection settings in the URL -----------------------------------------------------


@pytest.mark.anyio
@asyncio_only
async def test_password_in_the_url(redis_server: Any) -> None:
    server = redis_server("--requirepass", "secret", password="secret")
    good_url = f"redis://:secret@127.0.0.1:{server.port}/0"
    async with managers(good_url, "auth:", 1) as (manager,):
        room = await manager.get_or_create("room")
        async with collecting(room.listen()) as (collector,):
            event = await room.broadcast("with the password")
            await all_received([collector], event)

    wrong_password = f"redis://:wrong@127.0.0.1:{server.port}/0"
    no_password = f"redis://127.0.0.1:{server.port}/0"
    # Both are redis-py AuthenticationErrors (a ConnectionError), so the backend reports
    # them as BackendUnavailable, with Redis's reason in the message. Without a password,
    # RESP3 (redis-py 8's default) says "HELLO must be called with the client already
    # authenticated"; RESP2 says "Authentication required".
    attempts = [
        (wrong_password, "invalid username-password pair"),
        (no_password, "(?i)authenticat"),
    ]
    wrong = ChannelManager(backend=RedisBackend(wrong_password, prefix="auth:"))
    try:
        with anyio.fail_after(WAIT):  # a clear error, not a hang
            with pytest.raises(BackendUnavailable, match=attempts[0][1]) as attaching:
                await wrong.get_or_create("room")
        assert isinstance(attaching.value.__cause__, redis.exceptions.AuthenticationError)
    finally:
        await wrong.close()
    for url, reason in attempts * 5:
        backend = RedisBackend(url, prefix="auth:")
        channel = SSEChannel("room", backend=backend)
        try:
            with anyio.fail_after(WAIT):
                with pytest.raises(BackendUnavailable, match=reason) as publishing:
                    await channel.broadcast("without the password")
            assert isinstance(publishing.value.__cause__, redis.exceptions.AuthenticationError)
        finally:
            # Closed while its reader is still in its failing handshake, where redis-py turns
            # the cancellation into an AuthenticationError: the reader once ran on after.
            started = time.monotonic()
            await backend.close()
            elapsed = time.monotonic() - started
        assert running_readers() == [], "the reader outlived close()"
        assert elapsed < 1.0, f"close() took {elapsed:.2f}s"
    admin = server.client()
    try:
        assert admin.xlen("auth:room") == 1  # only the event published with the password
    finally:
        admin.close()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not on PATH: no certificate for the rediss:// test")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    argv += ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1"]
    argv += ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        argv,
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.mark.anyio
@asyncio_only
async def test_tls_with_rediss_url(redis_server: Any, certificate: tuple[Path, Path]) -> None:
    server = redis_server(tls=certificate)
    assert server.url.startswith("rediss://") and "ssl_ca_certs=" in server.url
    async with managers(server.url, "tls:") as (one, two):
        rooms = [await one.get_or_create("room"), await two.get_or_create("room")]
        async with collecting(*(room.listen() for room in rooms)) as collectors:
            event = await rooms[0].broadcast("over TLS")
            await all_received(collectors, event)
            assert [c.events for c in collectors] == [[event], [event]]
    plain = RedisBackend(f"redis://127.0.0.1:{server.port}/0", prefix="tls:", connect_timeout=1)
    channel = SSEChannel("room", backend=plain)
    try:
        with anyio.fail_after(WAIT):
            with pytest.raises(BackendUnavailable):  # plain text to a TLS port: an error
                await channel.broadcast("in the clear")
    finally:
        await plain.close()


# -- 6. eviction and readoption ------------------------------------------------------------


@pytest.mark.anyio
@asyncio_only
async def test_evicted_channel_catches_up_when_used_again(prefix: str) -> None:
    async with managers(SHARED_URL, prefix, 1, retention=0, max_channels=1) as (evicting,):
        async with managers(SHARED_URL, prefix, 1) as (other,):
            stale = await evicting.get_or_create("room")
            first = await stale.broadcast("first")
            await until(lambda: stale.last_id == first.id, "not delivered locally")

            # No listeners and retention=0: making room for another channel evicts it.
            await evicting.get_or_create("elsewhere")
            assert await evicting.get("room") is None

            room = await other.get_or_create("room")
            async with collecting(room.listen()) as (watcher,):
                missed = [await room.broadcast(f"missed {n}") for n in range(3)]
                await all_received([watcher], missed[-1])

                # Asked for again while still referenced: the same object comes back and
                # catches up from its last id with what the other process published.
                again = await evicting.get_or_create("room")
                assert again is stale
                async with collecting(again.listen(last_event_id=first.id)) as (back,):
                    assert await evicting.get("room") is stale
                    await until(lambda: len(back.events) >= 3, lambda: back.events)
                    newer = await stale.broadcast("newer")
                    await all_received([back, watcher], newer)
                    assert back.events == [*missed, newer]
                    assert watcher.events == [*missed, newer]
                    assert stale.history() == [first, *missed, newer]
                    assert_strictly_increasing([e.id for e in stale.history() or []])


@pytest.mark.anyio
@asyncio_only
async def test_a_held_channel_keeps_working_after_eviction(prefix: str) -> None:
    # The Lilya pattern: fetch a channel once, keep the object, use it later. The manager
    # evicts it meanwhile (never published, no listener); it must work as with the
    # in-memory backend: its listeners hear every process, replay from the id its own
    # broadcast returned works, and bringing it back (attach again) duplicates nothing.
    async with managers(SHARED_URL, prefix, 2, retention=0, block_ms=200) as (here, there):
        chat = await here.get_or_create("chat")
        assert here.sweep() == 1
        assert await here.get("chat") is None
        remote = await there.get_or_create("chat")
        async with collecting(chat.listen()) as (held,):
            from_there = await remote.broadcast("from there")
            own = await chat.broadcast("from here")
            assert chat.history(from_there.id) == [own]  # replay from it works at once
            await all_received([held], own)
            later = await remote.broadcast("later")
            await all_received([held], later)
            assert held.events == [from_there, own, later]

        # Still evicted, now with a history; brought back: the same object, attached again.
        again = await here.get_or_create("chat")
        assert again is chat
        async with collecting(chat.listen(last_event_id=later.id)) as (back,):
            last = await remote.broadcast("last")
            await all_received([back], last)
            assert back.events == [last]
        assert chat.history() == [from_there, own, later, last]
        assert chat.stats().gaps == 0


@pytest.mark.anyio
@asyncio_only
async def test_an_evicted_channel_dropped_by_the_app_is_no_longer_read(prefix: str) -> None:
    async with managers(SHARED_URL, prefix, 1, retention=0, block_ms=200) as (here,):
        backend = redis_backend(here)
        chat = await here.get_or_create("chat")
        await chat.broadcast("one")
        other = await here.get_or_create("other")
        assert here.sweep() == 2
        assert set(backend.reading()) == {"chat", "other"}  # still read while held
        held = weakref.ref(chat)
        del chat
        gc.collect()
        assert held() is None, gc.get_referrers(held())  # the backend holds it weakly
        await other.broadcast("wake the reader")  # its next read leaves the dropped one out
        await until(lambda: backend.reading() == ["other"], backend.reading)


@pytest.mark.anyio
@asyncio_only
async def test_broadcast_from_thread_works_once_no_listener_waits(prefix: str) -> None:
    async with managers(SHARED_URL, prefix, 1) as (here,):
        channel = await here.get_or_create("t")
        first = await channel.broadcast("on the loop")
        listener = channel.listen(last_event_id=first.id)
        with anyio.move_on_after(0.05):
            await listener.__anext__()  # times out: nobody waits any more
        listener.close()
        event = await anyio.to_thread.run_sync(channel.broadcast_from_thread, "from a thread")
        assert channel.history(first.id) == [event]
        # The backend's own loop token (what the channel falls back on) runs one too.
        token = redis_backend(here).loop_token()
        assert token is not None
        via_token = await anyio.to_thread.run_sync(
            lambda: anyio.from_thread.run(channel.broadcast, "via token", token=token)
        )
        assert channel.history(event.id) == [via_token]


# -- 7. broadcast returns once the event is here (issue 8, defect 9) -----------------------


@pytest.mark.anyio
@asyncio_only
async def test_broadcast_returns_with_its_event_in_the_local_ring_in_stream_order(
    prefix: str,
) -> None:
    async with managers(SHARED_URL, prefix) as (one, two):
        rooms = [await one.get_or_create("room"), await two.get_or_create("room")]
        not_here: list[ServerSentEvent] = []

        async def publish_and_check(room: SSEChannel, n: int) -> None:
            event = await room.broadcast(f"event {n}")
            # Replay from the returned id works at once: the id is known here ...
            if room.history(event.id) is None:
                not_here.append(event)

        # Both processes at once: each one's events interleave with the other's in Redis.
        async with anyio.create_task_group() as tg:
            for n in range(60):
                tg.start_soon(publish_and_check, rooms[n % 2], n)
        assert not_here == [], f"not in the local ring when broadcast returned: {not_here}"

        # ... and a client resuming from it gets the next event, not sse.reset.
        for room in rooms:
            mine = await room.broadcast("mine")
            listener = room.listen(last_event_id=mine.id)
            following = await rooms[0].broadcast("following")
            with anyio.fail_after(WAIT):
                assert await listener.__anext__() == following
            await listener.aclose()

        shared = redis.Redis.from_url(SHARED_URL, socket_timeout=WAIT)
        try:
            stored = [text(entry_id) for entry_id, _ in shared.xrange(f"{prefix}room")]
        finally:
            shared.close()
        # One order, no duplicates: what each process holds is the stream, entry for entry.
        for room in rooms:
            await until(lambda: room.last_id == stored[-1], "not caught up")  # noqa: B023
            assert [event.id for event in room.history() or []] == stored


# -- 8. the backend's tasks and its keys (issue 8, defect 11) ------------------------------


@pytest.mark.anyio
@asyncio_only
async def test_the_backends_tasks_run_in_one_task_group_that_close_ends(prefix: str) -> None:
    owner_name = "sse-toolkit redis backend"
    async with managers(SHARED_URL, prefix, 1) as (manager,):
        await manager.get_or_create("room")
        await until(lambda: len(running_readers()) == 1, "no reader")
        tasks = {info.name: info for info in anyio.get_running_tasks()}
        owner, reader = tasks.get(owner_name), tasks.get(READER_TASK)
        assert reader is not None and owner is not None, sorted(map(str, tasks))
        # The reader is a child of the owner's task group, not a free-standing task.
        assert reader.parent_id == owner.id
        await manager.close()
        names = {info.name for info in anyio.get_running_tasks()}
        assert owner_name not in names and READER_TASK not in names
        # Used again after close, it starts afresh (as a restarted server would).
        room = await manager.get_or_create("room")
        event = await room.broadcast("again")
        assert room.last_id == event.id
        assert len(running_readers()) == 1


@pytest.mark.anyio
@asyncio_only
async def test_stream_ttl_is_renewed_by_each_publish(prefix: str) -> None:
    shared = redis.Redis.from_url(SHARED_URL, socket_timeout=WAIT)
    try:
        for name, options, expected in [
            ("default", {}, (86_000_000, 86_400_000)),
            ("minute", {"stream_ttl": 60}, (55_000, 60_000)),
            ("forever", {"stream_ttl": None}, (-1, -1)),
        ]:
            backend = RedisBackend(SHARED_URL, prefix=prefix, **options)
            manager = ChannelManager(backend=backend)
            try:
                room = await manager.get_or_create(name)
                for _ in range(2):
                    await room.broadcast("renews")
                    ttl = shared.pttl(f"{prefix}{name}")
                    assert expected[0] <= ttl <= expected[1], (name, ttl)
                    if expected[0] > 0:
                        shared.pexpire(f"{prefix}{name}", 1_000_000)  # the next one renews it
            finally:
                await manager.close()
    finally:
        shared.close()


@pytest.mark.anyio
@asyncio_only
async def test_an_idle_stream_expires_and_starts_over_without_a_false_alarm(prefix: str) -> None:
    shared = redis.Redis.from_url(SHARED_URL, socket_timeout=WAIT)
    key = f"{prefix}room"
    try:
        async with managers(SHARED_URL, prefix, 2, stream_ttl=0.3) as (one, two):
            rooms = [await one.get_or_create("room"), await two.get_or_create("room")]
            async with collecting(*(room.listen() for room in rooms)) as collectors:
                old = await rooms[0].broadcast("before it expired")
                await all_received(collectors, old)
                await until(lambda: not shared.exists(key), "the stream did not expire")
                new = await rooms[1].broadcast("after it expired")
                await all_received(collectors, new)
                # Both listeners read continuously: nothing was lost, so no notice.
                assert [c.events for c in collectors] == [[old, new]] * 2
            # A third process attaching now knows only the new stream: the old id is gone.
            async with managers(SHARED_URL, prefix, 1) as (three,):
                room = await three.get_or_create("room")
                assert room.history() == [new]
                assert room.history(old.id) is None
    finally:
        shared.close()


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "60", True])
def test_stream_ttl_must_be_a_positive_number_of_seconds(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"^stream_ttl must be > 0 seconds or None"):
        RedisBackend(SHARED_URL, stream_ttl=bad)


@pytest.mark.anyio
@asyncio_only
async def test_a_replay_from_before_the_first_event_counts_what_another_process_never_loaded(
    prefix: str,
) -> None:
    # A merged stream began while the channel was empty (position 0-0); the client comes
    # back through another process, which attached later and loaded only its ring's worth
    # of what Redis retains: everything before that is told as missed, exactly.
    async with managers(SHARED_URL, prefix, capacity=4) as (one, two):
        room_one = await one.get_or_create("room")
        total = 30
        for n in range(total):
            await room_one.broadcast(ServerSentEvent(f"e{n}"))
        room_two = await two.get_or_create("room")
        listener = room_two.listen(last_event_id=BACKEND_ORIGIN)
        missed = 0
        data: list[str] = []
        with anyio.fail_after(WAIT):
            while len(data) + missed < total:
                event = await listener.__anext__()
                if event.event == LAGGED_EVENT:
                    assert isinstance(event.data, dict)
                    missed += event.data["missed"]
                else:
                    data.append(event.data)  # type: ignore[arg-type]
        listener.close()
        assert data == [f"e{n}" for n in range(total - len(data), total)]
        assert missed == total - len(data) > 0
