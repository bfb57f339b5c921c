"""The small primitives behind the response's producer/sender hand-off."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from sse_toolkit._concurrency import Wakeup

pytestmark = pytest.mark.anyio


async def test_wake_releases_the_waiter_and_is_a_no_op_when_idle() -> None:
    wakeup = Wakeup()
    wakeup.wake()  # nobody waits: nothing is remembered
    woke = anyio.Event()

    async def waiter() -> None:
        await wakeup.wait()
        woke.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        while not wakeup.waiting:
            await anyio.lowlevel.checkpoint()
        wakeup.wake()
        with anyio.fail_after(5):
            await woke.wait()
    assert not wakeup.waiting


async def test_a_cancelled_wait_leaves_it_reusable() -> None:
    wakeup = Wakeup()
    with anyio.move_on_after(0.01) as scope:
        await wakeup.wait()
    assert scope.cancelled_caught and not wakeup.waiting
    wakeup.wake()  # must not touch the cancelled task (trio would assert)
    async with anyio.create_task_group() as tg:
        tg.start_soon(wakeup.wait)
        while not wakeup.waiting:
            await anyio.lowlevel.checkpoint()
        wakeup.wake()
    assert not wakeup.waiting
