"""RedisBackend under faults: a process cut off from Redis, held, restarted, evicted.

A "process" is a `ChannelManager` on its own `RedisBackend`; to cut one off, its backend
talks to Redis through a `Partition`: a TCP relay in the test that can sever every
connection (and refuse new ones), as a partition the OS reports, or hold them (bytes stop
flowing both ways), as one nobody reports. Meanwhile another process publishes past the
stream's ``maxlen``, so Redis trims entries the cut-off process never read.

Every test accounts for every acknowledged event (`account`): each listener receives it
exactly once, in order, or is told first, by an ``sse.lagged`` notice whose ``missed`` is
exactly the number of events it skipped (or null: unknown), or by ``sse.reset``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc
import pytest

from sse_toolkit import ChannelManager, ServerSentEvent
from sse_toolkit.channel import LAGGED_EVENT, RESET_EVENT

from .test_redis import (
    SHARED_URL,
    WAIT,
    Collector,
    all_received,
    asyncio_only,
    collecting,
    prefix,  # noqa: F401 - a fixture
    redis_backend,
    redis_server,  # noqa: F401 - a fixture
    until,
)

try:
    import redis.asyncio

    from sse_toolkit.backends.redis import RedisBackend
except ImportError:  # the conftest hook skips these tests (fails them with CI=true)
    pass

pytestmark = [pytest.mark.redis, pytest.mark.anyio, asyncio_only]

MAXLEN = 10  # Redis trims by whole nodes of 100 entries: ~10-110 retained
PAST_MAXLEN = 350


# -- a partition between one process and Redis ---------------------------------------------


class Partition:
    """A TCP relay between one process's backend and Redis: `sever`, `hold`, `restore`."""

    def __init__(self, target_url: str) -> None:
        self.target_url = target_url
        parts = urlsplit(target_url)
        self.target_port = parts.port or 6379
        self.port = 0
        self.severed = False
        self.connections = 0  # accepted so far
        self._flowing = anyio.Event()
        self._flowing.set()
        self._scopes: set[anyio.CancelScope] = set()
        self.errors: list[Exception] = []  # what failed in connections (for debugging)

    @property
    def url(self) -> str:
        parts = urlsplit(self.target_url)
        auth, _, _ = parts.netloc.rpartition("@")
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def sever(self) -> None:
        """Close every connection through the relay; refuse new ones until `restore`."""
        self.severed = True
        for scope in list(self._scopes):
            scope.cancel()

    async def severed_now(self) -> None:
        """`sever`, and return once every connection through the relay is closed."""
        self.sever()
        with anyio.fail_after(WAIT):
            while self._scopes:
                await anyio.sleep(0.001)
                self.sever()  # and any that started relaying meanwhile

    def hold(self) -> None:
        """Stop every byte, both ways, on open connections (none is closed)."""
        if self._flowing.is_set():
            self._flowing = anyio.Event()

    def restore(self) -> None:
        self.severed = False
        self._flowing.set()

    async def _accept(
        self, listener: anyio.abc.Listener[anyio.abc.SocketStream], task_group: anyio.abc.TaskGroup
    ) -> None:
        # Not listener.serve(): an accept that fails (a client that reset before it was
        # accepted) ends serve(), and with it every connection of this relay.
        while True:
            try:
                client = await listener.accept()
            except (OSError, anyio.BrokenResourceError) as exc:
                self.errors.append(exc)
                continue
            task_group.start_soon(self._serve, client)

    async def _serve(self, client: anyio.abc.SocketStream) -> None:
        try:
            await self._serve_one(client)
        except Exception as exc:  # one connection's failure must not take the relay down
            self.errors.append(exc)

    async def _serve_one(self, client: anyio.abc.SocketStream) -> None:
        async with client:
            self.connections += 1
            if self.severed:
                return
            try:
                upstream = await anyio.connect_tcp("127.0.0.1", self.target_port)
            except OSError:
                return
            async with upstream, anyio.create_task_group() as tg:
                if self.severed:  # severed while this one was connecting: it never was
                    return
                self._scopes.add(tg.cancel_scope)
                try:
                    tg.start_soon(self._relay, client, upstream, tg.cancel_scope)
                    tg.start_soon(self._relay, upstream, client, tg.cancel_scope)
                    await anyio.sleep_forever()
                finally:
                    self._scopes.discard(tg.cancel_scope)

    async def _relay(
        self,
        source: anyio.abc.SocketStream,
        sink: anyio.abc.SocketStream,
        scope: anyio.CancelScope,
    ) -> None:
        try:
            async for chunk in source:
                await self._flowing.wait()
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        scope.cancel()  # one side closed: close the other


