"""`SSEApp`'s option groups: `Auth`, `Limits` and `CORS`, each validated once, when built.

A mistake in any of them (an empty secret, a misspelt action, a zero limit, an origin with a
path) raises `ValueError` or `TypeError` naming the parameter, at start-up, instead of
failing one request at a time or, worse, turning a check off.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from ._concurrency import call_maybe_async
from ._http import HTTPError, Request
from ._types import Scope
from ._validate import check_positive_int, check_seconds
from .tokens import ACTIONS, InvalidToken, TokenClaims, TokenVerifier

__all__ = [
    "CHANNEL_NAME_PATTERN",
    "CHANNEL_NAME_RULE",
    "CORS",
    "CORS_ALLOWED_HEADERS",
    "MAX_CHANNEL_NAME_LENGTH",
    "Auth",
    "Authorize",
    "Limits",
    "channel_name_error",
    "check_positive_int",
    "check_seconds",
]

Authorize = Callable[[Scope, str, str], "bool | Awaitable[bool]"]

CHANNEL_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9.:~-][A-Za-z0-9._:~-]*")
CHANNEL_NAME_RULE: Final = "channel names use A-Z a-z 0-9 . _ : ~ - and do not start with '_'"
MAX_CHANNEL_NAME_LENGTH: Final = 128  # the default of Limits.max_channel_name_length
MAX_EVENT_TYPES: Final = 32  # ?event= names one stream may ask for (Limits.event_types)
MAX_EVENT_TYPE_LENGTH: Final = 256  # characters of each
CORS_ALLOWED_HEADERS: Final = ("last-event-id", "authorization", "content-type", "cache-control")
_COOKIE_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_ORIGIN: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s]+")


# -- validation helpers (shared by the groups and SSEApp) -----------------------------------


def channel_name_error(name: str, max_length: int = MAX_CHANNEL_NAME_LENGTH) -> HTTPError | None:
    """Why ``name`` cannot name a channel (414: too long, 400: a character), or None.

    The one rule for every channel name: the app's routes and the ``token`` command.
    """
    if len(name) > max_length:
        return HTTPError(414, f"channel names are at most {max_length} long")
    if not CHANNEL_NAME_PATTERN.fullmatch(name):
        return HTTPError(400, CHANNEL_NAME_RULE)
    return None


def _check_callable(name: str, value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, not {value!r}")


# -- Auth ----------------------------------------------------------------------------------


class Auth:
    """Who may do what.

    ``authorize(scope, channel, action)`` (sync or async; action ``"subscribe"``,
    ``"publish"`` or ``"stats"``) returns whether to allow (403 if not). With ``secret``,
    requests for the actions in ``required_for`` must carry a token from
    `tokens.create_token`: in ``Authorization: Bearer``, the ``token_cookie`` cookie, or
    ``?token=``; 401 without a valid one, 403 if it does not cover the channel and action.
    ``required_for`` is every action by default, subscribing included (secure by default);
    name some of them to narrow it, e.g. ``("publish", "stats")`` for open subscriptions.
    The hub means the same: ``--secret`` guards every action unless
    ``--token-required-for ACTION`` (repeatable) names the ones that need a token.
    """

    __slots__ = ("authorize", "required_for", "secret", "token_cookie", "verifier")

    def __init__(
        self,
        secret: str | bytes | TokenVerifier | None = None,
        *,
        authorize: Authorize | None = None,
        token_cookie: str = "sse_token",
        required_for: Iterable[str] | str | None = None,
    ) -> None:
        if secret is None or isinstance(secret, TokenVerifier):
            verifier = secret
        elif isinstance(secret, (str, bytes)):
            # (an empty one, say an unset environment variable, is refused there)
            verifier = TokenVerifier(secret=secret)
        else:
            raise TypeError(
                f"secret must be a str, bytes, TokenVerifier or None, not {type(secret).__name__}"
            )
        _check_callable("authorize", authorize)
        if not isinstance(token_cookie, str) or not _COOKIE_NAME.fullmatch(token_cookie):
            raise ValueError(f"token_cookie must be a cookie name, not {token_cookie!r}")
        actions = ACTIONS if required_for is None else _actions(required_for)
        if secret is None and required_for is not None:
            raise ValueError(
                "token_required_for (Auth.required_for) is set but secret is None: "
                "tokens would never be checked"
            )
        self.secret = secret
        self.verifier = verifier
        self.authorize = authorize
        self.token_cookie = token_cookie
        self.required_for: frozenset[str] = actions

    def __repr__(self) -> str:
        secret = None if self.secret is None else "***"
        return (
            f"Auth(secret={secret}, authorize={self.authorize!r}, "
            f"token_cookie={self.token_cookie!r}, required_for={sorted(self.required_for)})"
        )

    def needs_token(self, action: str) -> bool:
        return self.secret is not None and action in self.required_for

    async def check(
        self, request: Request, names: Iterable[str], action: str
    ) -> TokenClaims | None:
        """Raise `HTTPError` 401/403 unless ``action`` is allowed on every name.

        Returns the token's claims when one was required (a stream ends when it expires).
        """
        names = list(names)
        claims = None
        if self.verifier is not None and action in self.required_for:
            token = request.bearer_token(self.token_cookie)
            if token is None:
                raise HTTPError(401, "a token is required", [("www-authenticate", "Bearer")])
            try:
                claims = await self.verifier.verify_async(token)
            except InvalidToken as exc:
                challenge = f'Bearer error="invalid_token", error_description="{exc.description}"'
                raise HTTPError(401, exc.description, [("www-authenticate", challenge)]) from None
            for name in names:
                if not claims.allows(name, action):
                    raise HTTPError(403, f"the token does not allow {action} on {name!r}")
        if self.authorize is not None:
            for name in names:
                if not await call_maybe_async(self.authorize, request.scope, name, action):
                    raise HTTPError(403, f"not allowed to {action} on {name!r}")
        return claims

    def seconds_left(self, claims: TokenClaims | None) -> float | None:
        """How long a stream authorised by ``claims`` may last (None: no token, no bound):
        until its ``exp``, plus the verifier's leeway (a token accepted thanks to the
        leeway would otherwise get a stream that ends at once, and reconnect in a loop)."""
        if claims is None:
            return None
        leeway = self.verifier.leeway if self.verifier is not None else 0.0
        return max(0.0, claims.expires + leeway - time.time())


def _items(name: str, value: object) -> list[object]:
    """A str is one item; any other iterable its items; anything else a TypeError."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (bytes, bytearray, dict)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a str or an iterable of str, not {value!r}")
    return list(value)


