"""``GET /_health``: 200 when the app can serve, 503 with the reason otherwise.

In-process on asyncio and trio for the memory backend; against real Redis (a dedicated
``redis-server`` that the test stops and starts again) for the backend's PING, and how
often it is sent.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import anyio
import pytest
from asgi_lifespan import LifespanManager

import sse_toolkit
from sse_toolkit import ChannelManager, SSEApp
from sse_toolkit.backends import Backend
from sse_toolkit.lifecycle import is_shutting_down

from .asgi import WAIT, Client, Stream
from .test_redis import (
    redis_server,  # noqa: F401 - a fixture
)

with contextlib.suppress(ImportError):  # (else the conftest hook skips the Redis tests)
    from sse_toolkit.backends.redis import RedisBackend

pytestmark = pytest.mark.anyio

SECRET = "a health test secret of 32 bytes or more, long enough"
OK_MEMORY = {"status": "ok", "streams": 0, "channels": 0, "backend": "memory"}
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


async def get(app: Any, path: str = "/_health", *, method: str = "GET", **kw: Any) -> Client:
    client = Client(method=method, path=path, **kw)
    with anyio.fail_after(WAIT):
        await app(client.scope, client.receive, client.send)
    return client


# -- memory backend ------------------------------------------------------------------------


async def test_ok_is_compact_json_not_cached_and_never_a_stream() -> None:
    app = SSEApp(ChannelManager())
    response = await get(app)
    assert response.status == 200
    assert response.body == b'{"status":"ok","streams":0,"channels":0,"backend":"memory"}'
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-length"] == str(len(response.body))
    assert response.finished
    assert len(response.bodies) == 1  # one body message: not a stream


async def test_counts_the_apps_open_streams_and_the_managers_channels() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, heartbeat_interval=None)
    async with Stream(app, Client(path="/a")) as one, Stream(app, Client(path="/b")) as two:
        with anyio.fail_after(WAIT):
            while app.open_streams < 2 or not (one.messages and two.messages):
                await anyio.sleep(0.001)
        response = await get(app)
        assert response.json() == {**OK_MEMORY, "streams": 2, "channels": 2}
    assert (await get(app)).json()["streams"] == 0


async def test_head_answers_the_headers_and_no_body() -> None:
    response = await get(SSEApp(ChannelManager()), method="HEAD")
    assert response.status == 200
    assert response.body == b""
    assert response.headers["cache-control"] == "no-store"
    assert int(response.headers["content-length"]) > 0  # the length GET's body would have


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_other_methods_get_405(method: str) -> None:
    response = await get(SSEApp(ChannelManager(), allow_publish=True), method=method)
    assert response.status == 405
    assert response.headers["allow"] == "GET, HEAD"


async def test_no_token_is_needed_even_with_a_secret() -> None:
    app = SSEApp(ChannelManager(), secret=SECRET)
    assert (await get(app, "/news")).status == 401  # the app does guard its streams
    response = await get(app)
    assert response.status == 200
    assert response.json() == OK_MEMORY


async def test_trailing_slash_and_mounted_under_a_prefix() -> None:
    app = SSEApp(ChannelManager())
    assert (await get(app, "/_health/")).status == 200
    assert (await get(app, "/_health", root_path="/api/sse")).json() == OK_MEMORY


async def test_health_false_removes_the_route() -> None:
    response = await get(SSEApp(ChannelManager(), health=False))
    assert response.status == 404
    with pytest.raises(TypeError, match="health"):
        SSEApp(ChannelManager(), health=1)  # type: ignore[arg-type]


async def test_503_while_the_process_shuts_down_then_200_after_reopen() -> None:
    app = SSEApp(ChannelManager())
    try:
        await sse_toolkit.shutdown(grace=1.0)
        assert is_shutting_down()
        response = await get(app)
        assert response.status == 503
        assert response.json() == {
            "status": "unavailable",
            "reason": "the process is shutting down",
        }
        assert response.headers["retry-after"] == "1"
        assert response.headers["cache-control"] == "no-store"
        head = await get(app, method="HEAD")
        assert (head.status, head.body) == (503, b"")
    finally:
        sse_toolkit.lifecycle.reopen()
    assert not is_shutting_down()
    assert (await get(app)).status == 200


async def test_503_once_the_manager_is_closed_until_the_app_starts_again() -> None:
    manager = ChannelManager()
    app = SSEApp(manager)
    async with LifespanManager(app):  # type: ignore[arg-type]
        assert (await get(app)).status == 200
    assert manager.closed
    response = await get(app)
    assert response.status == 503
    assert response.json()["reason"] == "the channel manager is closed"
    async with LifespanManager(app):  # type: ignore[arg-type]
        assert (await get(app)).status == 200  # the startup reopened it
    manager.reopen()
    await manager.get_or_create("x")  # so does using it
    assert not manager.closed


class SickBackend(Backend):
    kind = "sick"

    def __init__(self) -> None:
        self.reason: str | None = "the disk is on fire"
        self.raises = False

    async def publish(self, channel: Any, event: Any) -> Any:
        return channel.deliver(event)

    async def health(self) -> str | None:
        await anyio.lowlevel.checkpoint()
        if self.raises:
            raise RuntimeError("boom")
        return self.reason


async def test_503_with_the_backends_reason_and_its_kind_when_well() -> None:
    backend = SickBackend()
    app = SSEApp(ChannelManager(backend=backend))
    response = await get(app)
    assert (response.status, response.json()) == (
        503,
        {"status": "unavailable", "reason": "the disk is on fire"},
    )
    backend.raises = True
    response = await get(app)
    assert response.status == 503
    assert "boom" in response.json()["reason"]
    backend.raises, backend.reason = False, None
    assert (await get(app)).json()["backend"] == "sick"


async def test_the_hub_serves_it_under_sse() -> None:
    from sse_toolkit.hub import Hub

    hub = Hub(SSEApp(ChannelManager()))
    response = await get(hub, "/sse/_health")
    assert (response.status, response.json()) == (200, OK_MEMORY)


# -- Redis ---------------------------------------------------------------------------------


@pytest.mark.redis
@asyncio_only
async def test_redis_backend_ok_then_503_while_redis_is_down_then_ok(
    redis_server: Any,  # noqa: F811
) -> None:
    server = redis_server()
    manager = ChannelManager(backend=RedisBackend(server.url, prefix="health:"))
    app = SSEApp(manager)
    try:
        response = await get(app)
        assert response.json() == {**OK_MEMORY, "backend": "redis"}

        server.stop()
        deadline = time.monotonic() + WAIT
        while (response := await get(app)).status == 200:  # (the last answer is cached 1 s)
            assert time.monotonic() < deadline, "still 200 with Redis stopped"
            await anyio.sleep(0.05)
        assert response.status == 503
        body = response.json()
        assert body["status"] == "unavailable"
        assert body["reason"].startswith("Redis"), body
        assert response.headers["retry-after"] == "1"

        server.start()
        deadline = time.monotonic() + WAIT
        while (response := await get(app)).status != 200:
            assert time.monotonic() < deadline, f"still {response.json()} with Redis back"
            await anyio.sleep(0.05)
        assert response.json()["backend"] == "redis"
    finally:
        await manager.close()


@pytest.mark.redis
@asyncio_only
async def test_redis_health_is_a_ping_a_second_at_most(
    redis_server: Any,  # noqa: F811
) -> None:
    server = redis_server()
    backend = RedisBackend(server.url, prefix="health:")
    manager = ChannelManager(backend=backend)
    app = SSEApp(manager)
    probe = server.client()

    def pings() -> int:
        stats: Any = probe.info("commandstats")
        return int(stats.get("cmdstat_ping", {}).get("calls", 0))

    try:
        before = pings()
        # A load balancer polling every 100 ms for a second and a half, and a burst of
        # concurrent probes: they share PINGs.
        started = time.monotonic()
        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(get, app)
        for _ in range(15):
            assert (await get(app)).status == 200
            await anyio.sleep(0.1)
        elapsed = time.monotonic() - started
        sent = pings() - before
        assert 1 <= sent <= int(elapsed / backend.health_cache) + 1, (sent, elapsed)
    finally:
        probe.close()
        await manager.close()


@pytest.mark.redis
@asyncio_only
async def test_redis_health_times_out_on_a_redis_that_does_not_answer(
    redis_server: Any,  # noqa: F811
) -> None:
    server = redis_server()
    backend = RedisBackend(server.url, prefix="health:")
    backend.health_timeout = 0.2
    manager = ChannelManager(backend=backend)
    probe = server.client()
    try:
        assert await manager.health() is None
        backend._health_at = -1e9  # forget the cached answer
        probe.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        started = time.monotonic()
        reason = await manager.health()
        assert time.monotonic() - started < 1.0
        assert reason == "Redis did not answer a PING within 0.2 s"
    finally:
        probe.close()
        await manager.close()
