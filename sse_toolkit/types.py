"""The ASGI type aliases, for type-annotating your own ASGI apps (as ``starlette.types``).

::

    from sse_toolkit.types import Receive, Scope, Send

    async def app(scope: Scope, receive: Receive, send: Send) -> None: ...
"""

from ._types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send"]