def _actions(value: Iterable[str] | str) -> frozenset[str]:
    items = _items("token_required_for (Auth.required_for)", value)
    unknown = [a for a in items if a not in ACTIONS]
    if unknown or not items:
        raise ValueError(
            "token_required_for (Auth.required_for) must name some of "
            f"{sorted(ACTIONS)}, not {items!r}"
        )
    return frozenset(items)  # type: ignore[arg-type]


# -- Limits --------------------------------------------------------------------------------


class Limits:
    """Bounds on what one request, one client or one channel may take.

    - ``max_body_size``: bytes of a publish body (413 past it).
    - ``max_channel_name_length``: characters (414 past it).
    - ``max_channels_per_stream``: channels one stream may name (400 past it).
    - ``max_subscribers_per_channel``: streams this app serves per channel (429; None: no bound).
    - ``max_subscribers_per_client``: streams per client (429; None: no bound). Clients are
      keyed by ``client_key(scope)``, the peer address by default: behind a reverse proxy,
      key on the forwarded address or raise the bounds.
    - ``max_channels_per_client``: distinct channels a client's open streams name together
      (429; None: no bound; at least ``max_channels_per_stream``). A channel named by several
      of its streams counts once, so many tabs on one channel cost one. Subscribing creates
      channels: without it one client could take every channel the manager lets subscribers
      create, and others could no longer subscribe to a channel that does not exist yet.
    - ``max_last_event_id_length``: bytes of ``Last-Event-ID`` (header, or characters of
      the query parameter) per channel of the stream (400 past it). A published ``id`` may
      be a quarter of it in UTF-8 (1024 bytes by default, 400 past it), so that a merged
      stream's composite id, which percent-encodes each channel's name and id, always fits.
    """

    __slots__ = (
        "client_key",
        "max_body_size",
        "max_channel_name_length",
        "max_channels_per_client",
        "max_channels_per_stream",
        "max_last_event_id_length",
        "max_subscribers_per_channel",
        "max_subscribers_per_client",
    )

    def __init__(
        self,
        *,
        max_body_size: int = 64 * 1024,
        max_channel_name_length: int = MAX_CHANNEL_NAME_LENGTH,
        max_channels_per_stream: int = 16,
        max_subscribers_per_channel: int | None = None,
        max_subscribers_per_client: int | None = 1000,
        max_channels_per_client: int | None = 256,
        max_last_event_id_length: int = 4096,
        client_key: Callable[[Scope], str] | None = None,
    ) -> None:
        positive = check_positive_int
        self.max_body_size: int = positive("max_body_size", max_body_size)  # type: ignore[assignment]
        self.max_channel_name_length: int = positive(  # type: ignore[assignment]
            "max_channel_name_length", max_channel_name_length
        )
        self.max_channels_per_stream: int = positive(  # type: ignore[assignment]
            "max_channels_per_stream", max_channels_per_stream
        )
        self.max_subscribers_per_channel = positive(
            "max_subscribers_per_channel", max_subscribers_per_channel, optional=True
        )
        self.max_subscribers_per_client = positive(
            "max_subscribers_per_client", max_subscribers_per_client, optional=True
        )
        self.max_channels_per_client = positive(
            "max_channels_per_client", max_channels_per_client, optional=True
        )
        if (
            self.max_channels_per_client is not None
            and self.max_channels_per_client < self.max_channels_per_stream
        ):
            raise ValueError(
                f"max_channels_per_client ({self.max_channels_per_client}) must be at least "
                f"max_channels_per_stream ({self.max_channels_per_stream}) or None: "
                "a stream naming that many channels could never be served"
            )
        self.max_last_event_id_length: int = positive(  # type: ignore[assignment]
            "max_last_event_id_length", max_last_event_id_length
        )
        _check_callable("client_key", client_key)
        self.client_key: Callable[[Scope], str] = client_key or peer_address

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"Limits({fields})"

    def check_name(self, name: str) -> None:
        error = channel_name_error(name, self.max_channel_name_length)
        if error is not None:
            raise error

    def check_stream_names(self, names: list[str]) -> list[str]:
        """The distinct names of a stream, in order, each checked."""
        if len(names) > self.max_channels_per_stream:
            raise HTTPError(400, f"at most {self.max_channels_per_stream} channels per stream")
        names = list(dict.fromkeys(names))
        for name in names:
            self.check_name(name)
        return names

    @property
    def max_event_id_length(self) -> int:
        """UTF-8 bytes of a published ``id``: a quarter of ``max_last_event_id_length``."""
        return max(1, self.max_last_event_id_length // 4)

    def last_event_id(self, request: Request, channels: int = 1) -> str | None:
        """The ``Last-Event-ID`` header (UTF-8; bytes that are not become U+FFFD, in effect an
        unknown id: the stream starts with ``sse.reset``), else the ``last_event_id`` query
        parameter; bounded per channel of the stream (a merged stream's id holds every
        channel's position)."""
        limit = self.max_last_event_id_length * max(1, channels)
        header = request.header("last-event-id")  # latin-1: one character per byte
        value = request.first("last_event_id") if header is None else header
        if value is not None and len(value) > limit:
            raise HTTPError(400, f"last-event-id is at most {limit} bytes for this stream")
        # The header is the UTF-8 of the id (the query parameter is decoded already).
        return value if header is None else request.text_header("last-event-id")

    def event_types(self, request: Request) -> list[str] | None:
        """The ``?event=`` filter of a subscription (repeatable; None without one): at most
        `MAX_EVENT_TYPES` names of at most `MAX_EVENT_TYPE_LENGTH` characters, non-empty and
        without CR, LF or NUL (the frame rules for ``event``); 400 otherwise."""
        names = request.query.get("event")
        if names is None:
            return None
        if len(names) > MAX_EVENT_TYPES:
            raise HTTPError(400, f"at most {MAX_EVENT_TYPES} event types (?event=) per stream")
        for name in names:
            if not name:
                raise HTTPError(
                    400, 'event= needs an event type (events without one are "message")'
                )
            if len(name) > MAX_EVENT_TYPE_LENGTH:
                raise HTTPError(400, f"event types are at most {MAX_EVENT_TYPE_LENGTH} characters")
            if "\r" in name or "\n" in name or "\0" in name:
                raise HTTPError(400, "event types must not contain CR, LF or NUL")
        return list(dict.fromkeys(names))

    def check_event_id(self, event_id: object) -> None:
        """A published ``id`` must be one a subscriber can send back as ``Last-Event-ID``."""
        limit = self.max_event_id_length
        # Checked in UTF-8 bytes, what percent-encoding a composite id expands.
        if isinstance(event_id, str) and len(event_id.encode("utf-8", "replace")) > limit:
            raise HTTPError(400, f"id is at most {limit} bytes in UTF-8")


def peer_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


# -- CORS ----------------------------------------------------------------------------------


class CORS:
    """Which other origins' pages may read streams (and publish, with their tokens).

    ``origins``: exact origins (``"https://app.example"``: scheme, host, port; no path) or
    ``"*"``. ``allow_credentials`` lets those pages send cookies; it needs explicit origins.
    """

    __slots__ = ("allow_credentials", "origins")

    def __init__(
        self, origins: Iterable[str] | str = (), *, allow_credentials: bool = False
    ) -> None:
        items = _items("cors_origins (CORS.origins)", origins)
        for origin in items:
            if not isinstance(origin, str) or not (origin == "*" or _ORIGIN.fullmatch(origin)):
                raise ValueError(
                    "cors_origins (CORS.origins) holds 'scheme://host[:port]' origins "
                    f"(no path, no trailing '/') or '*', not {origin!r}"
                )
        if type(allow_credentials) is not bool:
            raise TypeError(f"cors_allow_credentials must be a bool, not {allow_credentials!r}")
        if allow_credentials and "*" in items:
            raise ValueError("cors_allow_credentials needs explicit origins, not '*'")
        if allow_credentials and not items:
            raise ValueError("cors_allow_credentials has no effect without cors_origins")
        self.origins: frozenset[str] = frozenset(items)  # type: ignore[arg-type]
        self.allow_credentials = allow_credentials

    def __repr__(self) -> str:
        return f"CORS({sorted(self.origins)!r}, allow_credentials={self.allow_credentials})"

    def allowed_origin(self, request: Request) -> str | None:
        origin = request.header("origin")
        if origin is None or not self.origins:
            return None
        if origin in self.origins:
            return origin
        if "*" in self.origins:
            return "*"
        return None

    def headers(self, request: Request) -> list[tuple[str, str]]:
        allowed = self.allowed_origin(request)
        if allowed is None:
            return []
        headers = [("access-control-allow-origin", allowed)]
        if allowed != "*":
            headers.append(("vary", "origin"))
        if self.allow_credentials:
            headers.append(("access-control-allow-credentials", "true"))
        return headers

    def preflight_headers(self, request: Request, methods: str) -> list[tuple[str, str]]:
        """The answer to an ``OPTIONS`` preflight; `HTTPError` 403 if it is refused."""
        if self.allowed_origin(request) is None:
            raise HTTPError(403, "origin not allowed")
        requested = request.header("access-control-request-headers") or ""
        asked = [h.strip().lower() for h in requested.split(",") if h.strip()]
        refused = [h for h in asked if h not in CORS_ALLOWED_HEADERS]
        if refused:
            raise HTTPError(403, f"header(s) not allowed: {', '.join(refused)}")
        return [
            *self.headers(request),
            ("access-control-allow-methods", methods),
            ("access-control-allow-headers", ", ".join(CORS_ALLOWED_HEADERS)),
            ("access-control-max-age", "600"),
        ]
