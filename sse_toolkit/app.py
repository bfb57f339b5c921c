"""`SSEApp`: a mountable ASGI app that serves a manager's channels over HTTP.

Routes are relative to wherever the app is mounted (the part of ``scope["path"]`` below
``scope["root_path"]``); ``/{channel}/`` is ``/{channel}``, as hosts such as Litestar add
that slash:

- ``GET /{channel}``: subscribe; ``Last-Event-ID`` (header, or ``last_event_id`` query
  parameter) replays what was missed. ``HEAD`` answers the same headers and no body.
- ``GET /?channel=a&channel=b``: one stream for several channels (see `merge`).
- ``POST /{channel}``: publish a JSON body ``{"data": ..., "event": ..., "id": ...,
  "retry": ...}`` when ``allow_publish`` is set; 202 with the stored id (``"data"`` that is
  not a string is sent as JSON, ``null`` too). With publishing
  off, 405 (``Allow: GET, HEAD, OPTIONS``) and an error saying how to turn it on.
- ``GET /_stats``: subscribers, published and dropped per channel, when ``stats`` is set.
- ``GET /_health``: 200 ``{"status":"ok","streams":n,"channels":n,"backend":"memory"}``,
  or 503 ``{"status":"unavailable","reason":...}`` (shutting down, the manager closed, the
  backend not answering); no token needed; off with ``health=False``.
- ``GET /_presence/{channel}``: ``{"channel":...,"subscribers":n,"subjects":[...]}``, and
  with ``?stream=1`` a stream of ``sse.join`` / ``sse.leave`` events, when ``presence``
  is set (see `sse_toolkit.presence`); authorised as subscribing to the channel.
- ``GET /_metrics``: Prometheus metrics (see `sse_toolkit.metrics`), when ``metrics`` is
  set (``True``, or a `Metrics`); guarded like ``/_stats`` (the ``stats`` grant).
- ``OPTIONS``: CORS preflight, when ``cors_origins`` is set.

Statuses: 200 (stream), 202 (published), 204 (preflight); errors are JSON
``{"error": message}``: 400 (bad name, JSON, field, ``Last-Event-ID`` or too many
channels; event types starting with ``sse.`` are reserved for the toolkit's notices),
401 (token missing or invalid), 403 (not allowed), 404, 405, 413 (body), 414 (name),
415 (publish without a JSON media type), 429 (stream limits: streams per client, channels
per client, streams per channel; with ``Retry-After``), 503 (channels or backend
unavailable). A WebSocket is refused before its handshake (the server answers 403).

Channel names are 1 to ``max_channel_name_length`` characters from ``A-Z a-z 0-9 . _ : ~ -``,
not starting with ``_`` (kept for the app's own routes).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final

import anyio

from ._http import ClientGone, HTTPError, Request, refuse_websocket, send_json, send_plain
from ._slots import Reservation, StreamSlots
from ._types import Receive, Scope, Send
from .backends.base import BackendUnavailable
from .channel import ChannelClosed, SSEChannel
from .frames import ServerSentEvent
from .lifecycle import is_shutting_down
from .manager import ChannelManager, TooManyChannels, sse_manager
from .merge import MergedListener
from .metrics import Metrics, route_of
from .policy import (
    CHANNEL_NAME_PATTERN,
    CORS,
    Auth,
    Authorize,
    Limits,
    check_seconds,
)
from .presence import Presence, presence_channel
from .response import EventStreamResponse, StreamObserver
from .tokens import TokenClaims, TokenVerifier

__all__ = ["CHANNEL_NAME_PATTERN", "CORS", "Auth", "HTTPError", "Limits", "SSEApp"]

_PUBLISH_FIELDS: Final = frozenset({"data", "event", "id", "retry"})
_ALLOWED_METHODS: Final = "GET, HEAD, OPTIONS"
_ALLOWED_METHODS_PUBLISH: Final = "GET, HEAD, POST, OPTIONS"
_LEAVE_TIMEOUT: Final = 5.0  # bound on a stream's presence leaves (shielded)
# Event types of the toolkit's own notices (sse.reset, sse.lagged): not for publishers.
RESERVED_EVENT_PREFIX: Final = "sse."
# The 405 answer to a publish while publishing is off: it says how to turn it on.
PUBLISHING_OFF: Final = (
    "publishing is off: SSEApp(allow_publish=True) or the hub's --allow-publish turns it on"
)


class _Unset:
    """The default of the keywords that build `Auth`, `Limits` and `CORS`: "not given"."""

    def __repr__(self) -> str:
        return "<default>"


_UNSET: Final[Any] = _Unset()


class SSEApp:
    """Serve ``manager``'s channels (the process-wide `sse_manager` by default).

    Options come in groups, each validated when built: ``auth=Auth(...)`` (who may do
    what), ``limits=Limits(...)`` (bounds per request, client and channel) and
    ``cors=CORS(...)``. The flat keywords (``secret``, ``authorize``, ``token_cookie``,
    ``token_required_for``; ``max_*`` and ``client_key``; ``cors_origins``,
    ``cors_allow_credentials``) build the same groups; give a group or its keywords, not both.
    With ``secret``, every action (subscribe, publish, stats) needs a token unless
    ``token_required_for`` names the ones that do (see `Auth`).
    Publishing is off unless ``allow_publish``. ``heartbeat_interval``, ``send_timeout`` and
    ``retry`` shape every stream (see `EventStreamResponse`). Every mistake raises
    `ValueError` or `TypeError` naming the parameter, here, not at the first request.
    """

    def __init__(
        self,
        manager: ChannelManager | None = None,
        *,
        allow_publish: bool = False,
        auth: Auth | None = None,
        limits: Limits | None = None,
        cors: CORS | None = None,
        heartbeat_interval: float | None = 15.0,
        send_timeout: float | None = 30.0,
        retry: int | None = None,
        stats: bool = False,
        health: bool = True,
        presence: bool = False,
        presence_ttl: float | None = None,
        metrics: bool | Metrics = False,
        # The flat keywords of the groups (kept: they are the README's and Lilya's API).
        authorize: Authorize | None = _UNSET,
        secret: str | bytes | TokenVerifier | None = _UNSET,
        token_cookie: str = _UNSET,
        token_required_for: Iterable[str] | None = _UNSET,
        max_body_size: int = _UNSET,
        max_channel_name_length: int = _UNSET,
        max_channels_per_stream: int = _UNSET,
        max_subscribers_per_channel: int | None = _UNSET,
        max_subscribers_per_client: int | None = _UNSET,
        max_channels_per_client: int | None = _UNSET,
        max_last_event_id_length: int = _UNSET,
        client_key: Callable[[Scope], str] | None = _UNSET,
        cors_origins: Iterable[str] | str = _UNSET,
        cors_allow_credentials: bool = _UNSET,
    ) -> None:
        manager = manager if manager is not None else sse_manager
        if not isinstance(manager, ChannelManager):
            raise TypeError(f"manager must be a ChannelManager, not {manager!r}")
        for name, value in (("allow_publish", allow_publish), ("stats", stats)):
            if type(value) is not bool:
                raise TypeError(f"{name} must be a bool, not {value!r}")
        for name, value in (("health", health), ("presence", presence)):
            if type(value) is not bool:
                raise TypeError(f"{name} must be a bool, not {value!r}")
        if presence_ttl is not None and not presence:
            raise ValueError("presence_ttl is set but presence is off")
        self.health = health
        # The manager's own: every app on one manager shares its counts.
        self.presence: Presence | None = manager.presence(ttl=presence_ttl) if presence else None
        if metrics is True:
            metrics = Metrics()  # (an ImportError naming the extra without prometheus_client)
        elif metrics is not False and not isinstance(metrics, Metrics):
            raise TypeError(f"metrics must be a bool or a Metrics, not {metrics!r}")
        self.metrics: Metrics | None = metrics or None
        if self.metrics is not None:
            self.metrics.watch(manager)
        self.manager = manager
        self.allow_publish = allow_publish
        self.stats = stats
        self.heartbeat_interval = check_seconds("heartbeat_interval", heartbeat_interval)
        self.send_timeout = check_seconds("send_timeout", send_timeout)
        if retry is not None and (type(retry) is not int or retry < 0):
            raise ValueError(f"retry must be an int >= 0 (milliseconds) or None, not {retry!r}")
        self.retry = retry
        self.auth: Auth = _group(
            "auth",
            auth,
            Auth,
            secret=secret,
            authorize=authorize,
            token_cookie=token_cookie,
            required_for=token_required_for,
        )
        self.limits: Limits = _group(
            "limits",
            limits,
            Limits,
            max_body_size=max_body_size,
            max_channel_name_length=max_channel_name_length,
            max_channels_per_stream=max_channels_per_stream,
            max_subscribers_per_channel=max_subscribers_per_channel,
            max_subscribers_per_client=max_subscribers_per_client,
            max_channels_per_client=max_channels_per_client,
            max_last_event_id_length=max_last_event_id_length,
            client_key=client_key,
        )
        self.cors: CORS = _group(
            "cors", cors, CORS, origins=cors_origins, allow_credentials=cors_allow_credentials
        )
        self._slots = StreamSlots(
            self.limits.max_subscribers_per_client,
            self.limits.max_subscribers_per_channel,
            self.limits.max_channels_per_client,
        )

        # A plain function, not a bound method: Lilya calls bound-method lifespans with no
        # arguments, Starlette and FastAPI call ``lifespan(app)``; this serves both.
        def lifespan(app: object = None) -> AbstractAsyncContextManager[None]:
            return self._lifespan_context(app)

        self.lifespan = lifespan

    @asynccontextmanager
    async def _lifespan_context(self, app: object = None) -> AsyncIterator[None]:
        """For hosts that do not forward lifespan to mounted apps (Starlette, Lilya, FastAPI):
        ``Starlette(lifespan=sse.lifespan)``. On exit every open stream ends cleanly."""
        self.manager.reopen()  # (a server restarted in the same process serves again)
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await self.manager.close()

    @property
    def open_streams(self) -> int:
        """Streams this app serves now (each holds its client's and its channels' slots)."""
        return len(self._slots)

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            request = Request(scope)
            try:
                subscription = await self._dispatch(request, receive, send)
            except HTTPError as error:
                await self._error(request, send, error)
                return
            except ClientGone:
                return  # nobody to answer
            if subscription is None:
                return  # answered
            # A subscriber's stream runs here, not in the methods that checked it: their
            # frames (and the request, parsed) would be held for as long as it is open.
            del request
            try:
                if not subscription.present:
                    await subscription.response(scope, receive, send)
                else:
                    async with self._present(subscription.names, subscription.claims):
                        await subscription.response(scope, receive, send)
            finally:
                subscription.close()
        elif kind == "websocket":
            await refuse_websocket(receive, send)
        elif kind == "lifespan":
            await self._lifespan_protocol(receive, send)
        else:
            # The ASGI spec: an application raises on a scope type it does not understand.
            raise RuntimeError(f"SSEApp serves 'http', 'websocket' and 'lifespan', not {kind!r}")

    async def _lifespan_protocol(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.manager.reopen()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.manager.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- routing ---------------------------------------------------------------------------

    async def _dispatch(
        self, request: Request, receive: Receive, send: Send
    ) -> _Subscription | None:
        """Answer the request, or (a subscriber, checked) return what to stream."""
        method = request.method
        if method == "OPTIONS":
            methods = _ALLOWED_METHODS_PUBLISH if self.allow_publish else _ALLOWED_METHODS
            await send_plain(send, 204, b"", self.cors.preflight_headers(request, methods))
            return None
        path = request.route_path
        if path in ("", "/"):
            if method not in ("GET", "HEAD"):
                raise self._method_not_allowed(publish=False)
            names = request.query.get("channel", [])
            if not names:
                raise HTTPError(400, "name a channel: /{channel} or /?channel=a&channel=b")
            return await self._subscribe(request, names, merged=True)
        if path.startswith("/_") and await self._health_or_presence(request, receive, send):
            return None
        if path in ("/_metrics", "/_metrics/") and self.metrics is not None:
            if method != "GET":
                raise self._method_not_allowed(publish=False, stats=True)
            await self._metrics(request, send, self.metrics)
            return None
        name = _channel_segment(path)
        if name is None:
            raise HTTPError(404, "not found")
        if (name.startswith("_") and name != "_stats") or (name == "_stats" and not self.stats):
            raise HTTPError(404, "not found")
        if name == "_stats":
            if method != "GET":
                raise self._method_not_allowed(publish=False, stats=True)
            await self._stats(request, send)
            return None
        if method in ("GET", "HEAD"):
            return await self._subscribe(request, [name], merged=False)
        if method == "POST" and self.allow_publish:
            await self._publish(request, receive, send, name)
            return None
        if method == "POST":
            raise self._method_not_allowed(publish=False, message=PUBLISHING_OFF)
        raise self._method_not_allowed(publish=self.allow_publish)

    def _method_not_allowed(
        self, *, publish: bool, stats: bool = False, message: str = "method not allowed"
    ) -> HTTPError:
        allowed = "GET" if stats else _ALLOWED_METHODS_PUBLISH if publish else _ALLOWED_METHODS
        return HTTPError(405, message, [("allow", allowed)])

    # -- subscribe: check, authorise, reserve, choose the source, stream, release ----------

    async def _subscribe(
        self, request: Request, names: list[str], *, merged: bool
    ) -> _Subscription:
        """Check, authorise and reserve a subscriber's stream; `__call__` streams it."""
        names = self.limits.check_stream_names(names)
        last_event_id = self.limits.last_event_id(request, len(names))
        event_types = self.limits.event_types(request)  # ?event=a&event=b: a filter
        claims = await self.auth.check(request, names, "subscribe")
        # Taken in one synchronous step, before anything below awaits: concurrent requests
        # cannot all pass the check. Released on every way out (`_Subscription.close`).
        reservation = self._slots.reserve(self.limits.client_key(request.scope), names)
        try:
            channels = [await self._channel(name, for_subscriber=True) for name in names]
            source = _source(channels, last_event_id, merged=merged, events=event_types)
        except BaseException:
            reservation.release()
            raise
        try:
            head = request.method == "HEAD"
            observer = (
                None
                if self.metrics is None or head
                else self.metrics.observer(channels, replay=bool(last_event_id))
            )
            response = self._response(source, request, claims, observer)
        except BaseException:
            source.close()
            reservation.release()
            raise
        present = self.presence is not None and not head  # (a HEAD is no subscriber)
        return _Subscription(response, source, reservation, present, names, claims)

    def _response(
        self,
        source: Any,
        request: Request,
        claims: TokenClaims | None,
        observer: StreamObserver | None = None,
    ) -> EventStreamResponse:
        """A stream of ``source`` with the app's options; it ends when the token expires."""
        return EventStreamResponse(
            source,
            headers=self.cors.headers(request),
            heartbeat_interval=self.heartbeat_interval,
            send_timeout=self.send_timeout,
            retry=self.retry,
            max_duration=self.auth.seconds_left(claims),
            observer=observer,
        )

    @asynccontextmanager
    async def _present(self, names: list[str], claims: TokenClaims | None) -> AsyncIterator[None]:
        """Presence (on): the stream joins its channels (with its token's subject) while it
        runs. A ``HEAD`` is no subscriber (the caller does not ask).

        The leaves are shielded and bounded: they run however the stream ends (a client
        gone, a shutdown, a cancellation).
        """
        presence = self.presence
        assert presence is not None
        subject = claims.subject if claims is not None else None
        generation = presence.generation
        joined: list[str] = []
        try:
            for name in names:
                joined.append(name)
                await presence.join(name, subject)
            yield
        finally:
            with anyio.move_on_after(_LEAVE_TIMEOUT, shield=True):
                for name in joined:
                    await presence.leave(name, subject, generation=generation)

    # -- health and presence ---------------------------------------------------------------

    async def _health_or_presence(self, request: Request, receive: Receive, send: Send) -> bool:
        """Serve ``/_health`` and ``/_presence/{channel}`` (when on); False: not theirs."""
        path = request.route_path
        if self.health and path in ("/_health", "/_health/"):
            await self._health(request, send)
            return True
        if self.presence is not None and path.startswith("/_presence/"):
            name = _channel_segment(path[len("/_presence") :])
            if name is None:
                raise HTTPError(404, "not found")
            await self._presence(request, receive, send, self.presence, name)
            return True
        return False

    async def _health(self, request: Request, send: Send) -> None:
        """Cheap, never a stream, no token: what a load balancer or orchestrator polls."""
        if request.method not in ("GET", "HEAD"):
            raise HTTPError(405, "method not allowed", [("allow", "GET, HEAD")])
        headers = [("cache-control", "no-store"), *self.cors.headers(request)]
        head = request.method == "HEAD"
        if is_shutting_down():
            reason: str | None = "the process is shutting down"
        else:
            reason = await self.manager.health()
        if reason is not None:
            payload: dict[str, Any] = {"status": "unavailable", "reason": reason}
            headers.append(("retry-after", "1"))
            await send_json(send, 503, payload, headers, head=head)
            return
        payload = {
            "status": "ok",
            "streams": self.open_streams,
            "channels": len(self.manager),
            "backend": self.manager.backend.kind,
        }
        await send_json(send, 200, payload, headers, head=head)

    async def _presence(
        self, request: Request, receive: Receive, send: Send, presence: Presence, name: str
    ) -> None:
        if request.method not in ("GET", "HEAD"):
            raise HTTPError(405, "method not allowed", [("allow", "GET, HEAD")])
        self.limits.check_name(name)
        if request.first("stream") not in (None, "", "0"):
            await self._presence_stream(request, receive, send, name)
            return
        await self.auth.check(request, [name], "subscribe")
        try:
            snapshot = await presence.snapshot(name)
        except BackendUnavailable as exc:
            raise HTTPError(
                503, f"presence is unavailable: {exc}", [("retry-after", "1")]
            ) from None
        headers = [("cache-control", "no-store"), *self.cors.headers(request)]
        await send_json(send, 200, snapshot, headers, head=request.method == "HEAD")

    async def _presence_stream(
        self, request: Request, receive: Receive, send: Send, name: str
    ) -> None:
        """The companion stream: the internal channel of ``name``'s joins and leaves (its
        own subscribers are not counted as present)."""
        last_event_id = self.limits.last_event_id(request)
        claims = await self.auth.check(request, [name], "subscribe")
        internal = presence_channel(name)
        with self._slots.reserve(self.limits.client_key(request.scope), [internal]):
            channel = await self._channel(internal, for_subscriber=True)
            source = _source([channel], last_event_id, merged=False)
            try:
                response = self._response(source, request, claims)
                await response(request.scope, receive, send)
            finally:
                source.close()

    # -- publish: check, authorise, read, parse, broadcast ---------------------------------

    async def _publish(self, request: Request, receive: Receive, send: Send, name: str) -> None:
        self.limits.check_name(name)
        await self.auth.check(request, [name], "publish")
        _check_json_media_type(request)
        event = self._parse_event(await self._read_body(request, receive))
        channel = await self._channel(name, for_subscriber=False)
        try:
            stored = await channel.broadcast(event)
        except BackendUnavailable as exc:
            raise HTTPError(503, f"cannot publish now: {exc}", [("retry-after", "1")]) from None
        except (TooManyChannels, ChannelClosed) as exc:
            raise HTTPError(503, f"cannot publish now: {exc}", [("retry-after", "5")]) from None
        except (ValueError, TypeError) as exc:
            # The event was valid here but the backend refuses it (Redis: a caller-set id).
            raise HTTPError(400, str(exc)) from None
        await send_json(send, 202, {"id": stored.id, "channel": name}, self.cors.headers(request))

    async def _read_body(self, request: Request, receive: Receive) -> bytes:
        limit = self.limits.max_body_size
        declared = request.content_length()
        if declared is not None and declared > limit:
            raise HTTPError(413, f"the body may be at most {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"the body may be at most {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _parse_event(self, body: bytes) -> ServerSentEvent:
        try:
            fields = json.loads(body, parse_constant=_refuse_constant)
        except RecursionError:
            raise HTTPError(400, "malformed JSON: nested too deeply") from None
        except ValueError as exc:  # UnicodeDecodeError included
            raise HTTPError(400, f"malformed JSON: {exc}") from None
        if not isinstance(fields, dict):
            raise HTTPError(400, "the body must be a JSON object with a 'data' field")
        unknown = fields.keys() - _PUBLISH_FIELDS
        if unknown:
            raise HTTPError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
        if "data" not in fields:
            raise HTTPError(400, "'data' is required")
        self.limits.check_event_id(fields.get("id"))
        event_type = fields.get("event")
        if isinstance(event_type, str) and event_type.startswith(RESERVED_EVENT_PREFIX):
            # A client must be able to trust sse.reset / sse.lagged (and the toolkit's
            # future notices): only the toolkit sends them.
            raise HTTPError(
                400, f"event types starting with {RESERVED_EVENT_PREFIX!r} are reserved"
            )
        if fields["data"] is None:
            # JSON's null, sent as JSON like every other non-string value: a frame without
            # data would be stored and acknowledged but never dispatched by EventSource.
            fields["data"] = "null"
        try:
            return ServerSentEvent(**fields)
        except RecursionError:
            raise HTTPError(400, "data: nested too deeply") from None
        except (ValueError, TypeError) as exc:
            raise HTTPError(400, str(exc)) from None

    # -- stats -----------------------------------------------------------------------------

    async def _stats(self, request: Request, send: Send) -> None:
        await self.auth.check(request, ["*"], "stats")
        await send_json(send, 200, self.manager.stats(), self.cors.headers(request))

    async def _metrics(self, request: Request, send: Send, metrics: Metrics) -> None:
        await self.auth.check(request, ["*"], "stats")
        body, content_type = metrics.render(request.header("accept"))
        headers = [("content-type", content_type), ("cache-control", "no-store")]
        await send_plain(send, 200, body, [*headers, *self.cors.headers(request)])

    # -- channels --------------------------------------------------------------------------

    async def _channel(self, name: str, *, for_subscriber: bool) -> SSEChannel:
        try:
            # Bounded apart from publishers' channels: subscribers alone cannot fill the
            # manager and make publishing to a new channel fail.
            if for_subscriber:
                return await self.manager.get_or_create(name, for_subscriber=True)
            return await self.manager.get_or_create(name)
        except TooManyChannels as exc:
            raise HTTPError(503, str(exc), [("retry-after", "5")]) from None
        except BackendUnavailable as exc:
            raise HTTPError(
                503, f"channels are unavailable: {exc}", [("retry-after", "1")]
            ) from None

    async def _error(self, request: Request, send: Send, error: HTTPError) -> None:
        if self.metrics is not None:
            self.metrics.count_error(route_of(request.method, request.route_path), error.status)
        headers = [*self.cors.headers(request), *error.headers]
        payload = {"error": error.message}
        await send_json(send, error.status, payload, headers, head=request.method == "HEAD")


def _channel_segment(path: str) -> str | None:
    """The name in ``/{name}`` or ``/{name}/``; None for any other path (a 404).

    The trailing slash is allowed because some hosts add one: Litestar hands a mounted app
    ``/news/`` for a request to ``/prefix/news``. A name cannot contain ``/``, so
    ``/{name}/`` can mean nothing else; ``//`` and ``/a/b`` stay unknown routes.
    """
    if not path.startswith("/"):
        return None
    name = path[1:-1] if path.endswith("/") else path[1:]
    return name if name and "/" not in name else None


def _source(
    channels: list[SSEChannel],
    last_event_id: str | None,
    *,
    merged: bool,
    events: list[str] | None = None,
) -> Any:
    """What the stream reads: one channel's listener, or several merged (composite ids);
    with ``events``, only those event types (on every channel of the stream)."""
    try:
        if merged:
            return MergedListener(channels, last_event_id=last_event_id, events=events)
        return channels[0].listen(last_event_id=last_event_id, events=events)
    except (ChannelClosed, TooManyChannels) as exc:  # shutting down, or the manager is full
        raise HTTPError(503, str(exc), [("retry-after", "5")]) from None


class _Subscription:
    """A subscriber's stream that passed every check: what `SSEApp.__call__` streams, and
    the source and slots it releases after (``close``, once). ``present``: the stream is
    present in its channels while it runs (presence on, not a ``HEAD``)."""

    __slots__ = ("claims", "names", "present", "reservation", "response", "source")

    def __init__(
        self,
        response: EventStreamResponse,
        source: Any,
        reservation: Reservation,
        present: bool,
        names: list[str],
        claims: TokenClaims | None,
    ) -> None:
        self.response = response
        self.source = source
        self.reservation = reservation
        self.present = present
        self.names = names
        self.claims = claims

    def close(self) -> None:
        try:
            self.source.close()
        finally:
            self.reservation.release()


def _check_json_media_type(request: Request) -> None:
    # Required, not just checked when present: without it a page on any origin could
    # publish with the user's cookie through a CORS "simple" request (no preflight).
    content_type = request.header("content-type") or ""
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise HTTPError(415, "send the event as application/json")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _group(name: str, group: Any, cls: Any, **keywords: Any) -> Any:
    """``group`` if given, else one built from the keywords that were (the rest default)."""
    given = {key: value for key, value in keywords.items() if value is not _UNSET}
    if group is None:
        return cls(**given)
    if not isinstance(group, cls):
        raise TypeError(f"{name} must be a {cls.__name__}, not {group!r}")
    if given:
        raise TypeError(f"give {name}={cls.__name__}(...) or its keywords ({', '.join(given)})")
    return group
