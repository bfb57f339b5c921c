"""From FastAPI's own SSE (``fastapi.sse``): a path operation that yields, with
``response_class=EventSourceResponse``, becomes one that returns our response around the
generator (or a channel's ``listen()``).

Serve it with ``python -m sse_toolkit run examples.migrate_fastapi:app``.
"""

# --8<-- [start:app]
import anyio
from fastapi import FastAPI, Header

from sse_toolkit import ServerSentEvent, sse_manager
from sse_toolkit.contrib.fastapi import EventStreamResponse

app = FastAPI()


# was: @app.get("/items", response_class=EventSourceResponse)
#      async def items(): yield ServerSentEvent(data={"n": n}, event="item", id=str(n))
@app.get("/items")
async def items():
    async def generate():
        for n in range(1, 4):
            yield ServerSentEvent({"n": n}, event="item", id=str(n))
            await anyio.sleep(0.05)
        # was: ServerSentEvent(raw_data="done"): a str is sent as it is here, not as JSON
        yield ServerSentEvent("done", event="end")

    return EventStreamResponse(generate())


# What fastapi.sse has no counterpart for: one channel, many subscribers, replay.
@app.get("/news")
async def news(last_event_id: str | None = Header(default=None)):
    channel = await sse_manager.get_or_create("news")
    return EventStreamResponse(channel.listen(last_event_id=last_event_id))


# --8<-- [end:app]
