"""ChannelManager and the process-wide sse_manager."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from sse_toolkit import ChannelManager, SSEChannel, TooManyChannels, sse_manager
from sse_toolkit.backends import Backend, MemoryBackend
from sse_toolkit.frames import ServerSentEvent

from .asgi import WAIT

pytestmark = pytest.mark.anyio


async def test_get_or_create_get_list_remove() -> None:
    manager = ChannelManager()
    chat = await manager.get_or_create("chat")
    assert isinstance(chat, SSEChannel)
    assert await manager.get_or_create("chat") is chat
    assert await manager.get("chat") is chat
    assert await manager.get("nope") is None
    await manager.get_or_create("news")
    assert sorted(await manager.list_channels()) == ["chat", "news"]
    assert await manager.remove("chat") is True
    assert await manager.remove("chat") is False
    assert chat.closed
    assert await manager.list_channels() == ["news"]


async def test_sse_manager_is_a_process_wide_manager() -> None:
    channel = await sse_manager.get_or_create("test-manager-global")
    assert await sse_manager.get("test-manager-global") is channel
    await sse_manager.remove("test-manager-global")


async def test_channel_options_reach_every_channel_and_are_validated() -> None:
    manager = ChannelManager(capacity=8, lag_policy="close")
    channel = await manager.get_or_create("c")
    assert (channel.capacity, channel.lag_policy) == (8, "close")
    with pytest.raises(TypeError, match="colour"):
        ChannelManager(colour="red")
    with pytest.raises(ValueError, match="capacity"):
        ChannelManager(capacity=-1)
    assert (await ChannelManager(max_bytes=5000).get_or_create("c")).max_bytes == 5000
    with pytest.raises(ValueError, match="max_bytes"):
        ChannelManager(max_bytes=0)
    with pytest.raises(ValueError, match="max_channels"):
        ChannelManager(max_channels=0)


async def test_remove_and_close_end_listeners_cleanly() -> None:
    manager = ChannelManager()
    ended: list[str] = []

    async def consume(name: str) -> None:
        channel = await manager.get_or_create(name)
        async for _ in channel.listen():
            pass
        ended.append(name)

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            for name in ("a", "b", "c"):
                tg.start_soon(consume, name)
            while manager.stats()["subscribers"] < 3:
                await anyio.sleep(0.001)
            await manager.remove("a")
            while ended != ["a"]:
                await anyio.sleep(0.001)
            await manager.close()
    assert sorted(ended) == ["a", "b", "c"]
    assert await manager.list_channels() == []
    fresh = await manager.get_or_create("a")  # usable again, as after a restart
    assert not fresh.closed


async def test_max_channels_is_a_clear_error_when_none_is_idle() -> None:
    manager = ChannelManager(max_channels=2, retention=0)
    listeners = [(await manager.get_or_create(name)).listen() for name in ("a", "b")]
    with pytest.raises(TooManyChannels, match="max_channels"):
        await manager.get_or_create("c")
    await listeners[0].aclose()  # "a" is now idle and never published: evicted
    assert await manager.get_or_create("c") is not None
    assert sorted(await manager.list_channels()) == ["b", "c"]
    await listeners[1].aclose()


async def test_channel_nobody_wrote_to_goes_once_its_last_listener_is_closed() -> None:
    manager = ChannelManager(retention=0)
    channel = await manager.get_or_create("user-42")
    listener = channel.listen()
    assert manager.sweep() == 0  # a listener object exists: kept
    assert await manager.list_channels() == ["user-42"]
    await listener.aclose()
    assert manager.sweep() == 1
    assert await manager.list_channels() == []


async def test_a_channel_just_handed_out_waits_for_its_first_subscriber() -> None:
    manager = ChannelManager()  # default retention
    await manager.get_or_create("user-42")
    assert manager.sweep() == 0  # its caller is about to listen()
    assert await manager.list_channels() == ["user-42"]


async def test_channel_with_history_stays_for_its_retention() -> None:
    manager = ChannelManager(retention=3600)
    channel = await manager.get_or_create("room")
    await channel.broadcast("worth replaying")
    listener = channel.listen()
    await listener.aclose()
    assert await manager.list_channels() == ["room"]


async def test_idle_channels_past_retention_make_room() -> None:
    manager = ChannelManager(max_channels=3, retention=0)
    for name in ("a", "b", "c"):
        await (await manager.get_or_create(name)).broadcast("x")
    await manager.get_or_create("d")  # full: the sweep evicts the idle ones
    assert await manager.list_channels() == ["d"]


async def test_an_evicted_channel_still_referenced_is_the_one_that_comes_back() -> None:
    manager = ChannelManager(retention=0)
    progress = await manager.get_or_create("tasks")  # held, like a module-level channel
    progress.listen().close()  # a subscriber came and went
    assert manager.sweep() == 1
    assert await manager.get("tasks") is None
    listener = progress.listen()  # used through the old object meanwhile
    await progress.broadcast("50%")
    again = await manager.get_or_create("tasks")
    assert again is progress  # never a second channel of one name while the first lives
    await again.broadcast("60%")
    assert [(await listener.__anext__()).data for _ in range(2)] == ["50%", "60%"]
    await listener.aclose()


async def test_an_evicted_channel_nobody_holds_is_gone() -> None:
    manager = ChannelManager(retention=0)
    channel = await manager.get_or_create("tasks")
    await channel.broadcast("x")
    del channel
    manager.sweep()
    fresh = await manager.get_or_create("tasks")
    assert fresh.last_id is None  # a new channel, not the old one's history


async def test_stats_per_channel_and_in_total() -> None:
    manager = ChannelManager(capacity=2)
    a = await manager.get_or_create("a")
    lagging = a.listen()
    for i in range(5):
        await a.broadcast(str(i))
    await lagging.__anext__()  # the lag notice
    stats = manager.stats()
    assert stats["channels"] == 1
    assert stats["subscribers"] == 1
    assert stats["published"] == 5
    assert stats["dropped"] == 3
    assert stats["per_channel"]["a"]["lagged"] == 1
    assert manager.channel_stats("a") == a.stats()
    assert manager.channel_stats("zzz") is None
    await lagging.aclose()


class RecordingBackend(Backend):
    """A custom backend: the manager routes publishes and channel lifecycles through it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def publish(self, channel: SSEChannel, event: ServerSentEvent) -> ServerSentEvent:
        self.calls.append(("publish", event.data))
        return channel.deliver(event)

    async def attach(self, channel: SSEChannel) -> None:
        self.calls.append(("attach", channel.name))

    async def detach(self, channel: SSEChannel) -> None:
        self.calls.append(("detach", channel.name))

    async def close(self) -> None:
        self.calls.append(("close", None))


