"""The sub-app mounted in Litestar at /sse: an ``asgi`` mount, and the sub-app's lifespan.

Serve it with ``python -m sse_toolkit run examples.mount_litestar:app``.
"""

from litestar import Litestar, asgi

from sse_toolkit import SSEApp, sse_manager

sse = SSEApp(sse_manager, allow_publish=True)  # give it a secret= outside a demo
# --8<-- [start:mount]
app = Litestar([asgi("/sse", is_mount=True, copy_scope=True)(sse)], lifespan=[sse.lifespan])
# --8<-- [end:mount]
