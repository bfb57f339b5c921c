"""hypercorn: a ``shutdown_trigger`` that ends open event streams before hypercorn waits.

Like uvicorn, hypercorn stops accepting, then waits up to ``graceful_timeout`` for open
responses before it cancels them, and an event stream never finishes by itself. This
trigger closes the channel managers when shutdown is asked for, so every stream ends with
a clean end of body first. Works with hypercorn's asyncio and trio workers::

    from hypercorn.trio import serve             # or hypercorn.asyncio
    from sse_toolkit.contrib.hypercorn import shutdown_trigger

    await serve(app, config, shutdown_trigger=shutdown_trigger())
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable, Iterable

import anyio

from ..manager import ChannelManager, sse_manager

__all__ = ["shutdown_trigger"]


def shutdown_trigger(
    wait: Callable[[], Awaitable[object]] | None = None,
    *,
    managers: Iterable[ChannelManager] = (sse_manager,),
) -> Callable[[], Awaitable[None]]:
    """A trigger that returns once ``wait()`` does (by default: SIGINT or SIGTERM, which
    needs the main thread), after closing ``managers`` so their streams end cleanly."""
    targets = list(managers)

    async def trigger() -> None:
        if wait is None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break
        else:
            await wait()
        for manager in targets:
            await manager.close()

    return trigger
