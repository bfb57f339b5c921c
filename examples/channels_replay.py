"""Channels by name, replay with ``Last-Event-ID``, heartbeats, and the lag policy.

Serve it with ``python -m sse_toolkit run examples.channels_replay:app``; then
``curl -N http://127.0.0.1:8000/rooms/lobby`` and
``curl -X POST 'http://127.0.0.1:8000/rooms/lobby?text=hi'``.
"""

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from sse_toolkit import ChannelManager, EventStreamResponse

# --8<-- [start:manager]
# Every channel of this manager keeps its newest 100 events (and at most 1 MiB of them)
# for replay; a listener that falls further behind is moved on and told how many it missed.
rooms = ChannelManager(capacity=100, max_bytes=1 << 20, lag_policy="skip")
# --8<-- [end:manager]


# --8<-- [start:subscribe]
async def subscribe(request):
    room = await rooms.get_or_create(request.path_params["room"], for_subscriber=True)
    # EventSource sends Last-Event-ID when it reconnects: replay what it missed.
    last_id = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    return EventStreamResponse(room.listen(last_event_id=last_id), heartbeat_interval=15.0)


async def publish(request):
    room = await rooms.get_or_create(request.path_params["room"])
    stored = await room.broadcast({"event": "said", "data": request.query_params["text"]})
    return JSONResponse({"id": stored.id}, status_code=202)


# --8<-- [end:subscribe]

app = Starlette(
    routes=[
        Route("/rooms/{room}", subscribe),
        Route("/rooms/{room}", publish, methods=["POST"]),
    ]
)
