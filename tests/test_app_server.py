"""SSEApp mounted under a prefix in Lilya, Starlette and FastAPI (and served bare), behind
uvicorn and hypercorn's trio worker, read by httpx-sse over loopback."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from sse_toolkit import ChannelManager, SSEApp, create_token
from sse_toolkit.merge import decode_positions

from .servers import serve

WAIT = 10.0
SECRET = "test-secret: 32 bytes or more, as PyJWT wants for HS256"
PREFIX = "/api/sse"


def mount(framework: str, sse: SSEApp) -> Any:
    """The same SSEApp object, mounted at PREFIX the way each host does it."""
    if framework == "starlette":
        from starlette.applications import Starlette
        from starlette.routing import Mount

        return Starlette(routes=[Mount(PREFIX, app=sse)], lifespan=sse.lifespan)
    if framework == "lilya":
        from lilya.apps import Lilya
        from lilya.routing import Include

        return Lilya(routes=[Include(PREFIX, app=sse)], lifespan=sse.lifespan)
    if framework == "fastapi":
        from fastapi import FastAPI

        app = FastAPI(lifespan=sse.lifespan)
        app.mount(PREFIX, sse)
        return app
    assert framework == "bare"

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await sse(scope, receive, send)
            return
        if not scope["path"].startswith(PREFIX):
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await sse(dict(scope, root_path=PREFIX), receive, send)

    return bare


HOSTS = [
    pytest.param("starlette", "uvicorn"),
    pytest.param("lilya", "uvicorn"),
    pytest.param("fastapi", "uvicorn"),
    pytest.param("bare", "uvicorn"),
    pytest.param("starlette", "hypercorn-trio"),
    pytest.param("lilya", "hypercorn-trio"),
    pytest.param("fastapi", "hypercorn-asyncio"),
]


@contextmanager
def hosted(framework: str, server: str, **options: Any) -> Iterator[tuple[str, ChannelManager]]:
    manager = ChannelManager()
    options.setdefault("heartbeat_interval", None)
    sse = SSEApp(manager, allow_publish=True, **options)
    app = mount(framework, sse)
    if server.endswith("-sse"):
        app = _Tagged(app, [manager])
    with serve(app, server, lifespan="on") as url:
        yield f"{url}{PREFIX}", manager


class _Tagged:
    """The host app, carrying the managers its uvicorn Server must close on shutdown."""

    def __init__(self, app: Any, managers: list[ChannelManager]) -> None:
        self.app, self.sse_managers = app, managers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    pause = threading.Event()
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        pause.wait(0.01)


def subscribers(manager: ChannelManager, name: str) -> int:
    channel = manager._channels.get(name)
    return channel.subscriber_count if channel is not None else 0


def publish(client: httpx.Client, url: str, payload: Any, **kwargs: Any) -> httpx.Response:
    return client.post(
        url,
        content=json.dumps(payload),
        headers={"content-type": "application/json", **kwargs.pop("headers", {})},
        **kwargs,
    )


def read_events(source: Any, n: int) -> list[ServerSentEvent]:
    events = []
    for event in source.iter_sse():
        if event.data or event.event != "message":  # skip httpx-sse's empty comment echoes
            events.append(event)
        if len(events) == n:
            break
    return events


@pytest.mark.parametrize(("framework", "server"), HOSTS)
def test_subscribe_publish_and_replay_after_reconnect(framework: str, server: str) -> None:
    with hosted(framework, server) as (url, manager), httpx.Client(timeout=WAIT) as client:
        with connect_sse(client, "GET", f"{url}/room") as source:
            assert source.response.headers["content-type"].startswith("text/event-stream")
            wait_until(lambda: subscribers(manager, "room") == 1, "the subscriber")
            sent = [
                publish(client, f"{url}/room", {"data": {"n": i}, "event": "tick"})
                for i in range(3)
            ]
            assert [r.status_code for r in sent] == [202, 202, 202]
            got = read_events(source, 3)
        assert [e.json() for e in got] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert [e.id for e in got] == [r.json()["id"] for r in sent]
        wait_until(lambda: subscribers(manager, "room") == 0, "the subscriber to leave")

        # Missed while away; a reconnect with Last-Event-ID gets exactly those.
        missed = [publish(client, f"{url}/room", {"data": f"m{i}"}).json()["id"] for i in range(2)]
        headers = {"last-event-id": got[1].id}
        with connect_sse(client, "GET", f"{url}/room", headers=headers) as source:
            replayed = read_events(source, 3)
        assert [e.data for e in replayed] == ['{"n":2}', "m0", "m1"]
        assert [e.id for e in replayed[1:]] == missed


@pytest.mark.parametrize(("framework", "server"), HOSTS[:4])
def test_multi_channel_stream(framework: str, server: str) -> None:
    with hosted(framework, server) as (url, manager), httpx.Client(timeout=WAIT) as client:
        with connect_sse(client, "GET", f"{url}/?channel=a&channel=b") as source:
            wait_until(lambda: subscribers(manager, "b") == 1, "the subscriber")
            publish(client, f"{url}/a", {"data": "to a"})
            publish(client, f"{url}/b", {"data": "to b"})
            got = read_events(source, 2)
        assert [e.data for e in got] == ["to a", "to b"]
        positions = decode_positions(got[-1].id)
        assert positions is not None and set(positions) == {"a", "b"}


@pytest.mark.parametrize(("framework", "server"), HOSTS[:4])
def test_errors_are_precise_and_the_server_stays_healthy(framework: str, server: str) -> None:
    with (
        hosted(framework, server, max_body_size=1000) as (url, _),
        httpx.Client(timeout=WAIT) as client,
    ):
        cases = [
            (
                client.post(
                    f"{url}/c", content=b"{oops", headers={"content-type": "application/json"}
                ),
                400,
            ),
            (publish(client, f"{url}/c", {"data": "x", "event": "a\nevent: injected"}), 400),
            (publish(client, f"{url}/c", {"data": "x" * 2000}), 413),
            (client.get(f"{url}/bad name"), 400),
            (client.get(f"{url}/{'x' * 200}"), 414),
            (client.get(f"{url}/a/b"), 404),
            (client.put(f"{url}/c"), 405),
        ]
        for response, status in cases:
            assert response.status_code == status, (response.request.url, response.text)
            assert "error" in response.json()
        assert publish(client, f"{url}/c", {"data": "still fine"}).status_code == 202


@pytest.mark.parametrize(("framework", "server"), [HOSTS[0], HOSTS[4]])
def test_token_expiry_ends_the_stream_cleanly(framework: str, server: str) -> None:
    with (
        hosted(framework, server, secret=SECRET, retry=1500) as (url, _),
        httpx.Client(timeout=WAIT) as client,
    ):
        assert client.get(f"{url}/c").status_code == 401
        token = create_token(SECRET, channels="c", actions="subscribe", ttl=2)
        started = time.monotonic()
        with client.stream("GET", f"{url}/c", params={"token": token}) as response:
            assert response.status_code == 200
            body = response.read()  # completes: the stream ends cleanly at expiry
        assert time.monotonic() - started < WAIT
        assert body == b"retry: 1500\n\n"
        publisher = create_token(SECRET, channels="c", actions="publish", ttl=60)
        ok = publish(
            client, f"{url}/c", {"data": 1}, headers={"authorization": f"Bearer {publisher}"}
        )
        assert ok.status_code == 202


@pytest.mark.parametrize(
    ("framework", "server"),
    [
        ("starlette", "uvicorn-sse"),
        ("lilya", "uvicorn-sse"),
        ("fastapi", "uvicorn-sse"),
        ("bare", "uvicorn-sse"),
        ("starlette", "hypercorn-trio-sse"),
        ("lilya", "hypercorn-asyncio-sse"),
    ],
)
def test_shutdown_ends_open_streams_cleanly(framework: str, server: str) -> None:
    """uvicorn and hypercorn wait for responses before their lifespan shutdown; sse_toolkit's
    uvicorn Server and hypercorn trigger close the manager first, so every open stream ends
    with a clean end of body."""
    results: list[bytes | BaseException] = []
    with hosted(framework, server) as (url, manager):

        def read() -> None:
            try:
                with httpx.Client(timeout=WAIT) as client, client.stream("GET", f"{url}/c") as r:
                    results.append(r.read())
            except BaseException as exc:
                results.append(exc)

        readers = [threading.Thread(target=read) for _ in range(2)]
        for reader in readers:
            reader.start()
        wait_until(lambda: subscribers(manager, "c") == 2, "two subscribers")
        # leaving the block stops the server; its lifespan shutdown closes the manager
        manager_to_close = manager
    for reader in readers:
        reader.join(WAIT)
    assert not any(reader.is_alive() for reader in readers)
    assert all(isinstance(r, bytes) for r in results), results
    assert manager_to_close._channels == {}


def test_fastapi_endpoint_returns_the_contrib_response() -> None:
    from fastapi import FastAPI

    from sse_toolkit.contrib.fastapi import EventStreamResponse

    app = FastAPI()

    @app.get("/numbers")
    async def numbers() -> EventStreamResponse:
        async def gen() -> Any:
            for i in range(3):
                yield {"data": i, "event": "n"}

        return EventStreamResponse(gen(), headers={"x-extra": "1"})

    with serve(app) as url, httpx.Client(timeout=WAIT) as client:
        with connect_sse(client, "GET", f"{url}/numbers") as source:
            assert source.response.headers["x-extra"] == "1"
            events = list(source.iter_sse())
    assert [(e.event, e.data) for e in events] == [("n", "0"), ("n", "1"), ("n", "2")]


# -- issue 8: the HTTP surface under adversaries, over real servers ------------------------


@pytest.mark.parametrize(("framework", "server"), [HOSTS[1], HOSTS[4]])
def test_hostile_requests_get_json_errors_never_500(framework: str, server: str) -> None:
    with hosted(framework, server, secret=SECRET) as (url, manager):
        with httpx.Client(timeout=WAIT) as client:
            publisher = create_token(SECRET, channels="*", actions="publish")
            # A cross-site "simple" request: no JSON media type, so no preflight.
            for headers in ({}, {"content-type": "text/plain"}):
                response = client.post(
                    f"{url}/c",
                    content=b'{"data": 1}',
                    headers={"authorization": f"Bearer {publisher}", **headers},
                )
                assert response.status_code == 415
                assert response.json() == {"error": "send the event as application/json"}
            # Any bytes in a token: 401.
            for raw in (b"Bearer abc.d\xe9f", b"Bearer \xff\xfe.\x80", b"Bearer " + b"x" * 4000):
                response = client.get(f"{url}/c", headers={"authorization": raw})
                assert response.status_code == 401, response.text
                assert isinstance(response.json()["error"], str)
            # Deep JSON under the size limit: 400.
            deep = b"[" * 30_000 + b"]" * 30_000
            response = client.post(
                f"{url}/c",
                content=deep,
                headers={
                    "content-type": "application/json",
                    "authorization": f"Bearer {publisher}",
                },
            )
            assert response.status_code == 400
            assert "nested too deeply" in response.json()["error"]
            # A Last-Event-ID past the limit: 400 naming it, without echoing it.
            subscriber = create_token(SECRET, channels="*", actions="subscribe")
            response = client.get(
                f"{url}/c",
                headers={"authorization": f"Bearer {subscriber}", "last-event-id": "x" * 5000},
            )
            assert response.status_code == 400
            assert "last-event-id" in response.json()["error"]
            assert len(response.content) < 200
        assert manager.stats()["subscribers"] == 0


@pytest.mark.redis
def test_caller_set_id_on_redis_over_uvicorn_is_a_json_400() -> None:
    import uuid

    import redis

    from sse_toolkit.backends.redis import RedisBackend

    from .conftest import redis_url

    prefix = f"test-{uuid.uuid4().hex}:"
    manager = ChannelManager(backend=RedisBackend(redis_url(), prefix=prefix))
    sse = SSEApp(manager, allow_publish=True, heartbeat_interval=None)
    try:
        with serve(sse, "uvicorn", lifespan="on") as url, httpx.Client(timeout=WAIT) as client:
            response = publish(client, f"{url}/c", {"data": 1, "id": "mine"})
            assert response.status_code == 400
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"].startswith("id")
            assert publish(client, f"{url}/c", {"data": 1}).status_code == 202
    finally:
        shared = redis.Redis.from_url(redis_url(), socket_timeout=WAIT)
        keys = list(shared.scan_iter(match=f"{prefix}*"))
        if keys:
            shared.delete(*keys)
        shared.close()


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn-asyncio"])
def test_cookies_split_over_several_headers_are_read(server: str) -> None:
    """HTTP/2 clients may send one cookie header per cookie (RFC 9113 8.2.3); hypercorn
    speaks HTTP/2 (prior knowledge) here, uvicorn HTTP/1.1 with the headers split alike."""
    with hosted("bare", server, secret=SECRET) as (url, manager):
        token = create_token(SECRET, channels="room")
        cookies = [("cookie", "theme=dark"), ("cookie", f"sse_token={token}"), ("cookie", "x=1")]
        http2 = server.startswith("hypercorn")
        with httpx.Client(timeout=WAIT, http1=not http2, http2=http2) as client:
            with client.stream("GET", f"{url}/room", headers=cookies) as response:
                assert response.status_code == 200, response.read()
                assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
                wait_until(lambda: subscribers(manager, "room") == 1, "the subscriber")


class _Problems(logging.Handler):
    """Collects a server's log records that are errors or carry a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


