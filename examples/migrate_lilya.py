"""Lilya's "SSE Channels" basic example, with the imports of sse-toolkit in place of
``lilya.contrib.sse.channels`` and ``lilya.responses``: nothing else changes.

Serve it with ``python -m sse_toolkit run examples.migrate_lilya:app``.
"""

# --8<-- [start:app]
from lilya.apps import Lilya
from lilya.routing import Path

from sse_toolkit import EventStreamResponse, SSEChannel

# Create or get a named SSE channel
notifications = SSEChannel("notifications")


async def events():
    # Stream messages to connected clients
    async def stream():
        async for event in notifications.listen(heartbeat_interval=10):
            yield event

    return EventStreamResponse(stream())


async def send():
    # Broadcast to all connected clients
    await notifications.broadcast({"event": "notice", "data": "Hello, world!"})
    return {"sent": True}


app = Lilya(
    routes=[
        Path("/events", events),
        Path("/send", send),
    ]
)
# --8<-- [end:app]
