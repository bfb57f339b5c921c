"""The hub's ASGI app: an `SSEApp` at ``/sse`` and the dashboard page at ``/``.

`sse_toolkit.cli` builds it from the command line; it is an ASGI callable like any other,
so it can also be served by any server (``Hub(SSEApp(manager), HubSettings(...))``).

Routes of its own (everything under ``/sse`` is the `SSEApp`'s):

- ``GET /``: the dashboard (plain HTML, CSS and JS shipped in ``sse_toolkit/dashboard``;
  no build step, nothing fetched from elsewhere, a strict Content-Security-Policy).
- ``GET /_hub/dashboard.js``, ``/_hub/dashboard.css``: its assets.
- ``GET /_hub/config.json``: how the hub was started (`HubSettings`), which the page reads
  to offer only what the hub allows.

With ``HubSettings(demo=True)`` the hub runs the publishers of `sse_toolkit.demo` for as
long as its ASGI lifespan lasts: they start once the `SSEApp` has started, and stop (their
task group cancelled) before it closes its manager. A server run without lifespan runs no
demo.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final

import anyio

from ._http import refuse_websocket, send_json, send_plain
from ._types import Message, Receive, Scope, Send
from .app import SSEApp

__all__ = ["ASSET_PREFIX", "SSE_PREFIX", "Hub", "HubSettings"]

log = logging.getLogger("sse_toolkit.hub")

SSE_PREFIX = "/sse"
ASSET_PREFIX = "/_hub"

# No inline script or style, nothing from another origin, no frames, no forms posted.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS: Final = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
)
_DEMO_STOP_TIMEOUT: Final = 5.0


@dataclass(frozen=True)
class HubSettings:
    """What the dashboard says and offers: it matches how the hub was started."""

    allow_publish: bool = False
    token_required_for: frozenset[str] = field(default_factory=frozenset)
    stats: bool = False
    demo: bool = False
    # The cookie the page sets to subscribe with a token (EventSource sends no header, and
    # a ?token= would land in access logs): the SSEApp's Auth(token_cookie=...).
    token_cookie: str = "sse_token"

    def page_config(self) -> dict[str, Any]:
        """What ``/_hub/config.json`` tells the page."""
        from .demo import DEMO_CHANNELS

        return {
            "sse_prefix": SSE_PREFIX,
            "allow_publish": self.allow_publish,
            "token_required_for": sorted(self.token_required_for),
            "stats": self.stats,
            "demo": self.demo,
            "token_cookie": self.token_cookie,
            "demo_channels": (
                [{"channel": name, "event": event} for name, event in DEMO_CHANNELS.items()]
                if self.demo
                else []
            ),
        }


@dataclass(frozen=True)
class _Asset:
    body: bytes
    content_type: str
    cache_control: str
    etag: str

    @classmethod
    def of(cls, body: bytes, content_type: str, cache_control: str = "no-cache") -> _Asset:
        digest = hashlib.sha256(body).hexdigest()[:32]
        return cls(body, content_type, cache_control, f'"{digest}"')


_FILES: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    f"{ASSET_PREFIX}/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    f"{ASSET_PREFIX}/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}


def _load_assets(settings: HubSettings) -> dict[str, _Asset]:
    folder = resources.files("sse_toolkit").joinpath("dashboard")
    assets = {
        path: _Asset.of(folder.joinpath(name).read_bytes(), content_type)
        for path, (name, content_type) in _FILES.items()
    }
    config = json.dumps(settings.page_config(), separators=(",", ":")).encode()
    # Read once per page load: how this hub runs now, never a cached earlier run's.
    assets[f"{ASSET_PREFIX}/config.json"] = _Asset.of(config, "application/json", "no-store")
    return assets


class Hub:
    """The hub's ASGI app: the SSE sub-app at ``/sse``, the dashboard at ``/``."""

    def __init__(self, sse: SSEApp, settings: HubSettings | None = None) -> None:
        self.sse = sse
        self.settings = settings or HubSettings()
        if self.settings.token_cookie != sse.auth.token_cookie:
            log.warning(
                "the dashboard sets the cookie %r, the SSEApp reads %r: the page cannot "
                "subscribe with a token (HubSettings(token_cookie=...) must match)",
                self.settings.token_cookie,
                sse.auth.token_cookie,
            )
        self._assets = _load_assets(self.settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
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
        await self._static(scope, path, send)

    async def _static(self, scope: Scope, path: str, send: Send) -> None:
        method = scope.get("method", "GET")
        head = method == "HEAD"
        asset = self._assets.get(path)
        if asset is None:
            await send_json(send, 404, {"error": "not found"}, head=head)
            return
        if method not in ("GET", "HEAD"):
            await send_json(send, 405, {"error": "method not allowed"}, [("allow", "GET, HEAD")])
            return
        headers = [
            ("content-type", asset.content_type),
            ("cache-control", asset.cache_control),
            *_SECURITY_HEADERS,
        ]
        if asset.cache_control != "no-store":
            headers.append(("etag", asset.etag))
            if _etag_matches(_header(scope, b"if-none-match"), asset.etag):
                raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
                await send({"type": "http.response.start", "status": 304, "headers": raw})
                await send({"type": "http.response.body", "body": b""})
                return
        await send_plain(send, 200, asset.body, headers, head=head)

    # -- lifespan: the SSEApp's, with the demo's task group around it ----------------------

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.settings.demo:
            await self.sse(scope, receive, send)
            return
        from .demo import run_demo

        demo_scope = anyio.CancelScope()
        demo_done = anyio.Event()

        async def demo() -> None:
            try:
                with demo_scope:
                    await run_demo(self.sse.manager)
            finally:
                demo_done.set()

        async with anyio.create_task_group() as group:

            async def started_then_demo(message: Message) -> None:
                if message["type"] == "lifespan.startup.complete":
                    group.start_soon(demo)
                await send(message)

            async def demo_stopped_before_shutdown() -> Message:
                message = await receive()
                if message["type"] == "lifespan.shutdown":
                    # The publishers stop before the SSEApp closes its manager.
                    demo_scope.cancel()
                    with anyio.move_on_after(_DEMO_STOP_TIMEOUT, shield=True):
                        await demo_done.wait()
                return message

            try:
                await self.sse(scope, demo_stopped_before_shutdown, started_then_demo)
            finally:
                group.cancel_scope.cancel()


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    """``If-None-Match`` (a list of entity tags, or ``*``) against ``etag``, compared weakly
    as RFC 9110 13.1.2 asks: ``W/"x"`` matches ``"x"``."""
    if if_none_match is None:
        return False
    if if_none_match.strip() == "*":
        return True
    # Our etags are hex digests: no commas inside them, so a split on "," is exact for them.
    tags = (tag.strip() for tag in if_none_match.split(","))
    return any(tag.removeprefix("W/") == etag for tag in tags)


def _header(scope: Mapping[str, Any], name: bytes) -> str | None:
    """A list-valued header: its field lines joined with ", " (RFC 9110 5.3)."""
    values = [
        bytes(value).decode("latin-1")
        for key, value in scope.get("headers", ())
        if bytes(key).lower() == name
    ]
    return ", ".join(values) if values else None
