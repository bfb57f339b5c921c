"""`SSEApp`: a mountable ASGI app that serves a manager's channels over HTTP.

Routes are relative to wherever the app is mounted (the part of ``scope["path"]`` below
``scope["root_path"]``):

- ``GET /{channel}``: subscribe; ``Last-Event-ID`` (header, or ``last_event_id`` query
  parameter) replays what was missed. ``HEAD`` answers the same headers and no body.
- ``GET /?channel=a&channel=b``: one stream for several channels (see `merge`).
- ``POST /{channel}``: publish a JSON body ``{"data": ..., "event": ..., "id": ...,
  "retry": ...}`` when ``allow_publish`` is set; 202 with the stored id.
- ``GET /_stats``: subscribers, published and dropped per channel, when ``stats`` is set.
- ``OPTIONS``: CORS preflight, when ``cors_origins`` is set.

Channel names are 1 to ``max_channel_name_length`` characters from ``A-Z a-z 0-9 . _ : ~ -``,
not starting with ``_`` (kept for the app's own routes).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final
from urllib.parse import parse_qs

import anyio
import anyio.lowlevel

from ._concurrency import call_maybe_async
from ._types import Receive, Scope, Send
from .backends.base import BackendUnavailable
from .channel import SSEChannel
from .frames import ServerSentEvent
from .manager import ChannelManager, TooManyChannels, sse_manager
from .merge import MergedListener
from .response import EventStreamResponse
from .tokens import InvalidToken, TokenClaims, verify_token

__all__ = ["CHANNEL_NAME_PATTERN", "SSEApp"]

Authorize = Callable[[Scope, str, str], "bool | Awaitable[bool]"]

CHANNEL_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9.:~-][A-Za-z0-9._:~-]*")
_PUBLISH_FIELDS: Final = frozenset({"data", "event", "id", "retry"})
_ALLOWED_METHODS: Final = "GET, HEAD, OPTIONS"
_ALLOWED_METHODS_PUBLISH: Final = "GET, HEAD, POST, OPTIONS"
_CORS_ALLOWED_HEADERS: Final = ("last-event-id", "authorization", "content-type", "cache-control")


class HTTPError(Exception):
    """An error answered as JSON ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


