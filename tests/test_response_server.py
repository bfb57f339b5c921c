"""EventStreamResponse behind real servers (uvicorn; hypercorn on asyncio and trio), read by
httpx-sse over loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import connect_sse

from sse_toolkit import EventStreamResponse, ServerSentEvent

from .servers import SERVERS, serve

WAIT = 10.0


class App:
    """/count?n=N streams N events and ends; /forever streams until the client leaves."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.disconnected = threading.Event()
        self.closed_before_disconnected: bool | None = None

    def _disconnected(self) -> None:
        self.closed_before_disconnected = self.closed.is_set()
        self.disconnected.set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        source: AsyncIterator[Any] | Iterator[Any]
        if scope["path"] == "/count":
            n = int(scope["query_string"].decode().partition("=")[2])
            source = self.count(n)
        elif scope["path"] == "/blocking":
            source = self.blocking()
        else:
            source = self.forever()
        status = int(scope["query_string"].decode().partition("status=")[2] or 200)
        response = EventStreamResponse(
            source,
            status_code=status,
            headers={"x-padded": " \t1 2 "},
            retry=1000,
            heartbeat_interval=0.05,
            on_disconnect=self._disconnected,
        )
        await response(scope, receive, send)

    async def count(self, n: int) -> AsyncIterator[ServerSentEvent]:
        for i in range(n):
            yield ServerSentEvent({"i": i, "text": "line 1\nline 2"}, event="count", id=str(i))

    def blocking(self) -> Iterator[str]:
        """A sync generator whose every next() blocks its worker thread for a while."""
        try:
            i = 0
            while True:
                yield f"tick {i}"
                i += 1
                time.sleep(0.3)
        finally:
            self.closed.set()

    async def forever(self) -> AsyncIterator[str]:
        try:
            i = 0
            while True:
                yield f"tick {i}"
                i += 1
                await anyio.sleep(0.01)
        finally:
            self.closed.set()


@pytest.mark.parametrize("server", SERVERS)
def test_real_server_streams_parseable_events(server: str) -> None:
    app = App()
    with serve(app, server) as url, httpx.Client(timeout=WAIT) as client:
        with connect_sse(client, "GET", f"{url}/count?n=500") as source:
            response = source.response
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert response.headers["cache-control"] == "no-cache"
            retry_frame, *events = list(source.iter_sse())
    assert retry_frame.retry == 1000  # the initial retry arrives in a frame of its own
    assert retry_frame.data == ""
    assert len(events) == 500
    assert [e.id for e in events] == [str(i) for i in range(500)]
    assert all(e.event == "count" for e in events)
    assert events[7].json() == {"i": 7, "text": "line 1\nline 2"}


@pytest.mark.parametrize("server", SERVERS)
def test_real_server_client_disconnect_closes_the_generator(server: str) -> None:
    app = App()
    with serve(app, server) as url, httpx.Client(timeout=WAIT) as client:
        with connect_sse(client, "GET", f"{url}/forever") as source:
            seen = []
            for event in source.iter_sse():
                if event.data:
                    seen.append(event.data)
                if len(seen) == 3:
                    break
        assert seen == ["tick 0", "tick 1", "tick 2"]
        # closing the connection must end the server side promptly
        assert app.closed.wait(WAIT), "the generator was not closed after the client left"
        assert app.disconnected.wait(WAIT)


@pytest.mark.parametrize("server", SERVERS)
def test_real_server_client_leaving_during_a_blocking_next_closes_the_sync_generator(
    server: str,
) -> None:
    """Issue 8, defect 19: the client leaves while the generator's thread sits in next();
    the response waits for that next() and closes the generator before on_disconnect."""
    app = App()
    with serve(app, server) as url, httpx.Client(timeout=WAIT) as client:
        with connect_sse(client, "GET", f"{url}/blocking") as source:
            for event in source.iter_sse():
                if event.data:
                    assert event.data == "tick 0"
                    break
        assert app.disconnected.wait(WAIT), "the server never saw the client leave"
    assert app.closed.is_set(), "the sync generator was not closed"
    assert app.closed_before_disconnected, "on_disconnect ran before the generator was closed"


@pytest.mark.parametrize("server", SERVERS)
def test_real_server_heartbeats_reach_the_client(server: str) -> None:
    async def quiet(scope: Any, receive: Any, send: Any) -> None:
        async def one_then_idle() -> AsyncIterator[str]:
            yield "hello"
            await anyio.sleep_forever()

        await EventStreamResponse(one_then_idle(), heartbeat_interval=0.05)(scope, receive, send)

    with serve(quiet, server) as url, httpx.Client(timeout=WAIT) as client:
        with client.stream("GET", url) as response:
            received = b""
            for chunk in response.iter_bytes():
                received += chunk
                if received.count(b": heartbeat\n\n") >= 2:
                    break
    assert received.startswith(b"data: hello\n\n")


@pytest.mark.parametrize("server", SERVERS)
def test_real_server_head_request(server: str) -> None:
    app = App()
    with serve(app, server) as url, httpx.Client(timeout=WAIT) as client:
        response = client.head(f"{url}/forever")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.content == b""


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("status", [204, 304])
def test_real_server_status_without_content_sends_headers_only(server: str, status: int) -> None:
    # (204 tells EventSource to stop reconnecting; a body there breaks the connection)
    app = App()
    with serve(app, server) as url, httpx.Client(timeout=WAIT) as client:
        response = client.get(f"{url}/forever?status={status}")
        again = client.get(f"{url}/count?n=1")  # the connection is still good
    assert response.status_code == status
    assert response.content == b""
    assert response.headers["x-padded"] == "1 2"
    assert again.status_code == 200
    assert b"data: " in again.content
