"""SSEApp under hosts that mount differently: Litestar (a mount strips the prefix from
``path``, leaves ``root_path`` alone and adds a trailing slash) and Django (no mount and no
lifespan: `SSEDispatcher`). In-process on asyncio and trio, then over uvicorn with its
lifespan on, read by httpx-sse."""

from __future__ import annotations

import importlib.util
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import connect_sse

from sse_toolkit import ChannelManager, SSEApp, lifecycle
from sse_toolkit._types import Message, Receive, Scope, Send
from sse_toolkit.contrib.django import SSEDispatcher
from sse_toolkit.merge import decode_positions

from .asgi import WAIT, Client
from .servers import serve
from .test_app_server import publish, read_events, server_problems, subscribers, wait_until

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
GRACEFUL_TIMEOUT = 2.0  # uvicorn's timeout_graceful_shutdown in tests/servers.py
LIFESPAN_COMPLETE = ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# The docs' Litestar and Django mounts (examples/mount_litestar.py, examples/django_asgi.py),
# their lines run as written with the test's own `sse` in scope (the rest of the file is the
# module's, imported as it is): every test below that serves Litestar or Django serves one.
def example_section(name: str, section: str) -> str:
    text = (EXAMPLES / name).read_text()
    return text.split(f"# --8<-- [start:{section}]\n", 1)[1].split("# --8<-- [end:", 1)[0]


def run_example(name: str, section: str, sse: SSEApp) -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location(f"example_{uuid.uuid4().hex}", EXAMPLES / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    namespace = {**vars(module), "sse": sse}
    exec(compile(example_section(name, section), str(EXAMPLES / name), "exec"), namespace)
    return namespace


def litestar_app(sse: SSEApp) -> Any:
    """The docs' Litestar example, plus one ordinary route."""
    from litestar import get

    @get("/hello", sync_to_thread=False)
    def hello() -> dict[str, str]:
        return {"hello": "from litestar"}

    app = run_example("mount_litestar.py", "mount", sse)["app"]
    app.register(hello)
    return app


def django_app(sse: SSEApp) -> Any:
    """The docs' Django example, in a project with one view (tests/django_site.py)."""
    from .django_site import asgi_application

    asgi_application()  # configures the settings, as DJANGO_SETTINGS_MODULE would
    return run_example("django_asgi.py", "dispatch", sse)["application"]


# -- the routing SSEApp does itself --------------------------------------------------------


async def run_until_answered(app: Any, client: Client) -> Client:
    """Call ``app``; return once it answered in full, or once a stream started (then
    disconnect the client and wait for the app to return)."""
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(app, client.scope, client.receive, client.send)
            await client.wait_for(lambda: client.finished or answered_stream(client))
            client.disconnect.set()
    return client


def answered_stream(client: Client) -> bool:
    if not client.messages or client.status != 200:
        return False
    return client.headers["content-type"].startswith("text/event-stream")


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/news", "/news/"])
async def test_a_trailing_slash_after_a_channel_name_is_the_channel(path: str) -> None:
    manager = ChannelManager()
    sse = SSEApp(manager, allow_publish=True, heartbeat_interval=None)
    published = Client(
        method="POST",
        path=path,
        body=b'{"data": 1}',
        headers=[("content-type", "application/json")],
    )
    await run_until_answered(sse, published)
    assert (published.status, published.json()["channel"]) == (202, "news")
    subscriber = await run_until_answered(sse, Client(path=path))
    assert answered_stream(subscriber)
    assert manager.stats()["per_channel"].keys() == {"news"}


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["", "/"])
async def test_the_root_with_or_without_slash_is_the_multi_channel_route(path: str) -> None:
    manager = ChannelManager()
    sse = SSEApp(manager, heartbeat_interval=None)
    client = await run_until_answered(sse, Client(path=path, query="channel=a&channel=b"))
    assert answered_stream(client)
    assert manager.stats()["per_channel"].keys() == {"a", "b"}


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["//", "/a/b", "/a/b/", "/news//", "//news", "x/", "x", "/_x/"])
async def test_paths_that_name_no_single_channel_stay_unknown(path: str) -> None:
    sse = SSEApp(ChannelManager(), allow_publish=True, heartbeat_interval=None)
    client = await run_until_answered(sse, Client(path=path))
    assert (client.status, client.json()) == (404, {"error": "not found"})


