"""Small anyio helpers shared by the channel and the response."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from typing import Any

import anyio

CLOSE_TIMEOUT = 5.0
"""How long closing a user's iterator may take on the way out (it runs shielded)."""


def event_factory() -> Callable[[], anyio.Event]:
    """A constructor for the running backend's `anyio.Event`.

    `anyio.Event()` looks the backend up on every call (~4 µs); the class it returns can be
    instantiated directly (~0.6 µs). Hot paths create one event per wait, so resolve once.
    """
    return type(anyio.Event())


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
