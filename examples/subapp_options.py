"""The sub-app's options, grouped: who may do what (tokens, ``authorize``), limits, CORS.

Serve it with ``SSE_SECRET=... python -m sse_toolkit run examples.subapp_options:app``.
"""

import os

from sse_toolkit import CORS, Auth, Limits, SSEApp, create_token

SECRET = os.environ.get("SSE_SECRET", "a long random secret from your config")


# --8<-- [start:authorize]
def authorize(scope, channel, action):
    """Called for every request, after the token (if any) was checked."""
    return not channel.startswith("internal.") or action == "stats"


# --8<-- [end:authorize]

# --8<-- [start:app]
sse = SSEApp(
    allow_publish=True,
    stats=True,
    auth=Auth(SECRET, authorize=authorize, required_for=("publish", "stats")),
    limits=Limits(max_subscribers_per_client=10, max_body_size=16 * 1024),
    cors=CORS(["https://app.example"]),
)
# --8<-- [end:app]
app = sse  # served alone: GET /{channel}, POST /{channel}, GET /_stats

# --8<-- [start:token]
# Your login view hands this to a client that may publish to "news" for an hour:
token = create_token(SECRET, channels=["news"], actions=["publish"], ttl=3600)
# It sends it as "Authorization: Bearer <token>", the sse_token cookie, or ?token=.
# --8<-- [end:token]
