"""Starlette and FastAPI: an `EventStreamResponse` that is a ``starlette.responses.Response``.

Starlette routes accept any ASGI callable as an endpoint's return value, so the core
`sse_toolkit.EventStreamResponse` works there as it is. FastAPI does not: an endpoint must
return a ``Response`` instance or its value is serialised as JSON. Use this one there::

    from sse_toolkit.contrib.starlette import EventStreamResponse

    @app.get("/events")
    async def events():
        return EventStreamResponse(channel.listen())
"""

from __future__ import annotations

from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import Response

from .._types import Receive, Scope, Send
from ..response import Content
from ..response import EventStreamResponse as _CoreResponse

__all__ = ["EventStreamResponse"]


class EventStreamResponse(Response):
    """``sse_toolkit.EventStreamResponse`` as a Starlette ``Response`` (same options)."""

    media_type = "text/event-stream"

    def __init__(
        self,
        content: Content,
        *,
        status_code: int = 200,
        headers: Any = None,
        background: BackgroundTask | None = None,
        **options: Any,
    ) -> None:
        # Response.__init__ would render `content` as a body: the stream is not one.
        self._stream = _CoreResponse(content, status_code=status_code, headers=headers, **options)
        self.status_code = status_code
        self.background = background
        self.body = b""
        self.raw_headers = list(self._stream.raw_headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Headers added after construction (FastAPI merges cookies set by dependencies
        # through `response.headers`) are in raw_headers by now.
        self._stream.raw_headers = self.raw_headers
        await self._stream(scope, receive, send)
        if self.background is not None:
            await self.background()
