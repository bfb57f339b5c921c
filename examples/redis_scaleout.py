"""Channels shared by every process and host through Redis Streams.

Serve it with several workers: ``python -m sse_toolkit run examples.redis_scaleout:app
--workers 4`` (``REDIS_URL`` names the server; ``pip install "sse-toolkit[redis]"``). A
publish on any worker reaches the subscribers of every worker, and a client that
reconnects to another worker replays from its ``Last-Event-ID``.
"""

import os

from sse_toolkit import ChannelManager, SSEApp
from sse_toolkit.backends.redis import RedisBackend

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

manager = ChannelManager(backend=RedisBackend(REDIS_URL, prefix="sse:"))
app = SSEApp(manager, allow_publish=True)  # served alone: GET and POST /{channel}
