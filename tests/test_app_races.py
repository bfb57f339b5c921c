"""Races on `SSEApp`'s limits and channels: many requests at once, in-process and over TCP.

Every limit is checked and taken in one step, so however the requests interleave at most
the limit is accepted, the rest get 429, and every slot comes back when the streams end.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import Future
from typing import Any

import anyio
import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)

from sse_toolkit import ChannelManager, SSEApp
from sse_toolkit._types import Scope

from .asgi import WAIT, Client
from .servers import serve

pytestmark = pytest.mark.anyio

STREAMS = 50


async def yielding_authorize(scope: Scope, channel: str, action: str) -> bool:
    """An async hook that yields: widens every window between a check and its use."""
    await anyio.lowlevel.checkpoint()
    return True


def by_header(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == b"x-client":
            return str(value.decode())
    return "anonymous"


async def open_all(app: SSEApp, clients: list[Client]) -> list[int]:
    """Start every request at once; return their statuses once each has answered."""
    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(app, client.scope, client.receive, client.send)
        with anyio.fail_after(WAIT):
            for client in clients:
                await client.wait_for(lambda c=client: bool(c.messages))
        statuses = [client.status for client in clients]
        for client in clients:
            client.disconnect.set()
    return statuses


@pytest.mark.parametrize("hook", [None, yielding_authorize])
async def test_concurrent_subscribes_past_the_per_client_limit(hook: Any) -> None:
    manager = ChannelManager()
    app = SSEApp(manager, max_subscribers_per_client=2, authorize=hook, heartbeat_interval=None)
    clients = [Client(path=f"/c{i % 7}") for i in range(STREAMS)]
    statuses = await open_all(app, clients)
    assert sorted(statuses) == [200] * 2 + [429] * (STREAMS - 2)
    for client in clients:
        if client.status == 429:
            assert client.json() == {"error": "at most 2 streams per client"}
            assert client.headers["retry-after"] == "5"
    assert app.open_streams == 0
    assert manager.stats()["subscribers"] == 0


@pytest.mark.parametrize("hook", [None, yielding_authorize])
async def test_concurrent_subscribes_past_the_per_channel_limit(hook: Any) -> None:
    manager = ChannelManager()
    app = SSEApp(
        manager,
        max_subscribers_per_channel=5,
        max_subscribers_per_client=None,
        authorize=hook,
        heartbeat_interval=None,
    )
    # Single-channel and merged streams compete for the same slots on "room".
    clients = [
        Client(path="/room") if i % 2 else Client(path="/", query="channel=room&channel=other")
        for i in range(STREAMS)
    ]
    statuses = await open_all(app, clients)
    assert statuses.count(200) == 5
    assert statuses.count(429) == STREAMS - 5
    assert app.open_streams == 0
    assert manager.stats()["subscribers"] == 0


async def test_each_client_gets_its_own_slots_under_contention() -> None:
    manager = ChannelManager()
    app = SSEApp(
        manager,
        max_subscribers_per_client=2,
        client_key=by_header,
        authorize=yielding_authorize,
        heartbeat_interval=None,
    )
    clients = [Client(path="/c", headers=[("x-client", f"user{i % 10}")]) for i in range(STREAMS)]
    statuses = await open_all(app, clients)
    accepted: dict[str, int] = {}
    for i, status in enumerate(statuses):
        if status == 200:
            accepted[f"user{i % 10}"] = accepted.get(f"user{i % 10}", 0) + 1
    assert accepted == {f"user{i}": 2 for i in range(10)}
    assert app.open_streams == 0


async def test_publishing_to_new_channels_while_subscribers_hammer() -> None:
    """Subscribers hold streams on ever new names (8 per stream) and churn others; every
    publish to a new channel still succeeds: subscriber-created channels are bounded apart."""
    manager = ChannelManager(max_channels=40)
    app = SSEApp(
        manager, allow_publish=True, max_subscribers_per_client=None, heartbeat_interval=None
    )
    held: list[Client] = []
    published: list[int] = []
    everyone_in = anyio.Event()

    async def hammer(worker: int, tg: Any) -> None:
        for n in range(6):
            names = "&".join(f"channel=w{worker}-{n}-{k}" for k in range(8))
            client = Client(path="/", query=names)
            tg.start_soon(app, client.scope, client.receive, client.send)
            await client.wait_for(lambda c=client: bool(c.messages))
            assert client.status in (200, 503), client.body
            if n % 2:
                client.disconnect.set()  # churn
            else:
                held.append(client)  # and hold

    async def publish(n: int) -> None:
        await everyone_in.wait()
        body = json.dumps({"data": n}).encode()
        client = Client(
            method="POST",
            path=f"/fresh-{n}",
            body=body,
            headers=[("content-type", "application/json")],
        )
        with anyio.fail_after(WAIT):
            await app(client.scope, client.receive, client.send)
        published.append(client.status)

    with anyio.fail_after(4 * WAIT):
        async with anyio.create_task_group() as tg:
            async with anyio.create_task_group() as hammers:  # fill what subscribers may
                for worker in range(8):
                    hammers.start_soon(hammer, worker, tg)
            assert any(c.status == 503 for c in held)  # subscribers did hit their bound
            async with anyio.create_task_group() as hammers:  # publish while they go on
                for worker in range(8, 16):
                    hammers.start_soon(hammer, worker, tg)
                for n in range(15):
                    hammers.start_soon(publish, n)
                everyone_in.set()
            for client in held:
                client.disconnect.set()
    assert published == [202] * 15
    assert app.open_streams == 0
    assert manager.stats()["subscribers"] == 0


async def test_concurrent_first_publishes_to_one_channel_all_land() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True, heartbeat_interval=None)
    clients = [
        Client(
            method="POST",
            path="/new",
            body=json.dumps({"data": n}).encode(),
            headers=[("content-type", "application/json")],
        )
        for n in range(STREAMS)
    ]
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            for client in clients:
                tg.start_soon(app, client.scope, client.receive, client.send)
    assert [c.status for c in clients] == [202] * STREAMS
    ids = [c.json()["id"] for c in clients]
    assert len(set(ids)) == STREAMS
    channel = await manager.get("new")
    assert channel is not None
    history = channel.history()
    assert history is not None and sorted(e.id for e in history) == sorted(ids)


async def test_streams_cut_at_any_moment_give_their_slots_back() -> None:
    manager = ChannelManager()
    app = SSEApp(
        manager,
        allow_publish=True,
        max_subscribers_per_client=STREAMS,
        max_subscribers_per_channel=STREAMS,
        heartbeat_interval=None,
    )
    channel = await manager.get_or_create("busy")

    async def subscriber(i: int) -> None:
        client = Client(path="/busy")
        client.broken_body = i % 3 == 0  # some sockets die on the first frame
        with anyio.move_on_after(0.001 * (i % 10)):  # others are cancelled at any point
            async with anyio.create_task_group() as tg:
                tg.start_soon(app, client.scope, client.receive, client.send)
                await client.wait_for(lambda: b"data" in client.body)
                client.disconnect.set()

    with anyio.fail_after(2 * WAIT):
        async with anyio.create_task_group() as tg:
            for i in range(STREAMS):
                tg.start_soon(subscriber, i)
            for n in range(200):
                await channel.broadcast({"data": n})
                await anyio.lowlevel.checkpoint()
    assert app.open_streams == 0
    assert channel.subscriber_count == 0


# -- over TCP ------------------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the server runs its own loop
async def test_concurrent_streams_over_uvicorn_respect_the_per_client_limit(
    anyio_backend: str,
) -> None:
    manager = ChannelManager()
    app = SSEApp(manager, max_subscribers_per_client=2, heartbeat_interval=None)
    statuses: list[int] = []
    with serve(app, "uvicorn") as url:
        async with httpx.AsyncClient(timeout=WAIT) as client:
            opened = anyio.Event()

            async def subscribe(i: int) -> None:
                async with client.stream("GET", f"{url}/c{i}") as response:
                    statuses.append(response.status_code)
                    if len(statuses) == 20:
                        opened.set()
                    await opened.wait()  # hold every stream open until all have answered

            with anyio.fail_after(WAIT):
                async with anyio.create_task_group() as tg:
                    for i in range(20):
                        tg.start_soon(subscribe, i)
        with anyio.fail_after(WAIT):
            while app.open_streams:
                await anyio.sleep(0.01)
    assert sorted(statuses) == [200] * 2 + [429] * 18


# -- model-based: the limits as a state machine ---------------------------------------------

PER_CLIENT, PER_CHANNEL, CHANNELS_PER_CLIENT, PER_STREAM = 3, 3, 4, 3
CHANNELS = ["a", "b", "c", "d", "e", "f"]


class Request:
    """One request run in the portal's loop: it can be cut (cancelled) and waited for."""

    def __init__(self, portal: BlockingPortal, app: SSEApp, client: Client) -> None:
        self.client = client
        self.scope: anyio.CancelScope | None = None  # made in the loop, where it must live
        self.done = threading.Event()

        async def run() -> None:
            try:
                with anyio.CancelScope() as self.scope:
                    await app(client.scope, client.receive, client.send)
            finally:
                self.done.set()

        self.task: Future[Any] = portal.start_task_soon(run)

    def cut(self) -> None:
        assert self.scope is not None
        self.scope.cancel()

    def wait(self) -> None:
        assert self.done.wait(WAIT), "the request did not end"
        self.task.result(WAIT)  # re-raises whatever escaped the app


