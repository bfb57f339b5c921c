"""Model-based test of channels, the manager and merged streams together (asyncio and trio).

Hypothesis drives a `ChannelManager` through publishes (auto, caller-set and empty ids),
gaps noted by a backend, listens (live and replaying), reads with random timeouts (which
cancel waits), closes, sweeps (retention 0: anything without a listener object may go),
removals, reconnections with the last id seen, and concurrent `get_or_create`. A model
predicts, for every listener, exactly what it must read: every event published after it
subscribed, in order, once, unless an explicit `sse.reset`/`sse.lagged` notice says what
was skipped. After every step: subscriber counts equal the model's live listeners, no
channel with a listener object was evicted, nothing is retained past its bounds.

The async API runs on an event loop in a blocking portal (hypothesis stateful is sync).
``SSE_TOOLKIT_HYPOTHESIS_SCALE=10`` runs ten times as many examples.
"""

from __future__ import annotations

import itertools
import json
import os
import weakref
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sse_toolkit import LAGGED_EVENT, RESET_EVENT, ChannelManager, ServerSentEvent, SSEChannel
from sse_toolkit.merge import MergedListener, decode_positions

from .sse_parser import parse

SCALE = int(os.environ.get("SSE_TOOLKIT_HYPOTHESIS_SCALE", "1"))
CAPACITY = 4
NAMES = ("a", "b")

# One published item in a channel's model history: an event, or a gap noted before the next.
Item = tuple[str, Any, Any]  # ("event", data, id) | ("gap", missed, None)


@dataclass
class ModelListener:
    """What one listener (single or merged) must read next, per channel."""

    channels: dict[str, SSEChannel]  # name -> the channel object it listens to
    source: Any  # a Listener or a MergedListener
    merged: bool
    pending: dict[str, list[Item]] = field(default_factory=dict)
    owed_reset: set[str] = field(default_factory=set)  # channels that must send sse.reset
    counted: bool = True  # whether it counts as a subscriber now
    finished: bool = False
    last_id: str | None = None  # the browser's last event id
    # Merged streams: where the client stands in each channel, by the model's own account
    # (what it read), not by the composite id: ("id", x), ("oldest", None), ("live", None).
    positions: dict[str, tuple[str, str | None]] = field(default_factory=dict)


def _item_of(event: Any) -> tuple[str, Any, str | None]:
    """(event type, data, id) of a read item, from a ServerSentEvent or a parsed frame."""
    if isinstance(event, ServerSentEvent):
        return (event.event or "message", event.data, event.id)
    data: Any = event.data
    if event.event in (LAGGED_EVENT, RESET_EVENT):
        data = json.loads(data)
    return (event.event, data, None)