@contextmanager
def server_problems(
    names: tuple[str, ...] = ("uvicorn.error", "hypercorn.error"),
) -> Iterator[_Problems]:
    """The error records (and tracebacks) logged on ``names`` while the block runs.

    uvicorn.error has no handlers of its own in uvicorn's logging config, so this one stays
    attached when the server configures logging, through to its shutdown."""
    problems = _Problems()
    loggers = [logging.getLogger(name) for name in names]
    for logger in loggers:
        logger.addHandler(problems)
    try:
        yield problems
    finally:
        for logger in loggers:
            logger.removeHandler(problems)


@pytest.mark.parametrize(("framework", "server"), HOSTS)
def test_a_websocket_handshake_is_refused_with_403_and_no_traceback(
    framework: str, server: str
) -> None:
    # A real WebSocket client. uvicorn speaks WebSocket only with `websockets` (or wsproto)
    # installed; without, it would treat the upgrade as plain HTTP and serve a stream.
    import websockets
    from websockets.sync.client import connect

    with hosted(framework, server) as (url, manager), server_problems() as problems:
        base = url.replace("http://", "ws://")
        for path in ("/x", "/?channel=a&channel=b", "/_stats", "/"):
            with pytest.raises(websockets.InvalidStatus) as refused:
                connect(base + path, open_timeout=WAIT)
            assert refused.value.response.status_code == 403, path
        with httpx.Client(timeout=WAIT) as client:
            with client.stream("GET", f"{url}/x") as response:  # the server still serves
                assert response.status_code == 200
        assert problems.records == [], [r.getMessage() for r in problems.records]
    assert manager.stats()["subscribers"] == 0
