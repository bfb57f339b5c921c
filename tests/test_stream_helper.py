"""A channel's stream holds one helper task (the disconnect watcher): on asyncio a bare
task (`start_helper` / `stop_helper`), not a task group's, for memory. What a task group
guarantees must still hold: the helper never outlives its stream, however it behaves, and
a cancellation from outside still unwinds every scope."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import anyio
import pytest

from sse_toolkit import EventStreamResponse, SSEChannel
from sse_toolkit._concurrency import CLOSE_TIMEOUT

from .asgi import WAIT, Client

pytestmark = pytest.mark.anyio


class StubbornReceive:
    """An ASGI ``receive`` that never returns, and swallows the first ``swallow``
    cancellations (a buggy server or middleware)."""

    def __init__(self, swallow: int) -> None:
        self.swallow = swallow
        self.swallowed = 0
        self.first_swallowed = anyio.Event()
        self.returned = False

    async def __call__(self) -> dict[str, Any]:
        while True:
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                if self.swallowed >= self.swallow:
                    raise
                self.swallowed += 1
                self.first_swallowed.set()


def listener_stream() -> tuple[SSEChannel, Client, EventStreamResponse]:
    """A channel, a client, and a response streaming the channel to it (no heartbeat)."""
    channel = SSEChannel("c")
    return channel, Client(), EventStreamResponse(channel.listen(), heartbeat_interval=None)


def _on_trio() -> bool:
    return "trio" in sys.modules and asyncio._get_running_loop() is None


async def test_a_receive_that_swallows_cancellations_does_not_hang_the_stream() -> None:
    channel, client, response = listener_stream()
    receive = StubbornReceive(swallow=3)
    async with anyio.create_task_group() as tg:
        tg.start_soon(response, client.scope, receive, client.send)
        await client.wait_for(lambda: client.messages)
        await channel.close()  # the source ends: the stream must stop its helper
        with anyio.fail_after(WAIT):
            await client.wait_for(lambda: client.finished)
    assert client.finished


async def test_a_helper_that_never_ends_is_given_up_on_not_waited_for_forever(
    caplog: pytest.LogCaptureFixture,
) -> None:
    if _on_trio():
        pytest.skip("on trio the helper runs in a nursery, which trio cancels reliably")
    channel, client, response = listener_stream()
    receive = StubbornReceive(swallow=10**9)
    async with anyio.create_task_group() as tg:
        tg.start_soon(response, client.scope, receive, client.send)
        await client.wait_for(lambda: client.messages)
        await channel.close()
        with caplog.at_level(logging.ERROR), anyio.fail_after(CLOSE_TIMEOUT + WAIT):
            await client.wait_for(lambda: client.finished, timeout=CLOSE_TIMEOUT + WAIT)
            # (the response returns once it gave up on the helper)
            while not any("ignores cancellation" in r.message for r in caplog.records):
                await anyio.sleep(0.05)
        receive.swallow = 0  # (the abandoned helper: the test's own clean-up)
    assert client.finished


async def test_a_server_cancel_while_the_helper_is_stopped_unwinds_every_scope() -> None:
    """uvicorn cancels the ASGI task with a plain task.cancel(): landing while the stream
    waits for its helper, it must still leave every cancel scope it entered, so that the
    server's own scopes around the app exit cleanly."""
    if _on_trio():
        pytest.skip("a plain task.cancel() is asyncio's")
    channel, client, response = listener_stream()
    receive = StubbornReceive(swallow=10**9)
    outcome: list[str] = []

    async def server() -> None:
        with anyio.CancelScope():  # a server's (or middleware's) scope around the app
            try:
                await response(client.scope, receive, client.send)
            except asyncio.CancelledError:
                outcome.append("cancelled")
                raise
        outcome.append("returned")

    task = asyncio.get_running_loop().create_task(server())
    await client.wait_for(lambda: client.messages)
    await channel.close()
    with anyio.fail_after(WAIT):
        await receive.first_swallowed.wait()  # the stream is stopping its helper
    task.cancel()
    done, _ = await asyncio.wait((task,), timeout=WAIT)
    assert done, "the cancelled response did not end"
    # Not a RuntimeError from the server's scope ("not the current cancel scope"):
    assert task.cancelled() or task.exception() is None, task.exception()
    receive.swallow = 0  # let the stubborn helper go


