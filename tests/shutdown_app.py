"""The app the shutdown tests serve: three kinds of stream, as users write them.

- ``/sse/{channel}``: `SSEApp` over a `ChannelManager` (a managed channel);
- ``/standalone``: a module-level `SSEChannel` listened to through `EventStreamResponse`
  (the README's quick start);
- ``/generator``: an async generator fed `EventStreamResponse`;
- ``/sync``: a sync generator (run in a worker thread);
- ``/flood``: 64 KiB events as fast as the client takes them, with a 1 s send timeout
  (a client that stops reading is dropped);
- ``/publish``: one event on every channel (``POST``), answered 202.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.lowlevel

from sse_toolkit import ChannelManager, EventStreamResponse, SSEApp, SSEChannel

manager = ChannelManager()
sse = SSEApp(manager, allow_publish=True, max_subscribers_per_client=None)
standalone = SSEChannel("standalone")
HEARTBEAT = float(os.environ.get("SSE_TEST_HEARTBEAT", "15"))


async def ticks() -> AsyncIterator[dict[str, Any]]:
    n = 0
    while True:
        yield {"event": "tick", "data": n, "id": str(n)}
        n += 1
        await anyio.sleep(0.5)


async def flood() -> AsyncIterator[bytes]:
    frame = b"data: " + b"x" * 65536 + b"\n\n"
    while True:
        yield frame
        await anyio.lowlevel.checkpoint()


def sync_ticks() -> Iterator[str]:
    n = 0
    while True:
        yield f"sync {n}"
        n += 1
        time.sleep(0.2)


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await sse(scope, receive, send)
        return
    path = scope["path"]
    if path.startswith("/sse/"):
        await sse(dict(scope, root_path=scope.get("root_path", "") + "/sse"), receive, send)
    elif path == "/standalone":
        await EventStreamResponse(standalone.listen(), heartbeat_interval=HEARTBEAT)(
            scope, receive, send
        )
    elif path == "/generator":
        await EventStreamResponse(ticks(), heartbeat_interval=HEARTBEAT)(scope, receive, send)
    elif path == "/sync":
        await EventStreamResponse(sync_ticks(), heartbeat_interval=HEARTBEAT)(scope, receive, send)
    elif path == "/flood":
        await EventStreamResponse(flood(), send_timeout=1.0)(scope, receive, send)
    elif path == "/publish" and scope["method"] == "POST":
        await standalone.broadcast({"event": "news", "data": "standalone"})
        channel = await manager.get_or_create("managed")
        await channel.broadcast({"event": "news", "data": "managed"})
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b"published"})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"not found"})