@pytest.mark.anyio
async def test_the_stats_route_takes_a_trailing_slash_too() -> None:
    sse = SSEApp(ChannelManager(), stats=True)
    client = await run_until_answered(sse, Client(path="/_stats/"))
    assert client.status == 200 and client.json()["channels"] == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "root_path", "channel"),
    [
        ("/apples/", "/app", "apples"),  # a host stripped its mount: "/app" is not a prefix
        ("/app/apples", "/app", "apples"),  # the ASGI way: path includes root_path
        ("/app", "/app", None),  # the mount itself: the multi-channel route
    ],
)
async def test_root_path_is_a_prefix_only_at_a_segment_boundary(
    path: str, root_path: str, channel: str | None
) -> None:
    manager = ChannelManager()
    sse = SSEApp(manager, heartbeat_interval=None)
    client = Client(query="channel=m")
    client.scope.update(path=path, root_path=root_path)
    await run_until_answered(sse, client)
    assert answered_stream(client)
    assert manager.stats()["per_channel"].keys() == {channel or "m"}


# -- Litestar in-process: what its mount hands the app -------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "root_path", "status", "channels"),
    [
        ("/sse/news", "", 200, {"news"}),
        ("/sse/news/", "", 200, {"news"}),
        ("/sse", "", 400, set()),  # the multi-channel route, with no channel named
        ("/sse/", "", 400, set()),
        ("/sse/a/b", "", 404, set()),
        ("/ssex", "", 404, set()),  # Litestar's mount matches it, handing the app "x/"
        ("/sse/apples", "/app", 200, {"apples"}),  # server root_path kept, prefix stripped
    ],
)
async def test_litestar_mount_routes(
    path: str, root_path: str, status: int, channels: set[str]
) -> None:
    manager = ChannelManager()
    app = litestar_app(SSEApp(manager, heartbeat_interval=None))
    client = Client(path=path, root_path=root_path, headers=[("host", "127.0.0.1")])
    await run_until_answered(app, client)
    assert client.status == status, client.body
    if status == 200:
        assert answered_stream(client)
    else:
        assert client.headers["content-type"] == "application/json"
        assert "error" in client.json()
    assert set(manager.stats()["per_channel"]) == channels


# -- SSEDispatcher in-process ---------------------------------------------------------------


class OtherApp:
    """Stands for Django: records the scopes it is given and answers 200 "other"."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1000})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"other"})


class RecordingSSEApp(SSEApp):
    """An SSEApp that records the scopes it is given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        await super().__call__(scope, receive, send)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("root_path", "path", "to_sse"),
    [
        ("", "/sse/news", True),
        ("", "/sse/news/", True),
        ("", "/sse", True),
        ("", "/sse/", True),
        ("/app", "/sse/news", True),
        ("", "/ssex", False),
        ("", "/hello", False),
        ("", "/", False),
        ("/app", "/hello/sse", False),
    ],
)
async def test_dispatcher_routes_the_prefix_to_sse_and_the_rest_to_the_app(
    root_path: str, path: str, to_sse: bool
) -> None:
    manager = ChannelManager()
    other = OtherApp()
    sse = RecordingSSEApp(manager, heartbeat_interval=None)
    client = Client(path=path, root_path=root_path, query="channel=q")
    await run_until_answered(SSEDispatcher(other, sse), client)
    if to_sse:
        assert other.scopes == []
        (scope,) = sse.scopes
        # ASGI mounting: the path is unchanged, the prefix joins root_path.
        assert (scope["path"], scope["root_path"]) == (root_path + path, root_path + "/sse")
        assert answered_stream(client)
        assert set(manager.stats()["per_channel"]) == ({"news"} if "news" in path else {"q"})
    else:
        assert sse.scopes == []
        (scope,) = other.scopes
        assert (scope["path"], scope["root_path"]) == (root_path + path, root_path)
        assert (client.status, client.body) == (200, b"other")


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "to_sse"), [("/sse/news", True), ("/chat", False)])
async def test_dispatcher_websockets_inside_the_prefix_are_refused_outside_go_to_the_app(
    path: str, to_sse: bool
) -> None:
    other = OtherApp()
    dispatcher = SSEDispatcher(other, SSEApp(ChannelManager()))
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": path, "root_path": "", "headers": []}
    with anyio.fail_after(WAIT):
        await dispatcher(scope, receive, send)
    # SSEApp closes before accepting (the server answers 403); the other app chose 1000.
    assert sent == [{"type": "websocket.close", "code": 1003 if to_sse else 1000}]
    assert len(other.scopes) == (0 if to_sse else 1)


