"""The HTTP plumbing `SSEApp` and the hub share: requests read once, JSON errors, refusals.

Everything here treats the request as hostile: any bytes in any header, path or query
string decode to *something* and never raise.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import parse_qs

from ._types import Receive, Scope, Send

__all__ = [
    "ClientGone",
    "HTTPError",
    "Request",
    "refuse_websocket",
    "send_json",
    "send_plain",
]

_COOKIE_SEPARATOR: Final = "; "


class HTTPError(Exception):
    """An error answered as JSON ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


class ClientGone(Exception):
    """The client disconnected before its request was complete: nobody to answer."""


class Request:
    """The parts of an HTTP scope the app reads, decoded once (latin-1: any byte decodes)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.method: str = str(scope.get("method", "GET"))
        path: str = scope.get("path", "")
        root: str = scope.get("root_path", "")
        # ASGI servers and current Starlette keep the mount prefix in `path`; some hosts
        # strip it (Litestar's mounts, which also leave `root_path` as the server set it).
        # Route on what lies below the mount either way. Only a whole-segment prefix is the
        # mount: with root_path "/app", a stripped path "/apples" is the channel "apples".
        below = path[len(root) :]
        is_below_root = bool(root) and path.startswith(root) and below[:1] in ("", "/")
        self.route_path = below if is_below_root else path
        self._headers: dict[str, str] = {}
        cookies: list[str] = []
        for key, value in scope.get("headers", ()):
            name = bytes(key).decode("latin-1").lower()
            text = bytes(value).decode("latin-1")
            if name == "cookie":
                # HTTP/2 clients may send one cookie header per cookie (RFC 9113 8.2.3).
                cookies.append(text)
            elif name not in self._headers:
                self._headers[name] = text
        if cookies:
            self._headers["cookie"] = _COOKIE_SEPARATOR.join(cookies)
        query = bytes(scope.get("query_string", b"")).decode("latin-1")
        self.query: dict[str, list[str]] = parse_qs(query, keep_blank_values=True)

    def header(self, name: str) -> str | None:
        return self._headers.get(name)

    def text_header(self, name: str) -> str | None:
        """A header whose value is UTF-8 text (``Last-Event-ID``: EventSource sends the
        UTF-8 encoding of the id). Bytes that are not UTF-8 become U+FFFD, never an error."""
        value = self._headers.get(name)
        return None if value is None else value.encode("latin-1").decode("utf-8", "replace")

    def first(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def cookie(self, name: str) -> str | None:
        header = self.header("cookie")
        if header is None:
            return None
        for part in header.split(";"):
            key, _, value = part.strip().partition("=")
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]  # a quoted cookie-value (RFC 6265 4.1.1)
            if key == name and value:
                return value
        return None

    def bearer_token(self, cookie_name: str) -> str | None:
        """The token from ``Authorization: Bearer``, else the cookie, else ``?token=``."""
        authorization = self.header("authorization")
        if authorization is not None:
            scheme, _, credentials = authorization.partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
        return self.cookie(cookie_name) or self.first("token")

    def content_length(self) -> int | None:
        """The declared body size, if it is a plain decimal number (else None: not trusted)."""
        declared = self.header("content-length")
        if declared is None or not (declared.isascii() and declared.isdigit()):
            return None
        # Past 18 digits it is beyond any limit anyway; int() of thousands of digits raises.
        return int(declared) if len(declared) <= 18 else 10**18


async def refuse_websocket(receive: Receive, send: Send) -> None:
    """Reject a WebSocket before accepting it: the server answers the upgrade with 403."""
    message = await receive()
    if message.get("type") == "websocket.connect":
        await send({"type": "websocket.close", "code": 1003})


async def send_json(
    send: Send,
    status: int,
    payload: Any,
    headers: Sequence[tuple[str, str]] = (),
    *,
    head: bool = False,
) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = [("content-type", "application/json"), *headers]
    await send_plain(send, status, body, headers, head=head)


async def send_plain(
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
