"""hypercorn: end open event streams before hypercorn waits for them, on asyncio or trio.

Like uvicorn, hypercorn stops accepting, then waits up to ``graceful_timeout`` for open
responses before it cancels them, and an event stream never finishes by itself. A
``shutdown_trigger`` is hypercorn's own hook for deciding when to stop: this one calls
`sse_toolkit.shutdown` first, so every stream ends with a last ``retry:`` hint and a clean
end of body, then returns and hypercorn stops as usual::

    from hypercorn.trio import serve             # or hypercorn.asyncio
    from sse_toolkit.contrib.hypercorn import shutdown_trigger

    await serve(app, config, shutdown_trigger=shutdown_trigger())

`serve` does all of it in this process, with the signals handled (`sse_toolkit.run` uses it).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio

from .._concurrency import EventLoop, current_loop
from ..lifecycle import DEFAULT_SHUTDOWN, ShutdownOptions, open_streams
from ..manager import ChannelManager

__all__ = ["serve", "shutdown_trigger"]

_EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def shutdown_trigger(
    wait: Callable[[], Awaitable[object]] | None = None,
    *,
    shutdown: ShutdownOptions = DEFAULT_SHUTDOWN,
    managers: Iterable[ChannelManager] = (),
) -> Callable[[], Awaitable[None]]:
    """A trigger that returns once ``wait()`` does (by default: SIGINT or SIGTERM, which
    needs the main thread) and every event stream of the process has ended
    (`sse_toolkit.shutdown`); ``managers`` are closed after."""
    targets = list(managers)

    async def trigger() -> None:
        open_streams.reopen()  # this process serves (again): streams may run
        await (wait or _StopSignals().wait)()
        await shutdown.shutdown()
        for manager in targets:
            await manager.close()

    return trigger


class _StopSignals:
    """SIGINT and SIGTERM, caught from when this is made (in the main thread) for good: a
    signal before the loop waits is kept, and one during the shutdown cannot kill the
    process by its default action."""

    def __init__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("waiting for signals needs the main thread: pass wait=")
        self.requested = False
        self._stop: anyio.Event | None = None
        self._loop: EventLoop | None = None
        for signum in _EXIT_SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True
        stop, loop = self._stop, self._loop
        if stop is not None and loop is not None:
            loop.call_soon_from_signal(stop.set)

    async def wait(self) -> None:
        self._stop = anyio.Event()
        self._loop = current_loop()
        if not self.requested:
            await self._stop.wait()


def serve(
    app: Any,
    config: Any,
    *,
    loop: str = "auto",
    shutdown: ShutdownOptions = DEFAULT_SHUTDOWN,
) -> None:
    """Serve ``app`` with hypercorn ``config`` on ``loop`` (asyncio, uvloop or trio) in this
    process until SIGINT or SIGTERM; then end the streams and stop cleanly."""
    trigger = shutdown_trigger(_StopSignals().wait, shutdown=shutdown)
    if loop == "trio":
        import trio
        from hypercorn.trio import serve as trio_serve

        trio.run(lambda: trio_serve(app, config, shutdown_trigger=trigger))
        return
    import asyncio

    from hypercorn.asyncio import serve as asyncio_serve

    async def main() -> None:
        await asyncio_serve(app, config, shutdown_trigger=trigger)

    if loop == "uvloop" or (loop == "auto" and _has_uvloop()):
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True