@pytest.mark.anyio
async def test_dispatcher_answers_the_lifespan_and_shutdown_ends_open_streams() -> None:
    manager = ChannelManager()
    other = OtherApp()
    dispatcher = SSEDispatcher(other, SSEApp(manager, heartbeat_interval=None))
    to_app, from_server = anyio.create_memory_object_stream[Message](4)
    sent: list[str] = []

    async def send(message: Message) -> None:
        sent.append(message["type"])

    stream = Client(path="/sse/news")
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(dispatcher, {"type": "lifespan"}, from_server.receive, send)
            await to_app.send({"type": "lifespan.startup"})
            tg.start_soon(dispatcher, stream.scope, stream.receive, stream.send)
            await stream.wait_for(lambda: bool(stream.messages))
            assert subscribers(manager, "news") == 1 and not stream.finished
            await to_app.send({"type": "lifespan.shutdown"})
    # The app never saw the lifespan (Django raises on one); the open stream ended cleanly.
    assert other.scopes == []
    assert sent == LIFESPAN_COMPLETE
    assert stream.finished and len(manager) == 0


def test_dispatcher_checks_its_options() -> None:
    sse = SSEApp(ChannelManager())
    for prefix in ("", "/", "sse", "/sse/", "//sse", "/a//b"):
        with pytest.raises(ValueError, match="prefix"):
            SSEDispatcher(OtherApp(), sse, prefix=prefix)
    with pytest.raises(TypeError, match="sse must be an SSEApp"):
        SSEDispatcher(OtherApp(), OtherApp())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="app must be an ASGI application"):
        SSEDispatcher(None, sse)  # type: ignore[arg-type]
    assert SSEDispatcher(OtherApp(), sse, prefix="/api/sse").prefix == "/api/sse"


# -- real servers: uvicorn with its lifespan on --------------------------------------------


