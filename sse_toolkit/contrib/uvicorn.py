"""uvicorn: a ``Server`` that ends open event streams when asked to shut down.

uvicorn shuts down in this order: stop accepting, wait for every in-flight response to
finish (up to ``timeout_graceful_shutdown``, then cancel them), and only then send the
app the lifespan shutdown. An event stream never finishes by itself, so the lifespan
shutdown comes too late to end streams cleanly: clients see them cut mid-body once the
timeout cancels them. This ``Server`` closes the given channel managers first, on
SIGINT/SIGTERM, so every stream ends with a clean end of body and uvicorn's own shutdown
proceeds at once. It is a subclass used where you choose to; nothing is patched::

    from sse_toolkit.contrib.uvicorn import run
    run(app, host="127.0.0.1", port=8000)          # closes sse_manager on shutdown
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import uvicorn

from ..manager import ChannelManager, sse_manager

__all__ = ["Server", "run"]

log = logging.getLogger("sse_toolkit")


class Server(uvicorn.Server):
    """``uvicorn.Server`` that closes ``managers`` (ending their streams) on exit signals."""

    def __init__(
        self, config: uvicorn.Config, *, managers: Iterable[ChannelManager] = (sse_manager,)
    ) -> None:
        super().__init__(config)
        self.managers = list(managers)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Future[Any] | None = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets=sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        # Called from a signal handler (or any thread): hop onto the loop to close.
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._close_streams)
        super().handle_exit(sig, frame)

    def _close_streams(self) -> None:
        if self._closing is None:
            log.info("shutting down: ending open event streams")
            self._closing = asyncio.gather(*(manager.close() for manager in self.managers))


def run(app: Any, *, managers: Iterable[ChannelManager] = (sse_manager,), **options: Any) -> None:
    """``uvicorn.run`` with this ``Server``: ``options`` are ``uvicorn.Config``'s."""
    options.setdefault("timeout_graceful_shutdown", 5)
    Server(uvicorn.Config(app, **options), managers=managers).run()
