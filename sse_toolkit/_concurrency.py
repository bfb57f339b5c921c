"""Small anyio helpers shared by the channel and the response."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import anyio

log = logging.getLogger("sse_toolkit")

CLOSE_TIMEOUT = 5.0
"""How long closing a user's iterator may take on the way out (it runs shielded)."""


def running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The asyncio loop this code runs on; None when none runs, or when trio does: trio
    may run as a guest on an asyncio loop, which asyncio then reports as running."""
    loop = asyncio._get_running_loop()
    if loop is not None and "trio" in sys.modules:
        import sniffio  # (trio's own dependency)

        try:
            if sniffio.current_async_library() != "asyncio":
                return None
        except sniffio.AsyncLibraryNotFoundError:
            return None
    return loop


def call_soon(callback: Callable[[], object]) -> None:
    """Run ``callback`` on the running event loop's next turn (now, if there is none)."""
    loop = current_loop()
    if loop is None:
        callback()  # no loop runs here (a finaliser, say): nobody can be waiting on it
    else:
        loop.call_soon(callback)


class EventLoop:
    """The event loop (asyncio or trio) a waiter parks on, to wake it from anywhere.

    `call_soon` runs a callback on that loop's next turn: from the loop's own thread
    cheaply, from any other thread (or another event loop's) thread-safely, so the loop
    wakes at once instead of at its next timer. Once that loop has ended it does nothing:
    nobody can be waiting on it any more.
    """

    __slots__ = ("_asyncio", "_thread", "_trio")

    def __init__(self, asyncio_loop: asyncio.AbstractEventLoop | None, trio_token: Any) -> None:
        self._asyncio = asyncio_loop
        self._trio = trio_token
        self._thread = threading.get_ident()

    def call_soon(self, callback: Callable[[], object]) -> None:
        loop = self._asyncio
        if loop is not None:
            if asyncio._get_running_loop() is loop:
                loop.call_soon(callback)
                return
            with contextlib.suppress(RuntimeError):  # closed loop: nobody waits there
                loop.call_soon_threadsafe(callback)
            return
        import trio

        with contextlib.suppress(trio.RunFinishedError):
            self._trio.run_sync_soon(callback)  # thread-safe, and fine from its own thread

    def call_soon_from_signal(self, callback: Callable[[], object]) -> None:
        """`call_soon` from a signal handler: a handler runs in the loop's own thread, but
        between its steps, where only the thread-safe path wakes a loop that sleeps."""
        loop = self._asyncio
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # closed loop: nobody waits there
                loop.call_soon_threadsafe(callback)
            return
        import trio

        with contextlib.suppress(trio.RunFinishedError):
            self._trio.run_sync_soon(callback)

    def is_current(self) -> bool:
        """Whether this is the event loop running in the calling thread (cheap: a loop
        runs in one thread; a trio run in that thread is taken to be this one)."""
        if self._asyncio is not None:
            return asyncio._get_running_loop() is self._asyncio
        return threading.get_ident() == self._thread and asyncio._get_running_loop() is None

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, EventLoop)
            and other._asyncio is self._asyncio
            and other._trio is self._trio
        )

    def __hash__(self) -> int:
        return hash((id(self._asyncio), id(self._trio)))


def current_loop() -> EventLoop | None:
    """The running event loop (asyncio or trio), or None outside any."""
    loop = asyncio._get_running_loop()
    if loop is not None:
        return EventLoop(loop, None)
    try:
        import trio

        token = trio.lowlevel.current_trio_token()
    except (ImportError, RuntimeError):
        return None
    return EventLoop(None, token)


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
        self._loop = running_asyncio_loop()  # (None: trio)

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


# -- a stream's one helper task on asyncio, without a task group -----------------------------
#
# An anyio task group is held for as long as its stream is open, and on asyncio it costs
# about 2.8 KB per stream more than a bare task (its own scope per task, a wrapper
# coroutine, task state): a server holding 20,000 idle streams pays that 20,000 times. A
# stream whose only helper waits on ``receive()`` needs none of it: `start_helper` and
# `stop_helper` keep the helper owned and scoped by hand. The owner starts it, and in a
# ``finally`` stops it: the helper is cancelled (again and again, for a helper that
# swallows a cancellation) and waited for, shielded and bounded, so it never outlives its
# owner by more than `CLOSE_TIMEOUT`. A helper that fails must tell its owner at once,
# as a task group would by cancelling it.

HELPER_RECANCEL_INTERVAL = 0.05
"""How often `stop_helper` cancels a helper again that has not ended yet."""


def start_helper(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Run ``coro`` as the calling task's helper (asyncio only); see `stop_helper`. The
    helper must tell its owner itself when it fails (no callback per task is held)."""
    loop = asyncio.get_running_loop()
    # (not loop.create_task: an eager task factory would run the helper inside this call,
    # before its owner is ready for it)
    return asyncio.Task(coro, loop=loop)


async def stop_helper(task: asyncio.Task[None]) -> None:
    """Cancel a `start_helper` task and wait until it ends (shielded from the owner's own
    cancel scopes; at most `CLOSE_TIMEOUT`, past which it is left, logged). A helper that
    died of a `BaseException` other than an `Exception` (``KeyboardInterrupt``...) has its
    exception raised here, in its owner."""
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + CLOSE_TIMEOUT
    with anyio.CancelScope(shield=True):
        while not task.done():
            task.cancel()
            left = give_up_at - loop.time()
            if left <= 0:
                log.error("a stream's helper task ignores cancellation; left running: %r", task)
                return
            try:
                await asyncio.wait((task,), timeout=min(HELPER_RECANCEL_INTERVAL, left))
            except asyncio.CancelledError:
                # From outside (the server's): it goes on at once, and the helper is
                # cancelled again by the loop's timer until it ends, as above.
                _keep_cancelling(loop, task, give_up_at)
                raise
    if not task.cancelled():
        error = task.exception()
        if error is not None and not isinstance(error, Exception):
            raise error  # (KeyboardInterrupt, SystemExit...: the owner's, as in a task group)


def _keep_cancelling(
    loop: asyncio.AbstractEventLoop, task: asyncio.Task[None], give_up_at: float
) -> None:
    if task.done():
        return
    if loop.time() >= give_up_at:
        log.error("a stream's helper task ignores cancellation; left running: %r", task)
        return
    task.cancel()
    loop.call_later(HELPER_RECANCEL_INTERVAL, _keep_cancelling, loop, task, give_up_at)
