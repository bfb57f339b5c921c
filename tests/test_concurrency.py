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


@pytest.mark.anyio
async def test_helper_tasks_are_cancelled_and_waited_for_when_their_owner_leaves() -> None:
    """A stream's helpers never outlive it: leaving the block cancels each one and waits
    until it has finished (its cleanup ran), on asyncio (bare tasks) and trio (a nursery)."""
    from sse_toolkit._concurrency import HelperTasks

    started = anyio.Event()
    cleaned: list[str] = []

    async def helper(name: str) -> None:
        try:
            started.set()
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.01)  # a cleanup that takes a little while
            cleaned.append(name)

    with anyio.fail_after(5):
        async with HelperTasks() as helpers:
            helpers.start_soon(helper, "watcher")
            await started.wait()
    assert cleaned == ["watcher"]


@pytest.mark.anyio
async def test_a_helper_cancels_its_owners_work_through_the_scope() -> None:
    from sse_toolkit._concurrency import HelperTasks

    async def drop(helpers: HelperTasks) -> None:
        helpers.cancel_scope.cancel()  # what a stream's watcher does when the client leaves

    reached_end = False
    with anyio.fail_after(5):
        async with HelperTasks() as helpers:
            helpers.start_soon(drop, helpers)
            await anyio.sleep_forever()
            reached_end = True  # pragma: no cover
    assert helpers.cancel_scope.cancelled_caught and not reached_end