class LifespanRecorder:
    """The host app as served, recording the lifespan messages it sends the server."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sent: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def recording_send(message: Message) -> None:
            self.sent.append(message["type"])
            await send(message)

        await self.app(scope, receive, recording_send)


@contextmanager
def hosted(
    framework: str, server: str = "uvicorn"
) -> Iterator[tuple[str, ChannelManager, LifespanRecorder]]:
    """``framework``'s app with SSEApp at /sse, over uvicorn with its lifespan on
    (``uvicorn-sse``: sse_toolkit's uvicorn Server, stopped as SIGTERM would).

    On exit the server has stopped and the log (uvicorn's, Django's, Litestar's) held no
    error and no traceback from start to shutdown.
    """
    manager = ChannelManager()
    sse = SSEApp(manager, allow_publish=True, heartbeat_interval=None)
    app = LifespanRecorder(litestar_app(sse) if framework == "litestar" else django_app(sse))
    try:
        with server_problems(("uvicorn.error", "django", "litestar")) as problems:
            with serve(app, server, lifespan="on") as url:
                assert app.sent == LIFESPAN_COMPLETE[:1]
                yield url, manager, app
    finally:
        # sse_toolkit's Server shut the process's stream registry down: streams that start
        # later (the in-process tests of other modules) would end at once.
        lifecycle.reopen()
    assert problems.records == [], [r.getMessage() for r in problems.records]


FRAMEWORKS = ["litestar", "django"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_subscribe_and_publish_through_the_mount(framework: str) -> None:
    with hosted(framework) as (url, manager, _), httpx.Client(timeout=WAIT) as client:
        with connect_sse(client, "GET", f"{url}/sse/news") as source:
            assert source.response.headers["content-type"].startswith("text/event-stream")
            wait_until(lambda: subscribers(manager, "news") == 1, "the subscriber")
            sent = publish(client, f"{url}/sse/news", {"data": {"n": 1}, "event": "tick"})
            assert sent.status_code == 202, sent.text
            (event,) = read_events(source, 1)
        assert (event.event, event.json(), event.id) == ("tick", {"n": 1}, sent.json()["id"])
        wait_until(lambda: subscribers(manager, "news") == 0, "the subscriber to leave")


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("root", ["/sse/", "/sse"])
def test_multi_channel_stream_through_the_mount(framework: str, root: str) -> None:
    with hosted(framework) as (url, manager, _), httpx.Client(timeout=WAIT) as client:
        with connect_sse(client, "GET", f"{url}{root}?channel=a&channel=b") as source:
            wait_until(lambda: subscribers(manager, "b") == 1, "the subscriber")
            assert publish(client, f"{url}/sse/a", {"data": "to a"}).status_code == 202
            assert publish(client, f"{url}/sse/b", {"data": "to b"}).status_code == 202
            got = read_events(source, 2)
        assert [e.data for e in got] == ["to a", "to b"]
        positions = decode_positions(got[-1].id)
        assert positions is not None and set(positions) == {"a", "b"}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_unknown_routes_and_the_host_own_routes(framework: str) -> None:
    with hosted(framework) as (url, _, _), httpx.Client(timeout=WAIT) as client:
        for path in ("/sse/a/b", "/sse/_private"):
            response = client.get(f"{url}{path}")
            assert response.status_code == 404, path
            assert response.json() == {"error": "not found"}, path
        hello = client.get(f"{url}/hello")
        assert (hello.status_code, hello.json()) == (200, {"hello": f"from {framework}"})
        # Outside the mount the host answers, in its own way.
        missing = client.get(f"{url}/nope")
        assert missing.status_code == 404 and "error" not in missing.text


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_lifespan_shutdown_closes_the_manager(framework: str) -> None:
    with hosted(framework) as (url, manager, app), httpx.Client(timeout=WAIT) as client:
        assert publish(client, f"{url}/sse/kept", {"data": 1}).status_code == 202
        assert len(manager) == 1  # the channel outlives the request: only closing ends it
    assert app.sent == LIFESPAN_COMPLETE
    assert len(manager) == 0


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_stopping_the_server_ends_a_stream_through_the_mount_cleanly(framework: str) -> None:
    """sse_toolkit's uvicorn Server ends open streams before uvicorn waits for them; through
    Litestar's mount and the dispatcher alike, the client reads a complete body."""
    results: list[bytes | BaseException] = []
    with hosted(framework, "uvicorn-sse") as (url, manager, app):

        def read() -> None:
            try:
                with httpx.Client(timeout=WAIT) as client:
                    with client.stream("GET", f"{url}/sse/news") as response:
                        results.append(response.read())
            except BaseException as exc:
                results.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        wait_until(lambda: subscribers(manager, "news") == 1, "the subscriber")
        with httpx.Client(timeout=WAIT) as client:
            assert publish(client, f"{url}/sse/news", {"data": "last"}).status_code == 202
        stopping = time.monotonic()
    # Ended by the Server, not cut by uvicorn's graceful timeout (2 s in tests/servers.py).
    assert time.monotonic() - stopping < GRACEFUL_TIMEOUT
    reader.join(WAIT)
    assert not reader.is_alive()
    (body,) = results
    assert isinstance(body, bytes), body
    assert b"data: last\n" in body
    assert app.sent == LIFESPAN_COMPLETE
    assert len(manager) == 0