class ChannelsMachine(RuleBasedStateMachine):
    backend = "asyncio"

    def __init__(self) -> None:
        super().__init__()
        self._portal_cm = anyio.from_thread.start_blocking_portal(self.backend)
        self.portal = self._portal_cm.__enter__()
        self.manager = ChannelManager(retention=0, capacity=CAPACITY)
        # Model histories by channel object: gone with the object (as the manager's are).
        self.history: weakref.WeakKeyDictionary[SSEChannel, list[Item]] = (
            weakref.WeakKeyDictionary()
        )
        self.listeners: list[ModelListener] = []
        self.counter = itertools.count()

    def teardown(self) -> None:
        try:
            self.portal.call(self.manager.close)
        finally:
            self._portal_cm.__exit__(None, None, None)

    # -- helpers ---------------------------------------------------------------------------

    def channel(self, name: str) -> SSEChannel:
        channel = self.portal.call(self.manager.get_or_create, name)
        if channel not in self.history:
            assert channel.published == 0 and channel.last_id is None  # a new one
            self.history[channel] = []
        return channel

    def replay_from(self, channel: SSEChannel, position: str | None) -> list[Item] | None:
        """What listen(last_event_id=position) replays (None: a reset is due).

        ``position`` "" means from the oldest retained event (merged streams)."""
        items = self.history[channel]
        event_indexes = [i for i, item in enumerate(items) if item[0] == "event"]
        retained = event_indexes[-CAPACITY:]
        if position == "":
            if len(event_indexes) <= CAPACITY:
                return list(items)
            return list(items[event_indexes[-CAPACITY - 1] + 1 :])
        for i in retained:
            if items[i][2] == position and position:
                return list(items[i + 1 :])
        return None

    def consume(self, model: ModelListener, got: tuple[str, Any, str | None]) -> None:
        kind, data, event_id = got
        if kind in (RESET_EVENT, LAGGED_EVENT):
            name = data["channel"]
            pending = model.pending[name]
            if kind == RESET_EVENT:
                assert name in model.owed_reset, got
                model.owed_reset.discard(name)
                return
            assert name not in model.owed_reset, "sse.reset comes first"
            retained = [i for i in self.history[model.channels[name]] if i[0] == "event"]
            retained = retained[-CAPACITY:]
            lost = [i for i, item in enumerate(pending) if item[0] == "event"]
            lost = [i for i in lost if pending[i] not in retained]
            # One notice covers what it skips: the events the ring no longer retains (if it
            # lapped it), and every gap up to the next event it gets.
            end = lost[-1] + 1 if lost else 0
            while end < len(pending) and pending[end][0] == "gap":
                end += 1
            assert end, (got, "a lagged notice for nothing", pending)
            expected: int | None = len(lost)
            for item in pending[:end]:
                if item[0] == "gap":
                    expected = None if expected is None or item[1] is None else expected + item[1]
            assert data["missed"] == expected, (got, pending)
            del pending[:end]
            return
        name = data.split(":", 1)[0]
        assert name not in model.owed_reset, "sse.reset comes first"
        pending = model.pending[name]
        assert pending, f"{got} was not expected (nothing pending)"
        expected = pending.pop(0)
        assert expected[0] == "event", f"{got} arrived before the notice of {expected}"
        assert expected[1] == data, f"{got}: expected {expected} (order or duplicate)"
        if not model.merged:
            assert event_id == expected[2] or expected[2] is None
        elif expected[2]:
            model.positions[name] = ("id", expected[2])
        else:
            model.positions[name] = ("live", None)  # id "": it follows this channel live
        if event_id is not None:
            model.last_id = event_id

    # -- rules -----------------------------------------------------------------------------

    @rule(
        name=st.sampled_from(NAMES),
        id_kind=st.sampled_from(["auto", "auto", "caller", "empty"]),
        count=st.integers(1, 6),
    )
    def publish(self, name: str, id_kind: str, count: int) -> None:
        channel = self.channel(name)
        for _ in range(count):
            n = next(self.counter)
            data = f"{name}:{n}"
            event_id = {"auto": None, "caller": f"u{n}", "empty": ""}[id_kind]
            stored = self.portal.call(channel.broadcast, ServerSentEvent(data, id=event_id))
            assert stored.data == data and stored.id is not None
            item: Item = ("event", data, stored.id)
            self.history[channel].append(item)
            for model in self.listeners:
                if not model.finished and model.channels.get(name) is channel:
                    model.pending[name].append(item)
        assert len(channel.history() or []) <= CAPACITY

    @rule(name=st.sampled_from(NAMES), missed=st.none() | st.integers(0, 5))
    def note_gap(self, name: str, missed: int | None) -> None:
        channel = self.channel(name)
        if channel.stats().gaps >= CAPACITY:
            return  # past that, old gaps' counts are forgotten (tests/test_channel.py)
        channel.note_gap(missed)
        item: Item = ("gap", missed, None)
        self.history[channel].append(item)
        for model in self.listeners:
            if not model.finished and model.channels.get(name) is channel:
                model.pending[name].append(item)

    def _listen_single(self, name: str, last_event_id: str | None) -> None:
        channel = self.channel(name)
        source = self.portal.call(self._listen, channel, last_event_id)
        model = ModelListener({name: channel}, source, merged=False, last_id=last_event_id)
        replay = self.replay_from(channel, last_event_id) if last_event_id else []
        if replay is None:
            model.owed_reset.add(name)
        model.pending[name] = replay or []
        self.listeners.append(model)

    @staticmethod
    async def _listen(channel: SSEChannel, last_event_id: str | None) -> Any:
        return channel.listen(last_event_id=last_event_id)

    @rule(name=st.sampled_from(NAMES))
    def listen(self, name: str) -> None:
        self._listen_single(name, None)

    @rule(name=st.sampled_from(NAMES), event_id=st.sampled_from(["nope", "u0", "u3", ""]))
    def listen_with_last_event_id(self, name: str, event_id: str) -> None:
        self._listen_single(name, event_id)

    def _listen_merged(
        self,
        names: list[str],
        last_event_id: str | None = None,
        positions: dict[str, tuple[str, str | None]] | None = None,
    ) -> None:
        """A merged stream; a reconnection passes the composite id the client got last and
        where the model knows the client stood."""
        channels = {name: self.channel(name) for name in names}

        async def make() -> MergedListener:
            return MergedListener(list(channels.values()), last_event_id=last_event_id)

        source = self.portal.call(make)
        model = ModelListener(channels, source, merged=True, last_id=last_event_id)
        assert (decode_positions(last_event_id) is not None) if last_event_id else True
        for name, channel in channels.items():
            if positions is None:  # a new stream: from now on
                events = [item for item in self.history[channel] if item[0] == "event"]
                newest = events[-1][2] if events else None
                where = ("oldest", None) if newest is None else ("live", None)
                if newest:
                    where = ("id", newest)
            else:
                where = positions.get(name, ("live", None))
            replay: list[Item] | None = []
            if positions is not None and where[0] == "oldest":
                replay = self.replay_from(channel, "")
            elif positions is not None and where[0] == "id":
                replay = self.replay_from(channel, where[1])
            if replay is None:
                model.owed_reset.add(name)
            model.pending[name] = replay or []
            model.positions[name] = where
        self.listeners.append(model)

    @rule(names=st.lists(st.sampled_from(NAMES), min_size=2, max_size=2, unique=True))
    def listen_merged(self, names: list[str]) -> None:
        self._listen_merged(names)

    @precondition(lambda self: self.listeners)
    @rule(
        data=st.data(),
        path=st.sampled_from(["anext", "frames"]),
        max_items=st.integers(1, 12),
        timeout=st.sampled_from([0, 0, 0.001, 0.005]),
    )
    def read(self, data: st.DataObject, path: str, max_items: int, timeout: float) -> None:
        model = data.draw(st.sampled_from(self.listeners))
        if model.merged:
            path = "frames"
        items, ended, cancelled = self.portal.call(
            self._read, model.source, path, max_items, timeout
        )
        for item in items:
            self.consume(model, item)
        if ended:
            model.finished = True
            model.counted = False
            for name, channel in model.channels.items():
                if not model.merged:
                    assert channel.closed, "a stream ended while its channel is open"
                    assert not model.pending[name] and not model.owed_reset
            if model.merged:
                assert any(channel.closed for channel in model.channels.values())
        elif cancelled:
            model.counted = False  # its wait was cancelled: not a subscriber now
        elif items:
            model.counted = True
        if not ended and not cancelled and len(items) < max_items:
            raise AssertionError("a read returned early without a timeout or an end")

    @staticmethod
    async def _read(
        source: Any, path: str, max_items: int, timeout: float
    ) -> tuple[list[tuple[str, Any, str | None]], bool, bool]:
        items: list[tuple[str, Any, str | None]] = []
        ended = False
        with anyio.move_on_after(timeout) as scope:
            while len(items) < max_items:
                try:
                    if path == "anext":
                        items.append(_item_of(await source.__anext__()))
                    else:
                        stream = parse(await source.next_frames())
                        for event in stream.events:
                            item = _item_of(event)
                            if event.event not in (LAGGED_EVENT, RESET_EVENT):
                                item = (item[0], item[1], event.last_event_id)
                            items.append(item)
                except StopAsyncIteration:
                    ended = True
                    break
        return items, ended, scope.cancelled_caught

    @precondition(lambda self: self.listeners)
    @rule(data=st.data())
    def close_listener(self, data: st.DataObject) -> None:
        model = data.draw(st.sampled_from(self.listeners))
        self.portal.call(model.source.aclose)
        self.listeners.remove(model)

    @precondition(lambda self: self.listeners)
    @rule(data=st.data())
    def reconnect(self, data: st.DataObject) -> None:
        """The client drops the connection and comes back with its last event id."""
        model = data.draw(st.sampled_from(self.listeners))
        self.portal.call(model.source.aclose)
        self.listeners.remove(model)
        last_id = model.last_id or None  # "" resets the browser's last event id
        if model.merged:
            positions = dict(model.positions) if last_id else None
            self._listen_merged(list(model.channels), last_id, positions)
        else:
            (name,) = model.channels
            self._listen_single(name, last_id)

    @rule()
    def sweep(self) -> None:
        self.manager.sweep()

    @rule(name=st.sampled_from(NAMES))
    def remove(self, name: str) -> None:
        self.portal.call(self.manager.remove, name)

    @rule(name=st.sampled_from(NAMES), callers=st.integers(2, 6))
    def concurrent_get_or_create(self, name: str, callers: int) -> None:
        async def race() -> list[SSEChannel]:
            got: list[SSEChannel] = []

            async def one() -> None:
                got.append(await self.manager.get_or_create(name))

            async with anyio.create_task_group() as tg:
                for _ in range(callers):
                    tg.start_soon(one)
            return got

        got = self.portal.call(race)
        assert len({id(channel) for channel in got}) == 1
        self.channel(name)

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def counts_match_live_listeners(self) -> None:
        for channel in list(self.history.keys()):
            if channel.closed:
                continue
            mine = [m for m in self.listeners if channel in m.channels.values()]
            counted = sum(m.counted and not m.finished for m in mine)
            assert channel.subscriber_count == counted, (channel, counted)
            assert channel.open_listeners == sum(not m.finished for m in mine)

    @invariant()
    def channels_with_listeners_stay_managed(self) -> None:
        managed = self.manager._channels  # read-only look from the test
        for model in self.listeners:
            if model.finished:
                continue
            for name, channel in model.channels.items():
                if not channel.closed:
                    assert managed.get(name) is channel, f"{name} evicted under a listener"

    @invariant()
    def bounded(self) -> None:
        assert len(self.manager) <= len(NAMES)
        for channel in list(self.history.keys()):
            stats = channel.stats()
            assert stats.retained <= CAPACITY
            assert len(channel.history() or []) <= CAPACITY


def _settings() -> settings:
    return settings(
        max_examples=60 * SCALE,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


class AsyncioChannelsMachine(ChannelsMachine):
    backend = "asyncio"


class TrioChannelsMachine(ChannelsMachine):
    backend = "trio"


TestChannelsAsyncio = AsyncioChannelsMachine.TestCase
TestChannelsAsyncio.settings = _settings()
TestChannelsTrio = TrioChannelsMachine.TestCase
TestChannelsTrio.settings = _settings()

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