class OpenStream:
    def __init__(self, request: Request, key: str, names: list[str]) -> None:
        self.request, self.key, self.names = request, key, names
        self.client = request.client


class AppLimits(RuleBasedStateMachine):
    """Streams opened, closed and cut in any order by a few clients on a few channels: each
    answer is what a model of the limits predicts, and the app's counts match the model."""

    backend = "asyncio"
    streams = Bundle("streams")

    def __init__(self) -> None:
        super().__init__()
        self._portal_cm = start_blocking_portal(self.backend)
        self.portal: BlockingPortal = self._portal_cm.__enter__()
        self.manager = ChannelManager()
        self.app = SSEApp(
            self.manager,
            allow_publish=True,
            max_subscribers_per_client=PER_CLIENT,
            max_subscribers_per_channel=PER_CHANNEL,
            max_channels_per_client=CHANNELS_PER_CLIENT,
            max_channels_per_stream=PER_STREAM,
            client_key=by_header,
            authorize=yielding_authorize,
            heartbeat_interval=None,
        )
        self.open: list[OpenStream] = []

    def expected_status(self, key: str, names: list[str]) -> int:
        if sum(s.key == key for s in self.open) >= PER_CLIENT:
            return 429
        held = {name for s in self.open if s.key == key for name in s.names}
        if len(held | set(names)) > CHANNELS_PER_CLIENT:  # distinct channels, over its streams
            return 429
        for name in names:
            if sum(name in s.names for s in self.open) >= PER_CHANNEL:
                return 429
        return 200

    @rule(
        target=streams,
        key=st.sampled_from(["u1", "u2", "u3"]),
        names=st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=PER_STREAM, unique=True),
    )
    def subscribe(self, key: str, names: list[str]) -> Any:
        merged = len(names) > 1
        query = "&".join(f"channel={n}" for n in names) if merged else ""
        path = "/" if merged else f"/{names[0]}"
        client = Client(path=path, query=query, headers=[("x-client", key)])
        expected = self.expected_status(key, names)
        request = Request(self.portal, self.app, client)
        self.portal.call(client.wait_for, lambda: bool(client.messages))
        assert client.status == expected, (client.status, expected, client.body)
        if expected != 200:
            request.wait()
            return None
        stream = OpenStream(request, key, names)
        self.open.append(stream)
        return stream

    @rule(stream=consumes(streams), cut=st.booleans())
    def leave(self, stream: OpenStream | None, cut: bool) -> None:
        if stream is None:
            return
        if cut:  # the server cancels the request (a dead connection)
            self.portal.call(stream.request.cut)
        else:  # the client hangs up
            self.portal.call(stream.client.disconnect.set)
        stream.request.wait()
        self.open.remove(stream)

    @rule(name=st.sampled_from(CHANNELS))
    def publish(self, name: str) -> None:
        client = Client(
            method="POST",
            path=f"/{name}",
            body=b'{"data": 1}',
            headers=[("content-type", "application/json"), ("x-client", "publisher")],
        )
        self.portal.call(self.app, client.scope, client.receive, client.send)
        assert client.status == 202

    @invariant()
    def counts_match_the_model(self) -> None:
        assert self.app.open_streams == len(self.open)
        subscribers = self.portal.call(lambda: self.manager.stats()["subscribers"])
        assert subscribers == sum(len(s.names) for s in self.open)

    def teardown(self) -> None:
        for stream in self.open:
            self.portal.call(stream.client.disconnect.set)
        for stream in self.open:
            stream.request.wait()
        assert self.app.open_streams == 0
        self.portal.call(self.manager.close)
        self._portal_cm.__exit__(None, None, None)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_limits_state_machine(backend: str) -> None:
    machine = type(f"AppLimits_{backend}", (AppLimits,), {"backend": backend})
    examples = int(os.environ.get("SSE_TOOLKIT_APP_STATEFUL_EXAMPLES", "25"))
    run = settings(max_examples=examples, stateful_step_count=30, deadline=None)(machine).TestCase
    run("runTest").runTest()
