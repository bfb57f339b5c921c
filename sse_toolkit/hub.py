"""The hub's ASGI app: an `SSEApp` at ``/sse`` and the dashboard page at ``/``.

`sse_toolkit.cli` builds it from the command line; it is an ASGI callable like any other,
so it can also be served by any server (``Hub(SSEApp(manager), HubSettings(...))``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from ._http import refuse_websocket, send_plain
from ._types import Receive, Scope, Send
from .app import SSEApp

__all__ = ["SSE_PREFIX", "Hub", "HubSettings"]

SSE_PREFIX = "/sse"


@dataclass(frozen=True)
class HubSettings:
    """What the dashboard says and offers: it matches how the hub was started."""

    allow_publish: bool = False
    token_required_for: frozenset[str] = field(default_factory=frozenset)
    stats: bool = False
    demo: bool = False


_INDEX = b"""<!doctype html><meta charset="utf-8"><title>sse-toolkit hub</title>
<h1>sse-toolkit hub</h1>
<p>Subscribe: <code>curl -N http://HOST/sse/demo</code></p>
<p>Publish (with <code>--allow-publish</code>):
<code>curl -X POST -H 'content-type: application/json' -d '{"data":"hi"}' http://HOST/sse/demo</code></p>
<pre id="log"></pre>
<script>
const log = document.getElementById("log");
const source = new EventSource("sse/demo");
source.onmessage = (e) => { log.textContent += e.lastEventId + " " + e.data + "\\n"; };
</script>
"""


class Hub:
    """The hub's ASGI app: the SSE sub-app at ``/sse``, a small page at ``/``."""

    def __init__(self, sse: SSEApp, settings: HubSettings | None = None) -> None:
        self.sse = sse
        self.settings = settings or HubSettings()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.sse(scope, receive, send)
            return
        if kind == "websocket":
            await refuse_websocket(receive, send)  # on every path: the hub speaks HTTP only
            return
        if kind != "http":
            raise RuntimeError(f"the hub serves 'http', 'websocket' and 'lifespan', not {kind!r}")
        path: str = scope.get("path", "")
        if path == SSE_PREFIX or path.startswith(SSE_PREFIX + "/"):
            scope = dict(scope, root_path=scope.get("root_path", "") + SSE_PREFIX)
            await self.sse(scope, receive, send)
            return
        method = scope.get("method", "GET")
        headers = []
        if path != "/":
            status, content_type, body = 404, "application/json", b'{"error":"not found"}'
        elif method not in ("GET", "HEAD"):
            status, content_type = 405, "application/json"
            body = b'{"error":"method not allowed"}'
            headers.append(("allow", "GET, HEAD"))
        else:
            host = html.escape(_host(scope)).encode()  # the Host header is the client's word
            status, content_type = 200, "text/html; charset=utf-8"
            body = _INDEX.replace(b"HOST", host)
        headers.append(("content-type", content_type))
        await send_plain(send, status, body, headers, head=method == "HEAD")


def _host(scope: Scope) -> str:
    for key, value in scope.get("headers", ()):
        if key == b"host":
            return str(value.decode("latin-1"))
    server = scope.get("server") or ("127.0.0.1", 8000)
    return f"{server[0]}:{server[1]}"