class SSEApp:
    """Serve ``manager``'s channels (the process-wide `sse_manager` by default).

    Security: ``authorize(scope, channel, action)`` (sync or async, action is
    ``"subscribe"``, ``"publish"`` or ``"stats"``) returns whether to allow; with
    ``secret``, requests must also carry a token from `tokens.create_token` (401 without
    one, 403 if it does not cover the channel and action) for the actions in
    ``token_required_for`` (all by default), and a stream ends when its token expires.
    Publishing is off unless ``allow_publish``.

    Limits: ``max_body_size`` (413), ``max_channel_name_length`` (414),
    ``max_subscribers_per_channel`` and ``max_subscribers_per_client`` (429, clients
    keyed by ``client_key(scope)``, the peer address by default),
    ``max_channels_per_stream`` (400).
    """

    def __init__(
        self,
        manager: ChannelManager | None = None,
        *,
        allow_publish: bool = False,
        authorize: Authorize | None = None,
        secret: str | bytes | None = None,
        heartbeat_interval: float | None = 15.0,
        send_timeout: float | None = 30.0,
        retry: int | None = None,
        stats: bool = False,
        max_body_size: int = 64 * 1024,
        max_channel_name_length: int = 128,
        max_channels_per_stream: int = 16,
        max_subscribers_per_channel: int | None = None,
        max_subscribers_per_client: int | None = None,
        client_key: Callable[[Scope], str] | None = None,
        cors_origins: Iterable[str] | str = (),
        cors_allow_credentials: bool = False,
        token_cookie: str = "sse_token",
        token_required_for: Iterable[str] = ("subscribe", "publish", "stats"),
    ) -> None:
        self.manager = manager if manager is not None else sse_manager
        self.allow_publish = allow_publish
        self.authorize = authorize
        self.secret = secret
        self.heartbeat_interval = heartbeat_interval
        self.send_timeout = send_timeout
        self.retry = retry
        self.stats = stats
        self.max_body_size = max_body_size
        self.max_channel_name_length = max_channel_name_length
        self.max_channels_per_stream = max_channels_per_stream
        self.max_subscribers_per_channel = max_subscribers_per_channel
        self.max_subscribers_per_client = max_subscribers_per_client
        self.client_key = client_key or _peer_address
        origins = [cors_origins] if isinstance(cors_origins, str) else list(cors_origins)
        if cors_allow_credentials and "*" in origins:
            raise ValueError("cors_allow_credentials needs explicit origins, not '*'")
        self.cors_origins = frozenset(origins)
        self.cors_allow_credentials = cors_allow_credentials
        self.token_cookie = token_cookie
        self.token_required_for = frozenset(token_required_for)
        self._streams_per_client: dict[str, int] = {}

        # A plain function, not a bound method: Lilya calls bound-method lifespans with no
        # arguments, Starlette and FastAPI call ``lifespan(app)``; this serves both.
        def lifespan(app: object = None) -> AbstractAsyncContextManager[None]:
            return self._lifespan_context(app)

        self.lifespan = lifespan

    @asynccontextmanager
    async def _lifespan_context(self, app: object = None) -> AsyncIterator[None]:
        """For hosts that do not forward lifespan to mounted apps (Starlette, Lilya, FastAPI):
        ``Starlette(lifespan=sse.lifespan)``. On exit every open stream ends cleanly."""
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await self.manager.close()

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan_protocol(receive, send)
        elif kind == "http":
            request = _Request(scope)
            try:
                await self._dispatch(request, receive, send)
            except HTTPError as error:
                await self._error(request, send, error)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1003})

    async def _lifespan_protocol(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.manager.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- routing ---------------------------------------------------------------------------

    async def _dispatch(self, request: _Request, receive: Receive, send: Send) -> None:
        method = request.method
        if method == "OPTIONS":
            await self._preflight(request, send)
            return
        path = request.route_path
        if path in ("", "/"):
            if method not in ("GET", "HEAD"):
                raise self._method_not_allowed(publish=False)
            names = request.query.get("channel", [])
            if not names:
                raise HTTPError(400, "name a channel: /{channel} or /?channel=a&channel=b")
            await self._subscribe(request, receive, send, names)
            return
        if path.count("/") != 1:
            raise HTTPError(404, "not found")
        name = path[1:]
        if (name.startswith("_") and name != "_stats") or (name == "_stats" and not self.stats):
            raise HTTPError(404, "not found")
        if name == "_stats":
            if method != "GET":
                raise self._method_not_allowed(publish=False, stats=True)
            await self._stats(request, send)
            return
        if method in ("GET", "HEAD"):
            await self._subscribe(request, receive, send, [name])
        elif method == "POST" and self.allow_publish:
            await self._publish(request, receive, send, name)
        else:
            raise self._method_not_allowed(publish=self.allow_publish)

    def _method_not_allowed(self, *, publish: bool, stats: bool = False) -> HTTPError:
        allowed = "GET" if stats else _ALLOWED_METHODS_PUBLISH if publish else _ALLOWED_METHODS
        return HTTPError(405, "method not allowed", [("allow", allowed)])

    # -- subscribe -------------------------------------------------------------------------

    async def _subscribe(
        self, request: _Request, receive: Receive, send: Send, names: list[str]
    ) -> None:
        if len(names) > self.max_channels_per_stream:
            raise HTTPError(400, f"at most {self.max_channels_per_stream} channels per stream")
        names = list(dict.fromkeys(names))
        for name in names:
            self._check_name(name)
        claims = await self._authorize_all(request, names, "subscribe")
        client = self.client_key(request.scope)
        limit = self.max_subscribers_per_client
        if limit is not None and self._streams_per_client.get(client, 0) >= limit:
            raise HTTPError(429, f"at most {limit} streams per client", [("retry-after", "5")])
        channels = [await self._channel(name) for name in names]
        limit = self.max_subscribers_per_channel
        for channel in channels:
            if limit is not None and channel.subscriber_count >= limit:
                raise HTTPError(
                    429, f"channel {channel.name!r} is full ({limit})", [("retry-after", "5")]
                )
        last_event_id = request.header("last-event-id") or request.first("last_event_id")
        source: Any
        if len(channels) == 1 and request.query.get("channel") is None:
            source = channels[0].listen(last_event_id=last_event_id)
        else:
            source = MergedListener(channels, last_event_id=last_event_id)
        max_duration = None
        if claims is not None:
            max_duration = max(0.0, claims.expires - time.time())
        self._streams_per_client[client] = self._streams_per_client.get(client, 0) + 1
        try:
            response = EventStreamResponse(
                source,
                headers=self._cors_headers(request),
                heartbeat_interval=self.heartbeat_interval,
                send_timeout=self.send_timeout,
                retry=self.retry,
                max_duration=max_duration,
            )
            await response(request.scope, receive, send)
        finally:
            source.close()
            remaining = self._streams_per_client[client] - 1
            if remaining:
                self._streams_per_client[client] = remaining
            else:
                del self._streams_per_client[client]

    # -- publish ---------------------------------------------------------------------------

    async def _publish(self, request: _Request, receive: Receive, send: Send, name: str) -> None:
        self._check_name(name)
        await self._authorize_all(request, [name], "publish")
        content_type = request.header("content-type")
        if content_type is not None:
            media_type = content_type.partition(";")[0].strip().lower()
            if media_type != "application/json" and not media_type.endswith("+json"):
                raise HTTPError(415, "send the event as application/json")
        body = await self._read_body(request, receive)
        try:
            fields = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPError(400, f"malformed JSON: {exc}") from None
        if not isinstance(fields, dict):
            raise HTTPError(400, "the body must be a JSON object with a 'data' field")
        unknown = fields.keys() - _PUBLISH_FIELDS
        if unknown:
            raise HTTPError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
        if "data" not in fields:
            raise HTTPError(400, "'data' is required")
        try:
            event = ServerSentEvent(**fields)
        except (ValueError, TypeError) as exc:
            raise HTTPError(400, str(exc)) from None
        channel = await self._channel(name)
        try:
            stored = await channel.broadcast(event)
        except BackendUnavailable as exc:
            raise HTTPError(503, f"cannot publish now: {exc}", [("retry-after", "1")]) from None
        await _send_json(send, 202, {"id": stored.id, "channel": name}, self._cors_headers(request))

    async def _read_body(self, request: _Request, receive: Receive) -> bytes:
        limit = self.max_body_size
        declared = request.header("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPError(413, f"the body may be at most {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HTTPError(400, "client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"the body may be at most {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    # -- stats -----------------------------------------------------------------------------

    async def _stats(self, request: _Request, send: Send) -> None:
        await self._authorize_all(request, ["*"], "stats")
        await _send_json(send, 200, self.manager.stats(), self._cors_headers(request))

    # -- checks ----------------------------------------------------------------------------

    def _check_name(self, name: str) -> None:
        if len(name) > self.max_channel_name_length:
            raise HTTPError(414, f"channel names are at most {self.max_channel_name_length} long")
        if not CHANNEL_NAME_PATTERN.fullmatch(name):
            raise HTTPError(
                400, "channel names use A-Z a-z 0-9 . _ : ~ - and do not start with '_'"
            )

    async def _channel(self, name: str) -> SSEChannel:
        try:
            return await self.manager.get_or_create(name)
        except TooManyChannels as exc:
            raise HTTPError(503, str(exc), [("retry-after", "5")]) from None
        except BackendUnavailable as exc:
            raise HTTPError(
                503, f"channels are unavailable: {exc}", [("retry-after", "1")]
            ) from None

    async def _authorize_all(
        self, request: _Request, names: list[str], action: str
    ) -> TokenClaims | None:
        claims = None
        if self.secret is not None and action in self.token_required_for:
            token = request.token(self.token_cookie)
            if token is None:
                raise HTTPError(401, "a token is required", [("www-authenticate", "Bearer")])
            try:
                claims = verify_token(self.secret, token)
            except InvalidToken as exc:
                raise HTTPError(
                    401, str(exc), [("www-authenticate", 'Bearer error="invalid_token"')]
                ) from None
            for name in names:
                if not claims.allows(name, action):
                    raise HTTPError(403, f"the token does not allow {action} on {name!r}")
        if self.authorize is not None:
            for name in names:
                if not await call_maybe_async(self.authorize, request.scope, name, action):
                    raise HTTPError(403, f"not allowed to {action} on {name!r}")
        return claims

    # -- CORS ------------------------------------------------------------------------------

    def _cors_origin(self, request: _Request) -> str | None:
        origin = request.header("origin")
        if origin is None or not self.cors_origins:
            return None
        if origin in self.cors_origins:
            return origin
        if "*" in self.cors_origins:
            return "*"
        return None

    def _cors_headers(self, request: _Request) -> list[tuple[str, str]]:
        allowed = self._cors_origin(request)
        if allowed is None:
            return []
        headers = [("access-control-allow-origin", allowed)]
        if allowed != "*":
            headers.append(("vary", "origin"))
        if self.cors_allow_credentials:
            headers.append(("access-control-allow-credentials", "true"))
        return headers

    async def _preflight(self, request: _Request, send: Send) -> None:
        allowed = self._cors_origin(request)
        if allowed is None:
            raise HTTPError(403, "origin not allowed")
        requested = request.header("access-control-request-headers") or ""
        asked = [h.strip().lower() for h in requested.split(",") if h.strip()]
        refused = [h for h in asked if h not in _CORS_ALLOWED_HEADERS]
        if refused:
            raise HTTPError(403, f"header(s) not allowed: {', '.join(refused)}")
        methods = _ALLOWED_METHODS_PUBLISH if self.allow_publish else _ALLOWED_METHODS
        headers = [
            *self._cors_headers(request),
            ("access-control-allow-methods", methods),
            ("access-control-allow-headers", ", ".join(_CORS_ALLOWED_HEADERS)),
            ("access-control-max-age", "600"),
        ]
        await _send_plain(send, 204, b"", headers)

    async def _error(self, request: _Request, send: Send, error: HTTPError) -> None:
        headers = [*self._cors_headers(request), *error.headers]
        payload = {"error": error.message}
        await _send_json(send, error.status, payload, headers, head=request.method == "HEAD")


class _Request:
    """The parts of an HTTP scope the app reads, decoded once."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.method: str = scope["method"]
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        # ASGI servers and current Starlette keep the mount prefix in `path`; some older
        # hosts strip it. Route on what lies below the mount either way.
        self.route_path = path[len(root) :] if root and path.startswith(root) else path
        self._headers: dict[str, str] = {}
        for key, value in scope.get("headers", ()):
            name = key.decode("latin-1").lower()
            if name not in self._headers:
                self._headers[name] = value.decode("latin-1")
        query = scope.get("query_string", b"").decode("latin-1")
        self.query: dict[str, list[str]] = parse_qs(query, keep_blank_values=True)

    def header(self, name: str) -> str | None:
        return self._headers.get(name)

    def first(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def token(self, cookie_name: str) -> str | None:
        authorization = self.header("authorization")
        if authorization is not None:
            scheme, _, credentials = authorization.partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
        cookie = self.header("cookie")
        if cookie is not None:
            for part in cookie.split(";"):
                key, _, value = part.strip().partition("=")
                if key == cookie_name and value:
                    return value
        return self.first("token")


def _peer_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def _send_json(
    send: Send,
    status: int,
    payload: Any,
    headers: Sequence[tuple[str, str]] = (),
    *,
    head: bool = False,
) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = [("content-type", "application/json"), *headers]
    await _send_plain(send, status, body, headers, head=head)


async def _send_plain(
    send: Send,
    status: int,
    body: bytes,
    headers: Sequence[tuple[str, str]],
    *,
    head: bool = False,
) -> None:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": b"" if head else body})