@asynccontextmanager
async def partition(target_url: str) -> AsyncIterator[Partition]:
    relay = Partition(target_url)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    relay.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(relay._accept, listener.listeners[0], tg)
        try:
            yield relay
        finally:
            relay.sever()
            tg.cancel_scope.cancel()


@asynccontextmanager
async def process(url: str, key_prefix: str, **options: Any) -> AsyncIterator[ChannelManager]:
    """A manager on a backend of its own: one process, as Redis sees it."""
    maxlen = options.pop("maxlen", MAXLEN)
    connect_timeout = options.pop("connect_timeout", 2.0)
    backend = RedisBackend(url, prefix=key_prefix, maxlen=maxlen, connect_timeout=connect_timeout)
    manager = ChannelManager(backend=backend, **options)
    try:
        yield manager
    finally:
        with anyio.CancelScope(shield=True):
            await manager.close()


# -- accounting for every acknowledged event -------------------------------------------------


@dataclass
class Account:
    received: int  # events received
    notices: int  # sse.lagged / sse.reset notices
    next: int  # index in the acknowledged events of the next one expected


def account(
    events: Sequence[ServerSentEvent], acknowledged: Sequence[ServerSentEvent], start: int = 0
) -> Account:
    """Check a listener's events against the acknowledged ones from ``acknowledged[start]``.

    Each is received once and in order, unless notices since the previous event received
    account for the ones skipped: ``sse.lagged`` with the exact number, or with null, or
    ``sse.reset``, for any number.
    """
    index = {event.id: i for i, event in enumerate(acknowledged)}
    assert len(index) == len(acknowledged), "two acknowledged events share an id"
    expected, received, notices = start, 0, 0
    owed: int | None = 0  # events announced missing since the last event; None: unknown
    for event in events:
        if event.event in (LAGGED_EVENT, RESET_EVENT):
            notices += 1
            missed = event.data.get("missed") if event.event == LAGGED_EVENT else None
            owed = None if owed is None or missed is None else owed + missed
            continue
        position = index.get(event.id)
        assert position is not None, f"never acknowledged: {event!r}"
        assert position >= expected, f"duplicate or out of order: {event!r} (#{position})"
        skipped = position - expected
        if owed is not None:
            assert skipped == owed, (
                f"{skipped} acknowledged events missing before #{position} ({event.id}); "
                f"the notices before it accounted for {owed}: {list(events)!r}"
            )
        expected, owed = position + 1, 0
        received += 1
    return Account(received, notices, expected)


def complete(
    collector: Collector, acknowledged: Sequence[ServerSentEvent], start: int = 0
) -> Account:
    """`account`, and every acknowledged event up to the last is accounted for."""
    result = account(collector.events, acknowledged, start)
    assert result.next == len(acknowledged), (result, collector.events[-3:])
    return result


async def publish_many(manager: ChannelManager, name: str, count: int) -> list[ServerSentEvent]:
    channel = await manager.get_or_create(name)
    return [await channel.broadcast(f"{name} {n}") for n in range(count)]


async def trimmed_past(url: str, key: str, event: ServerSentEvent) -> bool:
    """Whether Redis no longer retains ``event`` (so the test really made a gap)."""
    client = redis.asyncio.Redis.from_url(url, socket_timeout=WAIT)
    try:
        first = await client.xrange(key, count=1)
    finally:
        await client.aclose()
    assert event.id is not None
    first_id = first[0][0].decode()
    return tuple(map(int, first_id.split("-"))) > tuple(map(int, event.id.split("-")))


# -- defect 8: no silent loss after trimming -------------------------------------------------


async def test_a_process_cut_off_while_another_publishes_past_maxlen_is_told_exactly(
    prefix: str,  # noqa: F811
) -> None:
    async with partition(SHARED_URL) as cut, process(cut.url, prefix) as one:
        async with process(SHARED_URL, prefix) as two:
            room_one = await one.get_or_create("room")
            room_two = await two.get_or_create("room")
            async with collecting(room_one.listen(), room_two.listen()) as (far, near):
                acknowledged = [await room_two.broadcast("before")]
                await all_received([far, near], acknowledged[0])
                await until(lambda: redis_backend(one).connected, "not connected")

                cut.sever()
                await until(lambda: not redis_backend(one).connected, "the cut went unnoticed")
                acknowledged += await publish_many(two, "room", PAST_MAXLEN)
                assert await trimmed_past(SHARED_URL, f"{prefix}room", acknowledged[1])
                cut.restore()
                last = await room_two.broadcast("after")
                acknowledged.append(last)
                await all_received([far, near], last)

            assert complete(near, acknowledged).notices == 0
            result = complete(far, acknowledged)
            assert result.notices == 1, far.events[:3]
            lagged = far.events[1]
            assert lagged.event == LAGGED_EVENT
            assert lagged.data == {"channel": "room", "missed": lagged.data["missed"]}
            assert lagged.data["missed"] >= 100  # exact: account() checked the number


