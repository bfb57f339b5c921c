"""Presence: ``GET /_presence/{channel}`` (counts and token subjects) and its companion
stream (``?stream=1``: ``sse.join`` / ``sse.leave``).

In-process on asyncio and trio with the memory backend; across two in-process managers
on Redis; across two real hub processes on Redis, one of which is SIGKILLed.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from sse_toolkit import ChannelManager, SSEApp, create_token
from sse_toolkit.presence import Presence, presence_channel

from .asgi import WAIT, Client
from .sse_parser import parse
from .sse_servers import HubProcess
from .test_redis import (
    SHARED_URL,
    StreamReader,
    prefix,  # noqa: F401 - a fixture
)

with contextlib.suppress(ImportError):  # (else the conftest hook skips the Redis tests)
    import redis

    from sse_toolkit.backends.redis import RedisBackend

pytestmark = pytest.mark.anyio

SECRET = "a presence test secret of 32 bytes or more, long enough"
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


def token(subject: str | None = None, channels: Any = ("room",), **kw: Any) -> str:
    return create_token(SECRET, channels=list(channels), subject=subject, **kw)


async def get(app: Any, path: str, *, query: str = "", **kw: Any) -> Client:
    client = Client(path=path, query=query, **kw)
    with anyio.fail_after(WAIT):
        await app(client.scope, client.receive, client.send)
    return client


async def snapshot(app: SSEApp, channel: str = "room", query: str = "") -> Any:
    response = await get(app, f"/_presence/{channel}", query=query)
    assert response.status == 200, response.body
    return response.json()


async def until_snapshot(app: SSEApp, expected: Any, channel: str = "room", q: str = "") -> None:
    deadline = time.monotonic() + WAIT
    while (seen := await snapshot(app, channel, q)) != expected:
        assert time.monotonic() < deadline, f"{seen} != {expected}"
        await anyio.sleep(0.01)


class Streams:
    """Subscribers running in one task group; each disconnected by `leave`, all on exit."""

    def __init__(self, app: SSEApp) -> None:
        self.app = app

    async def __aenter__(self) -> Streams:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self.clients: list[Client] = []
        return self

    def open(self, path: str, query: str = "", **kw: Any) -> Client:
        client = Client(path=path, query=query, **kw)
        self.clients.append(client)
        self._tg.start_soon(self.app, client.scope, client.receive, client.send)
        return client

    async def __aexit__(self, *exc: object) -> None:
        for client in self.clients:
            client.disconnect.set()
        await self._tg.__aexit__(None, None, None)


def events(client: Client) -> list[tuple[str, Any]]:
    return [(e.event, json.loads(e.data)) for e in parse(client.body).events]


# -- in process, memory backend ------------------------------------------------------------


async def test_counts_streams_and_lists_distinct_subjects_anonymous_counted_not_listed() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, presence=True, secret=SECRET, heartbeat_interval=None)
    empty = {"channel": "room", "subscribers": 0, "subjects": []}
    q = f"token={token()}"
    assert await snapshot(app, query=q) == empty
    async with Streams(app) as streams:
        streams.open("/room", f"token={token('bob')}")
        alice = [streams.open("/room", f"token={token('alice')}") for _ in range(2)]
        streams.open("/room", f"token={token()}")  # a token without sub: anonymous
        streams.open("/other", f"token={token('carol', ['other'])}")
        full = {"channel": "room", "subscribers": 4, "subjects": ["alice", "bob"]}
        await until_snapshot(app, full, q=q)
        response = await get(app, "/_presence/room", query=q)
        assert response.body == b'{"channel":"room","subscribers":4,"subjects":["alice","bob"]}'
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["content-type"] == "application/json"
        other = {"channel": "other", "subscribers": 1, "subjects": ["carol"]}
        assert await snapshot(app, "other", f"token={token(channels=['other'])}") == other

        alice[0].disconnect.set()  # one of alice's two tabs: she is still there
        await until_snapshot(app, {**full, "subscribers": 3}, q=q)
        alice[1].disconnect.set()
        await until_snapshot(app, {**full, "subscribers": 2, "subjects": ["bob"]}, q=q)
    await until_snapshot(app, empty, q=q)
    assert manager.presence().local("room") == {}


async def test_without_tokens_every_stream_is_anonymous_and_a_merged_stream_joins_each() -> None:
    app = SSEApp(ChannelManager(), presence=True, heartbeat_interval=None)
    async with Streams(app) as streams:
        streams.open("/", "channel=room&channel=lobby")
        streams.open("/room")
        await until_snapshot(app, {"channel": "room", "subscribers": 2, "subjects": []})
        await until_snapshot(app, {"channel": "lobby", "subscribers": 1, "subjects": []}, "lobby")
        head = await get(app, "/room", method="HEAD")  # no subscriber: headers only
        assert head.status == 200
        assert (await snapshot(app))["subscribers"] == 2


async def test_companion_stream_tells_joins_and_leaves_with_subject_and_count() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, presence=True, secret=SECRET, heartbeat_interval=None)
    async with Streams(app) as watchers:
        watcher = watchers.open("/_presence/room", f"stream=1&token={token('watcher')}")
        with anyio.fail_after(WAIT):
            while await manager.get(presence_channel("room")) is None:
                await anyio.sleep(0.001)
        assert watcher.headers["content-type"].startswith("text/event-stream")
        async with Streams(app) as streams:
            bob = streams.open("/room", f"token={token('bob')}")
            await watcher.wait_for(lambda: len(events(watcher)) == 1)
            streams.open("/room", f"token={token()}")
            await watcher.wait_for(lambda: len(events(watcher)) == 2)
            bob.disconnect.set()
            await watcher.wait_for(lambda: len(events(watcher)) == 3)
        await watcher.wait_for(lambda: len(events(watcher)) == 4)
        # The watcher itself is not present.
        assert events(watcher) == [
            ("sse.join", {"channel": "room", "subject": "bob", "subscribers": 1}),
            ("sse.join", {"channel": "room", "subject": None, "subscribers": 2}),
            ("sse.leave", {"channel": "room", "subject": "bob", "subscribers": 1}),
            ("sse.leave", {"channel": "room", "subject": None, "subscribers": 0}),
        ]
        ids = [e.last_event_id for e in parse(watcher.body).events]
    # Replay from an id, as EventSource does on reconnecting.
    async with Streams(app) as again:
        back = again.open(
            "/_presence/room",
            f"stream=1&token={token()}",
            headers=[("last-event-id", ids[1])],
        )
        await back.wait_for(lambda: len(events(back)) == 2)
        assert [kind for kind, _ in events(back)] == ["sse.leave", "sse.leave"]


async def test_authorised_like_subscribing_to_the_channel() -> None:
    refused: list[tuple[str, str]] = []

    def authorize(scope: Any, channel: str, action: str) -> bool:
        if channel == "secret-room":
            refused.append((channel, action))
            return False
        return True

    app = SSEApp(ChannelManager(), presence=True, secret=SECRET, authorize=authorize)
    for query in ("", "stream=1"):
        response = await get(app, "/_presence/room", query=query)
        assert response.status == 401, query
        assert response.headers["www-authenticate"] == "Bearer"
        amp = "&" if query else ""
        other = await get(app, "/_presence/room", query=f"{query}{amp}token={token('x', ['b'])}")
        assert other.status == 403, query
        stats_only = create_token(SECRET, actions=["stats"])
        forbidden = await get(app, "/_presence/room", query=f"{query}{amp}token={stats_only}")
        assert forbidden.status == 403
        pattern = token("x", ["*"])
        refused_response = await get(
            app, "/_presence/secret-room", query=f"{query}{amp}token={pattern}"
        )
        assert refused_response.status == 403
    assert refused == [("secret-room", "subscribe")] * 2
    assert (await get(app, "/_presence/room", query=f"token={token()}")).status == 200


async def test_routes_methods_and_names() -> None:
    app = SSEApp(ChannelManager(), presence=True, allow_publish=True)
    assert (await get(app, "/_presence/room/")).status == 200
    assert (await get(app, "/_presence/room", method="HEAD")).body == b""
    post = await get(app, "/_presence/room", method="POST")
    assert (post.status, post.headers["allow"]) == (405, "GET, HEAD")
    for path in ("/_presence", "/_presence/", "/_presence/a/b", "/_presence._presence.x"):
        assert (await get(app, path)).status == 404, path
    # The internal channel is no route: names starting with _ are the app's own.
    assert (await get(app, f"/{presence_channel('room')}")).status == 404
    assert (await get(app, "/_presence/_x")).status == 400
    assert (await get(app, "/_presence/a b")).status == 400
    assert (await get(app, "/_presence/" + "x" * 200)).status == 414


async def test_presence_is_off_by_default() -> None:
    app = SSEApp(ChannelManager())
    assert app.presence is None
    for query in ("", "stream=1"):
        assert (await get(app, "/_presence/room", query=query)).status == 404
    with pytest.raises(ValueError, match="presence_ttl"):
        SSEApp(ChannelManager(), presence_ttl=5.0)
    with pytest.raises(TypeError, match="presence"):
        SSEApp(ChannelManager(), presence="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl"):
        SSEApp(ChannelManager(), presence=True, presence_ttl=0)


async def test_apps_on_one_manager_share_its_presence() -> None:
    manager = ChannelManager()
    one, two = SSEApp(manager, presence=True), SSEApp(manager, presence=True)
    assert one.presence is two.presence is manager.presence()
    with pytest.raises(ValueError, match="ttl"):
        SSEApp(manager, presence=True, presence_ttl=5.0)
    async with Streams(one) as streams:
        streams.open("/room")
        await until_snapshot(two, {"channel": "room", "subscribers": 1, "subjects": []})


async def test_closing_the_manager_forgets_presence_and_ends_streams_cleanly() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, presence=True, heartbeat_interval=None)
    async with Streams(app) as streams:
        client = streams.open("/room")
        await until_snapshot(app, {"channel": "room", "subscribers": 1, "subjects": []})
        await manager.close()
        await client.wait_for(lambda: client.finished)
        assert manager.presence().local("room") == {}
    # A stream that joined before the close leaves without making counts negative.
    async with Streams(app) as streams:
        streams.open("/room")
        await until_snapshot(app, {"channel": "room", "subscribers": 1, "subjects": []})
    await until_snapshot(app, {"channel": "room", "subscribers": 0, "subjects": []})


# -- Redis: two managers in one process ----------------------------------------------------


@pytest.mark.redis
@asyncio_only
async def test_two_managers_on_redis_count_each_others_subscribers(prefix: str) -> None:  # noqa: F811
    made = [
        ChannelManager(backend=RedisBackend(SHARED_URL, prefix=prefix, stream_ttl=60.0))
        for _ in range(2)
    ]
    a, b = (
        SSEApp(manager, presence=True, presence_ttl=3.0, secret=SECRET, heartbeat_interval=None)
        for manager in made
    )
    q = f"token={token()}"
    try:
        async with Streams(a) as on_a, Streams(b) as on_b:
            watcher = on_a.open("/_presence/room", f"stream=1&{q}")
            with anyio.fail_after(WAIT):
                while not watcher.messages:
                    await anyio.sleep(0.005)
            on_a.open("/room", f"token={token('alice')}")
            on_b.open("/room", f"token={token('bob')}")
            on_b.open("/room", q)
            expected = {"channel": "room", "subscribers": 3, "subjects": ["alice", "bob"]}
            await until_snapshot(a, expected, q=q)
            await until_snapshot(b, expected, q=q)
            # The watcher on A hears B's joins.
            await watcher.wait_for(lambda: len(events(watcher)) == 3)
            joined = sorted(str(data["subject"]) for kind, data in events(watcher))
            assert joined == ["None", "alice", "bob"]
            assert {kind for kind, _ in events(watcher)} == {"sse.join"}
            # In Redis: one hash per channel, a field per process.
            client = redis.Redis.from_url(SHARED_URL, socket_timeout=WAIT)
            try:
                stored = client.hgetall(f"{prefix}_presence:room")
                ttl = client.pttl(f"{prefix}_presence:room")
            finally:
                client.close()
            assert len(stored) == 2
            assert 0 < ttl <= 3000
            entries = [json.loads(value) for value in stored.values()]
            assert sorted(e["anonymous"] for e in entries) == [0, 1]
            assert sorted(json.dumps(e["subjects"]) for e in entries) == [
                '{"alice": 1}',
                '{"bob": 1}',
            ]
        await until_snapshot(a, {"channel": "room", "subscribers": 0, "subjects": []}, q=q)
        # A process that stops cleanly deletes its entries at once.
        async with Streams(b) as on_b:
            on_b.open("/room", q)
            await until_snapshot(a, {"channel": "room", "subscribers": 1, "subjects": []}, q=q)
            await made[1].close()
            await until_snapshot(a, {"channel": "room", "subscribers": 0, "subjects": []}, q=q)
    finally:
        with anyio.CancelScope(shield=True):
            for manager in made:
                await manager.close()


@pytest.mark.redis
@asyncio_only
async def test_a_process_that_stops_refreshing_vanishes_within_the_ttl(prefix: str) -> None:  # noqa: F811
    made = [ChannelManager(backend=RedisBackend(SHARED_URL, prefix=prefix)) for _ in range(2)]
    presences = [Presence(manager, ttl=1.0) for manager in made]
    try:
        await presences[1].join("room", "ghost")
        await presences[0].join("room", "alive")
        with anyio.fail_after(WAIT):
            while (await presences[0].snapshot("room"))["subscribers"] != 2:
                await anyio.sleep(0.01)
        # "Crash" process 1: its writer stops, its entry stays behind in Redis.
        writer = presences[1]._writer
        assert writer is not None
        writer.cancel()
        with contextlib.suppress(BaseException):
            await writer
        crashed = time.monotonic()
        with anyio.fail_after(WAIT):
            while (await presences[0].snapshot("room"))["subjects"] != ["alive"]:
                await anyio.sleep(0.02)
        assert time.monotonic() - crashed <= 1.0 + 0.5
        # The reader deleted the stale field; the live one keeps being refreshed.
        await anyio.sleep(1.2)
        assert list(await made[0].backend.read_presence("room")) == [presences[0].member]
        assert (await presences[0].snapshot("room"))["subscribers"] == 1
    finally:
        for presence in presences:
            presence._table.clear()
            await presence.close()
        for manager in made:
            await manager.close()


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_on_trio_a_shared_backend_says_presence_needs_asyncio() -> None:
    pytest.importorskip("redis")
    presence = Presence(ChannelManager(backend=RedisBackend(SHARED_URL, prefix="unused:")))
    with pytest.raises(RuntimeError, match="asyncio"):
        await presence.join("room")


# -- Redis: two hub processes --------------------------------------------------------------


@contextlib.contextmanager
def hubs(tmp_path: Path, *args: str) -> Iterator[list[HubProcess]]:
    made = [HubProcess(tmp_path, *args) for _ in range(2)]
    try:
        for hub in made:
            hub.start()
        yield made
    finally:
        for hub in made:
            hub.close()


def wait_count(client: httpx.Client, url: str, expected: Any, timeout: float = WAIT) -> float:
    """Poll the presence URL until it answers ``expected``; how long that took."""
    started = time.monotonic()
    while True:
        response = client.get(url)
        assert response.status_code == 200, response.text
        if response.json() == expected:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"{response.json()} != {expected}"
        time.sleep(0.02)


@pytest.mark.redis
def test_presence_across_two_hub_processes_and_a_crash(tmp_path: Path, prefix: str) -> None:  # noqa: F811
    ttl = 2.0
    args = ["--presence", "--presence-ttl", str(ttl), "--secret", SECRET, "--heartbeat", "1"]
    args += ["--redis-url", SHARED_URL, "--redis-prefix", prefix]
    readers: list[StreamReader] = []
    with hubs(tmp_path, *args) as (a, b), httpx.Client(timeout=WAIT) as client:
        q = f"token={token()}"
        for hub in (a, b):
            health = client.get(f"{hub.url}/sse/_health")
            assert health.status_code == 200, health.text
            assert health.json()["backend"] == "redis"
        watcher = StreamReader(f"{a.url}/sse/_presence/room?stream=1&{q}").start()
        readers.append(watcher)
        wait_count(
            client,
            f"{a.url}/sse/_presence/room?{q}",
            {"channel": "room", "subscribers": 0, "subjects": []},
        )
        time.sleep(0.2)  # (the watcher subscribes; its join list starts empty either way)
        readers.append(StreamReader(f"{a.url}/sse/room?token={token('alice')}").start())
        readers.append(StreamReader(f"{b.url}/sse/room?token={token('bob')}").start())
        readers.append(StreamReader(f"{b.url}/sse/room?{q}").start())
        everyone = {"channel": "room", "subscribers": 3, "subjects": ["alice", "bob"]}
        for hub in (a, b):
            wait_count(client, f"{hub.url}/sse/_presence/room?{q}", everyone)
        # The companion stream on A hears the joins on B.
        watcher.wait_for(3)
        heard = {(event, json.loads(data)["subject"]) for _, event, data in watcher.events}
        assert heard == {("sse.join", "alice"), ("sse.join", "bob"), ("sse.join", None)}

        b.kill()  # SIGKILL: no leave, no cleanup; its entry stays in Redis until stale
        took = wait_count(
            client,
            f"{a.url}/sse/_presence/room?{q}",
            {"channel": "room", "subscribers": 1, "subjects": ["alice"]},
            timeout=ttl + WAIT,
        )
        assert took <= ttl + 1.0, took
    for reader in readers:
        reader.done.wait(WAIT)


# -- the hub's flags -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--presence-ttl", "5"], "argument --presence-ttl: needs --presence"),
        (["--presence", "--presence-ttl", "0"], "argument --presence-ttl: must be a finite"),
        (["--presence", "--presence-ttl", "nan"], "argument --presence-ttl: must be a finite"),
    ],
)
def test_presence_ttl_mistakes_exit_2_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from sse_toolkit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


async def test_overlapping_joins_and_leaves_each_tell_their_own_count() -> None:
    """Joins and leaves at once (a burst of subscribers): each event's count is the one
    just after its own change, so the counts a page sees go 1, 2, 3 and back to 0."""
    manager = ChannelManager()
    presence = manager.presence()
    async with Streams(SSEApp(manager, presence=True, heartbeat_interval=None)) as watchers:
        watcher = watchers.open("/_presence/room", "stream=1")
        with anyio.fail_after(WAIT):
            while await manager.get(presence_channel("room")) is None:
                await anyio.sleep(0.001)
        async with anyio.create_task_group() as tg:
            for subject in ("a", "b", "c"):
                tg.start_soon(presence.join, "room", subject)
        await watcher.wait_for(lambda: len(events(watcher)) == 3)
        async with anyio.create_task_group() as tg:
            for subject in ("a", "b", "c"):
                tg.start_soon(presence.leave, "room", subject)
        await watcher.wait_for(lambda: len(events(watcher)) == 6)
    counts = [data["subscribers"] for _, data in events(watcher)]
    assert sorted(counts[:3]) == [1, 2, 3]
    assert sorted(counts[3:]) == [0, 1, 2]


async def test_the_internal_presence_channels_are_not_in_the_stats() -> None:
    """``/_stats`` (and the dashboard's channel list, and the metrics) show the channels
    clients use: a companion stream's internal channel is none of them."""
    manager = ChannelManager()
    app = SSEApp(manager, presence=True, stats=True, heartbeat_interval=None)
    async with Streams(app) as streams:
        streams.open("/_presence/room", "stream=1")
        with anyio.fail_after(WAIT):
            while await manager.get(presence_channel("room")) is None:
                await anyio.sleep(0.001)
        streams.open("/room", "")
        with anyio.fail_after(WAIT):
            while manager.stats()["subscribers"] < 1:
                await anyio.sleep(0.001)
        stats = manager.stats()
    assert list(stats["per_channel"]) == ["room"]
    assert stats["channels"] == 1 and stats["published"] == 0
