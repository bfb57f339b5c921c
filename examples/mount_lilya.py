"""The sub-app mounted in Lilya at /sse (Lilya does not forward lifespan to mounted apps:
pass the sub-app's).

Serve it with ``python -m sse_toolkit run examples.mount_lilya:app``.
"""

# --8<-- [start:app]
from lilya.apps import Lilya
from lilya.routing import Include

from sse_toolkit import SSEApp, sse_manager

sse = SSEApp(sse_manager, allow_publish=True)  # give it a secret= outside a demo
app = Lilya(routes=[Include("/sse", app=sse)], lifespan=sse.lifespan)
# --8<-- [end:app]
