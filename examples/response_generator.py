"""`EventStreamResponse` over your own generators, no channel: one stream per request.

Serve it with ``python -m sse_toolkit run examples.response_generator:app``, then
``curl -N http://127.0.0.1:8000/progress``.
"""

import time

import anyio
from starlette.applications import Starlette
from starlette.routing import Route

from sse_toolkit import EventStreamResponse, ServerSentEvent


# --8<-- [start:async]
async def progress(request):
    async def steps():
        for n in range(1, 4):
            yield ServerSentEvent({"step": n, "of": 3}, event="progress", id=str(n))
            await anyio.sleep(0.1)
        yield {"event": "done", "data": "finished"}  # a dict holds the event's fields

    return EventStreamResponse(steps(), retry=2000, heartbeat_interval=5.0)


# --8<-- [end:async]


# --8<-- [start:sync]
def read_lines():  # a sync generator runs in a worker thread: it may block
    try:
        for n in range(3):
            time.sleep(0.05)  # a blocking read
            yield f"line {n}"  # a str is a data-only event
    finally:
        print("closed")  # runs when the stream ends or the client leaves


async def lines(request):
    return EventStreamResponse(read_lines(), on_disconnect=lambda: print("client left"))


# --8<-- [end:sync]

app = Starlette(routes=[Route("/progress", progress), Route("/lines", lines)])
