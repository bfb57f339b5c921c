"""Serve an app with the runner from Python: ``PORT=8000 python examples/run_programmatic.py``.

On SIGINT or SIGTERM every open stream ends with a retry hint and a clean end of body,
then the server stops (exit status 0).
"""

import os

import sse_toolkit
from sse_toolkit import SSEApp

app = SSEApp()  # any ASGI app

if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    sse_toolkit.run(app, host="127.0.0.1", port=port, server="uvicorn", grace=5.0)
