"""trio running as a guest on an asyncio loop (``trio.lowlevel.start_guest_run``): asyncio
then reports its loop as running, but the code runs under trio. The toolkit's asyncio-only
paths (a waiter's future, a stream's bare helper task) must not be taken there."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing

from sse_toolkit import SSEApp, SSEChannel
from sse_toolkit.manager import ChannelManager

from .asgi import Client

WAIT = 5.0


def run_as_guest(trio_main: Callable[[], Awaitable[Any]]) -> Any:
    async def host() -> Any:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        trio.lowlevel.start_guest_run(
            trio_main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done.set_result,
        )
        return (await asyncio.wait_for(done, WAIT * 2)).unwrap()

    return asyncio.run(host())


def test_a_listener_is_woken_by_a_publish_in_guest_mode() -> None:
    async def trio_main() -> Any:
        channel = SSEChannel("g")
        listener = channel.listen()
        got: list[Any] = []
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                got.append(await listener.__anext__())

            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            channel.broadcast_nowait("x")
            with trio.fail_after(WAIT):
                while not got:
                    await trio.sleep(0.001)
        return got[0].data

    assert run_as_guest(trio_main) == "x"


def test_an_sseapp_stream_in_guest_mode() -> None:
    async def trio_main() -> bytes:
        manager = ChannelManager()
        app = SSEApp(manager)
        client = Client(path="/news")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(app, client.scope, client.receive, client.send)
            with trio.fail_after(WAIT):
                while (
                    channel := await manager.get("news")
                ) is None or not channel.subscriber_count:
                    await trio.sleep(0.001)
                await channel.broadcast("x")
                while b"data: x" not in client.body:
                    await trio.sleep(0.001)
            client.disconnect.set()
        return client.body

    assert b"data: x\n\n" in run_as_guest(trio_main)
