"""The sub-app mounted in FastAPI at /sse, and an endpoint of FastAPI's own that streams a
channel (FastAPI wants a ``Response`` instance: use the Starlette flavour of the response).

Serve it with ``python -m sse_toolkit run examples.mount_fastapi:app``.
"""

# --8<-- [start:mount]
from fastapi import FastAPI, Header

from sse_toolkit import SSEApp, sse_manager
from sse_toolkit.contrib.fastapi import EventStreamResponse

sse = SSEApp(sse_manager, allow_publish=True)  # give it a secret= outside a demo
app = FastAPI(lifespan=sse.lifespan)
app.mount("/sse", sse)
# --8<-- [end:mount]


# --8<-- [start:endpoint]
@app.get("/rooms/{room}")
async def room_events(room: str, last_event_id: str | None = Header(default=None)):
    channel = await sse_manager.get_or_create(room)
    return EventStreamResponse(channel.listen(last_event_id=last_event_id))


@app.post("/rooms/{room}")
async def say(room: str, text: str):
    channel = await sse_manager.get_or_create(room)
    stored = await channel.broadcast({"event": "said", "data": text})
    return {"id": stored.id}


# --8<-- [end:endpoint]
