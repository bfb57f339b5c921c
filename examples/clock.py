"""A live clock over Server-Sent Events: ``uvicorn examples.clock:app``.

Open http://127.0.0.1:8000/ in a browser, or ``curl -N http://127.0.0.1:8000/clock``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio

from sse_toolkit import EventStreamResponse, ServerSentEvent
from sse_toolkit.types import Receive, Scope, Send

PAGE = b"""<!doctype html><meta charset="utf-8"><title>sse-toolkit clock</title>
<h1 id="clock">connecting...</h1>
<script>
new EventSource("/clock").addEventListener("tick", (e) => {
  document.getElementById("clock").textContent = JSON.parse(e.data).time;
});
</script>
"""


async def ticks() -> AsyncIterator[ServerSentEvent]:
    n = 0
    while True:
        n += 1
        yield ServerSentEvent({"time": time.strftime("%H:%M:%S")}, event="tick", id=str(n))
        await anyio.sleep(1)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/clock":
        await EventStreamResponse(ticks(), retry=2000)(scope, receive, send)
        return
    headers = [(b"content-type", b"text/html; charset=utf-8")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": PAGE})
