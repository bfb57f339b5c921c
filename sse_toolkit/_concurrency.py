"""Small anyio helpers shared by the channel and the response."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable
from typing import Any

import anyio

CLOSE_TIMEOUT = 5.0
"""How long closing a user's iterator may take on the way out (it runs shielded)."""


def call_soon(callback: Callable[[], object]) -> None:
    """Run ``callback`` on the running event loop's next turn (now, if there is none)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        loop.call_soon(callback)
        return
    try:
        import trio

        token = trio.lowlevel.current_trio_token()
    except (ImportError, RuntimeError):
        callback()  # no loop runs here (a finaliser, say): nobody can be waiting on it
        return
    token.run_sync_soon(callback)


async def call_maybe_async(func: Callable[..., Any], *args: Any) -> Any:
    """Call a user hook that may be sync or async."""
    result = func(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


async def aclose_quietly(iterator: object) -> None:
    """Close an iterator on the way out: shielded, bounded, whatever it is."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT):
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
            return
        close = getattr(iterator, "close", None)
        if close is not None:
            # A sync generator still running in an abandoned worker thread cannot be closed
            # from here (ValueError); it ends when its thread returns.
            with contextlib.suppress(ValueError):
                close()


class Wakeup:
    """One task parks in `wait()`, any other task wakes it with `wake()` (a no-op if idle).

    What an `anyio.Event` per wait does, for one waiter and without the Event: on asyncio a
    bare future (the Event wraps an ``asyncio.Event``, whose wait makes a future and a
    waiter deque on top), on trio a park and reschedule. Cancellation works as for any
    await. Create it inside the running loop.
    """

    __slots__ = ("_loop", "_parked", "waiting")

    def __init__(self) -> None:
        self.waiting = False
        self._parked: Any = None
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # trio
            self._loop = None

    async def wait(self) -> None:
        self.waiting = True
        try:
            if self._loop is not None:
                self._parked = future = self._loop.create_future()
                await future
            else:
                import trio

                self._parked = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._abort)
        finally:
            self.waiting = False
            self._parked = None

    def _abort(self, _: Any) -> Any:
        import trio

        self._parked = None  # cancelled: a wake() from now on must not reschedule the task
        return trio.lowlevel.Abort.SUCCEEDED

    def wake(self) -> None:
        parked, self._parked = self._parked, None
        if parked is None:
            return
        if self._loop is not None:
            if not parked.done():
                parked.set_result(None)
        else:
            import trio

            trio.lowlevel.reschedule(parked)