async def test_publishes_go_through_the_backend() -> None:
    backend = RecordingBackend()
    manager = ChannelManager(backend=backend)
    channel = await manager.get_or_create("c")
    stored = await channel.broadcast("hi")
    assert stored.id and stored.data == "hi"
    with pytest.raises(RuntimeError, match="broadcast_nowait"):
        channel.broadcast_nowait("sync")
    await manager.close()
    assert backend.calls == [
        ("attach", "c"),
        ("publish", "hi"),
        ("detach", "c"),
        ("close", None),
    ]


def test_memory_backend_is_the_default() -> None:
    assert isinstance(ChannelManager().backend, MemoryBackend)


# -- issue 8: the manager owns the life cycle -----------------------------------------------


async def test_a_listener_whose_read_timed_out_resumes_on_the_managed_channel() -> None:
    """The usual polling pattern: read with a timeout, come back later. The channel must
    stay the one the manager hands out while the listener object exists."""
    manager = ChannelManager(retention=0)
    channel = await manager.get_or_create("poll")
    listener = channel.listen()
    with anyio.move_on_after(0.01):
        await listener.__anext__()
    assert channel.subscriber_count == 0  # not waiting now: not counted...
    for i in range(300):  # ...but creations (and their sweeps) do not evict it
        await manager.get_or_create(f"other-{i}")
    manager.sweep()
    publisher = await manager.get_or_create("poll")
    assert publisher is channel
    await publisher.broadcast("news")
    with anyio.fail_after(WAIT):
        assert (await listener.__anext__()).data == "news"
    assert channel.subscriber_count == 1
    await listener.aclose()
    manager.sweep()
    assert await manager.get("poll") is None  # now nothing listens: it may go


async def test_subscribers_alone_cannot_fill_the_manager() -> None:
    manager = ChannelManager(max_channels=4, max_subscriber_channels=2)
    assert manager.max_subscriber_channels == 2
    listeners = []
    for name in ("s1", "s2"):
        listeners.append((await manager.get_or_create(name, for_subscriber=True)).listen())
    with pytest.raises(TooManyChannels, match="max_subscriber_channels"):
        await manager.get_or_create("s3", for_subscriber=True)
    # Existing channels are returned whatever their origin; publishers can still create.
    assert await manager.get_or_create("s1", for_subscriber=True) is listeners[0].channel
    await (await manager.get_or_create("p1")).broadcast("x")
    # A subscriber channel that got published to no longer counts against the bound.
    await listeners[0].channel.broadcast("hello")
    third = await manager.get_or_create("s3", for_subscriber=True)
    assert third.name == "s3"
    for listener in listeners:
        await listener.aclose()


def test_max_subscriber_channels_defaults_to_half_and_is_validated() -> None:
    assert ChannelManager(max_channels=10).max_subscriber_channels == 5
    for bad in (-1, 11, 2.5, "3"):
        with pytest.raises(ValueError, match="max_subscriber_channels"):
            ChannelManager(max_channels=10, max_subscriber_channels=bad)  # type: ignore[arg-type]


async def test_concurrent_creations_count_against_max_channels() -> None:
    manager = ChannelManager(max_channels=3)
    results: list[Any] = []

    async def create(name: str) -> None:
        try:
            results.append(await manager.get_or_create(name))
        except TooManyChannels as exc:
            results.append(exc)

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(create, f"c{i}")
    assert sum(isinstance(r, SSEChannel) for r in results) == 3
    assert len(await manager.list_channels()) == 3
