"""The sub-app mounted in Starlette at /sse: subscribe with ``GET /sse/{channel}``,
publish with ``POST /sse/{channel}`` and a token.

Serve it with ``python -m sse_toolkit run examples.mount_starlette:app``.
"""

# --8<-- [start:app]
from starlette.applications import Starlette
from starlette.routing import Mount

from sse_toolkit import SSEApp, sse_manager

sse = SSEApp(
    sse_manager,
    allow_publish=True,
    secret="a long random secret from your config",
    token_required_for=["publish"],  # subscribing is open; publishing needs a token
)
app = Starlette(routes=[Mount("/sse", app=sse)], lifespan=sse.lifespan)
# --8<-- [end:app]