class Fatal(BaseException):
    pass


async def test_a_helper_dying_of_a_base_exception_ends_the_stream_and_raises() -> None:
    channel = SSEChannel("c")
    client = Client()
    failed = anyio.Event()

    async def receive() -> dict[str, Any]:
        await failed.wait()
        raise Fatal("the process is going down")

    response = EventStreamResponse(channel.listen(), heartbeat_interval=None)
    with (
        anyio.fail_after(WAIT),
        pytest.RaisesGroup(Fatal, allow_unwrapped=True, flatten_subgroups=True),
    ):
        async with anyio.create_task_group() as tg:
            tg.start_soon(response, client.scope, receive, client.send)
            await client.wait_for(lambda: client.messages)
            failed.set()
    assert not client.finished  # (the body was not completed: the client sees a break)


@pytest.mark.skipif(not hasattr(asyncio, "eager_task_factory"), reason="Python 3.12+")
async def test_an_eager_task_factory_changes_nothing() -> None:
    if _on_trio():
        pytest.skip("asyncio's task factory")
    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    try:
        for method in ("GET", "HEAD"):
            channel = SSEChannel("c")
            client = Client(method=method)
            response = EventStreamResponse(channel.listen(), heartbeat_interval=None)
            async with anyio.create_task_group() as tg:
                tg.start_soon(response, client.scope, client.receive, client.send)
                await client.wait_for(lambda c=client: c.messages)
                if method == "GET":
                    await channel.broadcast("x")
                    await client.wait_for(lambda c=client: b"data: x" in c.body)
                client.disconnect.set()
            assert client.messages[0]["status"] == 200
    finally:
        loop.set_task_factory(None)


async def test_a_server_cancel_while_stopping_a_stubborn_helper_still_ends_the_helper() -> None:
    """The helper swallowed the first cancellation, and the server's cancellation lands
    while the stream waits for it: the stream goes at once, and the helper is cancelled
    again (by the loop's timer) until it ends."""
    if _on_trio():
        pytest.skip("a plain task.cancel() is asyncio's")
    channel, client, response = listener_stream()
    receive = StubbornReceive(swallow=1)
    before = asyncio.all_tasks()
    task = asyncio.get_running_loop().create_task(response(client.scope, receive, client.send))
    await client.wait_for(lambda: client.messages)
    await channel.close()
    with anyio.fail_after(WAIT):
        await receive.first_swallowed.wait()
    task.cancel()
    done, _ = await asyncio.wait((task,), timeout=WAIT)
    assert done
    with anyio.fail_after(WAIT):  # (well within CLOSE_TIMEOUT: a few 50 ms turns)
        while left := [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()]:
            await asyncio.sleep(0.01)
    assert not left


@pytest.mark.parametrize("how", ["receive raises a cancellation", "the helper is cancelled"])
async def test_a_watcher_cancelled_by_someone_else_drops_the_stream(how: str) -> None:
    """Nobody would tell the stream of a disconnect any more: it ends (as a task group
    ends when a child task is cancelled), and the listener leaves."""
    if _on_trio():
        pytest.skip("the light helper is asyncio's")
    channel = SSEChannel("c")
    parked: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    client = Client()

    async def receive() -> dict[str, Any]:
        return await parked  # (a server's own future for this connection)

    response = EventStreamResponse(channel.listen(), heartbeat_interval=None)
    before = asyncio.all_tasks()
    task = asyncio.get_running_loop().create_task(response(client.scope, receive, client.send))
    await client.wait_for(lambda: client.messages)
    with anyio.fail_after(WAIT):
        while channel.subscriber_count < 1:
            await asyncio.sleep(0.001)
    if how == "receive raises a cancellation":
        parked.cancel()
    else:
        (helper,) = asyncio.all_tasks() - before - {task}
        helper.cancel()
    done, _ = await asyncio.wait((task,), timeout=WAIT)
    assert done, "the stream went on without its disconnect watcher"
    assert task.exception() is None
    assert channel.subscriber_count == 0
