"""Quick start: a channel in a Starlette app.

Serve it with ``python -m sse_toolkit run examples.quickstart_starlette:app``, then
``curl -N http://127.0.0.1:8000/events`` and ``curl -X POST http://127.0.0.1:8000/send``.
"""

# --8<-- [start:app]
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from sse_toolkit import EventStreamResponse, SSEChannel

notifications = SSEChannel("notifications")


async def events(request):
    last_id = request.headers.get("last-event-id")  # replay what a reconnecting client missed
    return EventStreamResponse(notifications.listen(last_event_id=last_id))


async def send(request):
    stored = await notifications.broadcast({"event": "notice", "data": "Hello, world!"})
    return JSONResponse({"id": stored.id})


app = Starlette(routes=[Route("/events", events), Route("/send", send, methods=["POST"])])
# --8<-- [end:app]