async def test_under_lag_policy_close_the_cut_off_listener_stream_ends(
    prefix: str,  # noqa: F811
) -> None:
    async with partition(SHARED_URL) as cut, process(cut.url, prefix, lag_policy="close") as one:
        async with process(SHARED_URL, prefix) as two:
            room_one = await one.get_or_create("room")
            room_two = await two.get_or_create("room")
            async with collecting(room_one.listen()) as (far,):
                first = await room_two.broadcast("before")
                await all_received([far], first)
                cut.sever()
                await until(lambda: not redis_backend(one).connected, "the cut went unnoticed")
                trimmed = await publish_many(two, "room", PAST_MAXLEN)
                cut.restore()
                await until(lambda: far.ended, lambda: f"the stream went on: {far.events[-3:]}")
            # Nothing from beyond the gap reached it: the client reconnects for the rest.
            assert far.events == [first], far.events[:3]
            assert await trimmed_past(SHARED_URL, f"{prefix}room", trimmed[0])


async def test_a_process_whose_connections_are_held_is_told_what_it_missed(
    prefix: str,  # noqa: F811
) -> None:
    # A partition nobody reports: the reader's XREAD is answered, but the answer is held;
    # by the time it arrives, Redis has trimmed what came after it.
    async with partition(SHARED_URL) as cut, process(cut.url, prefix) as one:
        async with process(SHARED_URL, prefix) as two:
            room_one = await one.get_or_create("room")
            room_two = await two.get_or_create("room")
            async with collecting(room_one.listen()) as (far,):
                acknowledged = [await room_two.broadcast("before")]
                await all_received([far], acknowledged[0])
                cut.hold()
                acknowledged += await publish_many(two, "room", PAST_MAXLEN)
                assert await trimmed_past(SHARED_URL, f"{prefix}room", acknowledged[2])
                cut.restore()
                last = await room_two.broadcast("after")
                acknowledged.append(last)
                await all_received([far], last)
            result = complete(far, acknowledged)
            assert result.notices >= 1
            assert redis_backend(one).reconnects == 0  # it never knew it was cut off


