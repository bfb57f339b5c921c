"""Django: serve an `SSEApp` beside Django's ASGI application, with a lifespan.

Django has no way to mount an ASGI app under a path, and no lifespan: its ``ASGIHandler``
raises on a lifespan scope, so the channel manager would never be closed on shutdown.
`SSEDispatcher` is the ASGI app you give the server instead: requests under ``prefix``
go to the `SSEApp`, everything else to Django, and it answers the lifespan itself (the
`SSEApp`'s: startup completes at once; shutdown closes the manager, so open streams end
with a clean end of body, then completes). Django is not imported here: any ASGI app
serves as ``app`` (a Channels ``ProtocolTypeRouter`` too). In ``asgi.py``::

    import os

    from django.core.asgi import get_asgi_application

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    django_app = get_asgi_application()  # first: it sets Django up

    from sse_toolkit import SSEApp, sse_manager
    from sse_toolkit.contrib.django import SSEDispatcher

    application = SSEDispatcher(django_app, SSEApp(sse_manager), prefix="/sse")

Serve ``mysite.asgi:application`` as any ASGI app; ``python -m sse_toolkit run
mysite.asgi:application`` also ends open streams cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

from typing import Final

from .._types import ASGIApp, Receive, Scope, Send
from ..app import SSEApp

__all__ = ["SSEDispatcher"]

_ROUTED_SCOPES: Final = frozenset({"http", "websocket"})


class SSEDispatcher:
    """``sse`` under ``prefix``, ``app`` for the rest; the lifespan goes to ``sse``.

    As ASGI mounts do, a request under the prefix keeps its ``path`` and gets the prefix
    appended to its ``root_path``; the prefix is matched whole segments only (``/sse`` and
    ``/sse/...``, not ``/ssex``), below the server's own ``root_path``. A WebSocket under
    the prefix is refused by ``sse`` (403); elsewhere it goes to ``app``, which may serve
    it (a Channels router) or not (Django alone raises: the server answers 500).
    """

    def __init__(self, app: ASGIApp, sse: SSEApp, *, prefix: str = "/sse") -> None:
        if not isinstance(sse, SSEApp):
            raise TypeError(f"sse must be an SSEApp, not {sse!r}")
        if not callable(app):
            raise TypeError(f"app must be an ASGI application, not {app!r}")
        if not isinstance(prefix, str) or not _is_mount_path(prefix):
            raise ValueError(
                f"prefix must start with '/', name at least one segment and not end with '/'"
                f" (like '/sse'), not {prefix!r}"
            )
        self.app = app
        self.sse = sse
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.sse(scope, receive, send)
        elif kind in _ROUTED_SCOPES and self._is_for_sse(scope):
            root_path = scope.get("root_path", "") + self.prefix
            await self.sse(dict(scope, root_path=root_path), receive, send)
        else:
            await self.app(scope, receive, send)

    def _is_for_sse(self, scope: Scope) -> bool:
        mount = scope.get("root_path", "") + self.prefix
        path: str = scope.get("path", "")
        return path.startswith(mount) and path[len(mount) :][:1] in ("", "/")


def _is_mount_path(prefix: str) -> bool:
    return prefix.startswith("/") and not prefix.endswith("/") and "//" not in prefix
