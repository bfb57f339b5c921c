"""From sse-starlette: ``EventSourceResponse(gen(), ping=..., send_timeout=...)`` becomes
``EventStreamResponse(gen(), heartbeat_interval=..., send_timeout=...)``.

Serve it with ``python -m sse_toolkit run examples.migrate_sse_starlette:app``.
"""

# --8<-- [start:app]
import anyio
from starlette.applications import Starlette
from starlette.routing import Route

# was: from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_toolkit import EventStreamResponse, ServerSentEvent


async def numbers(request):
    async def generate():
        for n in range(1, 4):
            # was: ServerSentEvent(data=json.dumps({"n": n}), event="number", id=str(n))
            #      (or JSONServerSentEvent({"n": n}, ...)): a dict or list is JSON here
            yield ServerSentEvent({"n": n}, event="number", id=str(n))
            await anyio.sleep(0.05)

    # was: EventSourceResponse(generate(), ping=20, send_timeout=10)
    return EventStreamResponse(generate(), heartbeat_interval=20, send_timeout=10)


app = Starlette(routes=[Route("/numbers", numbers)])
# --8<-- [end:app]
