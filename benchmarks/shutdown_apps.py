"""The apps `bench_shutdown.py` stops with open streams: the same endless stream, two ways.

- ``ours``: a module-level `SSEChannel` listened to through `EventStreamResponse` (the
  README's quick start);
- ``starlette``: sse-starlette's `EventSourceResponse` over a generator that waits on an
  event, as its documentation shows (sse-starlette watches uvicorn's exit flag itself).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from sse_toolkit import EventStreamResponse, SSEChannel

channel = SSEChannel("bench")


async def lifespan(receive: Any, send: Any) -> None:
    """Take part in the lifespan protocol, as every framework's app does (uvicorn then
    awaits the app's shutdown instead of exiting at once after cancelling the streams)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def ours(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    await EventStreamResponse(channel.listen())(scope, receive, send)


async def starlette(scope: Any, receive: Any, send: Any) -> None:
    from sse_starlette.sse import EventSourceResponse

    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return

    async def forever() -> AsyncIterator[dict[str, str]]:
        yield {"data": "hello"}
        await asyncio.Event().wait()

    await EventSourceResponse(forever())(scope, receive, send)