async def test_redis_restarted_while_a_process_is_cut_off(redis_server: Any) -> None:  # noqa: F811
    server = redis_server()  # fsyncs every write: an acknowledged event survives the restart
    async with partition(server.url) as cut, process(cut.url, "restart:") as one:
        async with process(server.url, "restart:") as two:
            room_one = await one.get_or_create("room")
            room_two = await two.get_or_create("room")
            async with collecting(room_one.listen(), room_two.listen()) as (far, near):
                acknowledged = [await room_two.broadcast("before")]
                await all_received([far, near], acknowledged[0])
                cut.sever()
                acknowledged += await publish_many(two, "room", PAST_MAXLEN // 2)
                server.stop()
                server.start()
                await until(lambda: redis_backend(two).connected, "two did not reconnect")
                acknowledged += await publish_many(two, "room", PAST_MAXLEN // 2)
                assert await trimmed_past(server.url, "restart:room", acknowledged[1])
                cut.restore()
                last = await room_two.broadcast("after")
                acknowledged.append(last)
                await all_received([far, near], last)
            assert complete(near, acknowledged).notices == 0
            assert complete(far, acknowledged).notices == 1


async def test_redis_restarted_without_its_data_is_a_gap_of_unknown_size(
    redis_server: Any,  # noqa: F811
) -> None:
    server = redis_server("--appendonly", "no")  # a cache-like Redis: a restart loses all
    async with partition(server.url) as cut, process(cut.url, "lost:") as one:
        async with process(server.url, "lost:") as two:
            room_one = await one.get_or_create("room")
            room_two = await two.get_or_create("room")
            async with collecting(room_one.listen()) as (far,):
                acknowledged = [await room_two.broadcast("before")]
                await all_received([far], acknowledged[0])
                cut.sever()
                await until(lambda: not redis_backend(one).connected, "the cut went unnoticed")
                # Acknowledged, then lost with Redis before the cut-off process read them.
                acknowledged += await publish_many(two, "room", 5)
                server.stop()
                server.start()
                await until(lambda: redis_backend(two).connected, "two did not reconnect")
                acknowledged += await publish_many(two, "room", 3)
                cut.restore()
                last = await room_two.broadcast("after")
                acknowledged.append(last)
                await all_received([far], last)
            result = complete(far, acknowledged)
            assert result.notices == 1
            notice = next(e for e in far.events if e.event == LAGGED_EVENT)
            assert notice.data == {"channel": "room", "missed": None}


async def test_an_evicted_channel_still_held_is_read_and_told_of_trimming(
    prefix: str,  # noqa: F811
) -> None:
    # An evicted channel the app still references keeps being read (as with the in-memory
    # backend); cut off meanwhile while another process publishes past maxlen, it is told
    # exactly what was trimmed, like any channel, and brought back it duplicates nothing.
    async with partition(SHARED_URL) as cut:
        async with process(cut.url, prefix, retention=0, max_channels=1) as evicting:
            async with process(SHARED_URL, prefix) as other:
                stale = await evicting.get_or_create("room")
                acknowledged = [await stale.broadcast("first")]
                await evicting.get_or_create("elsewhere")  # evicts "room" (retention=0)
                assert await evicting.get("room") is None
                async with collecting(stale.listen(last_event_id=acknowledged[0].id)) as (held,):
                    acknowledged += await publish_many(other, "room", 3)
                    await all_received([held], acknowledged[-1])
                    await until(lambda: redis_backend(evicting).connected, "not connected")

                    cut.sever()
                    await until(
                        lambda: not redis_backend(evicting).connected, "the cut went unnoticed"
                    )
                    acknowledged += await publish_many(other, "room", PAST_MAXLEN)
                    assert await trimmed_past(SHARED_URL, f"{prefix}room", acknowledged[4])
                    cut.restore()
                    last = await (await other.get_or_create("room")).broadcast("after")
                    acknowledged.append(last)
                    await all_received([held], last)
                result = complete(held, acknowledged, start=1)
                assert result.notices == 1, held.events[:6]

                again = await evicting.get_or_create("room")
                assert again is stale
                async with collecting(again.listen(last_event_id=last.id)) as (back,):
                    final = await again.broadcast("final")
                    await all_received([back], final)
                assert back.events == [final]
                assert stale.stats().gaps == 1


async def blocked_readers(admin: Any, count: int) -> list[dict[str, Any]]:
    with anyio.fail_after(WAIT):
        while True:
            clients = await admin.client_list()
            blocked = [c for c in clients if c.get("cmd") == "xread" and "b" in c.get("flags", "")]
            if len(blocked) == count:
                return blocked
            await anyio.sleep(0.01)


# -- defect 9: broadcast returns once the event is in the local ring -------------------------


async def test_publishing_while_the_reader_is_away_stores_the_event_here_once(
    redis_server: Any,  # noqa: F811
) -> None:
    server = redis_server()
    admin = redis.asyncio.Redis.from_url(server.url, socket_timeout=WAIT)
    try:
        async with process(server.url, "away:") as one, process(server.url, "away:") as two:
            room_one = await one.get_or_create("room")
            room_two = await two.get_or_create("room")
            acknowledged = []
            async with collecting(room_one.listen()) as (listening,):
                for round_ in range(3):
                    acknowledged.append(await room_two.broadcast(f"from two {round_}"))
                    # Cut the readers (blocked in XREAD) alone: they back off.
                    for client in await blocked_readers(admin, 2):
                        await admin.client_kill_filter(_id=client["id"])
                    await until(lambda: not redis_backend(one).connected, "kill unnoticed")
                    event = await room_one.broadcast(f"from one {round_}")
                    acknowledged.append(event)
                    # In the ring when broadcast returns, after the one from two before it.
                    history = room_one.history()
                    assert history is not None and history[-2:] == acknowledged[-2:]
                    assert room_one.history(event.id) == []
                    await until(lambda: redis_backend(one).connected, "no reconnect")
                last = await room_two.broadcast("last")
                acknowledged.append(last)
                await all_received([listening], last)
            assert complete(listening, acknowledged).notices == 0
            assert room_one.history() == acknowledged
    finally:
        await admin.aclose()
