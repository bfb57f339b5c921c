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
    # (what it read), not by the composite id: the channel object and how many items of its
    # history were behind the client. Whatever ids the events carried (auto, caller-set,
    # empty) and whether the channel was empty, a reconnection with the last composite id
    # must give every item after that once, or a notice with the exact count.
    positions: dict[str, tuple[weakref.ref[SSEChannel], int]] = field(default_factory=dict)


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
        self.away: list[ModelListener] = []  # clients disconnected, to come back later
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

        Auto ids are the channel's cursors: one the ring left behind still replays (the
        loss told by an exact lagged notice); a caller-set one must be retained."""
        items = self.history[channel]
        event_indexes = [i for i, item in enumerate(items) if item[0] == "event"]
        retained = event_indexes[-CAPACITY:]
        cursor = bool(position) and position.startswith(channel.position_at(0)[:-1])
        for i in event_indexes if cursor else retained:
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
        else:
            channel = model.channels[name]
            model.positions[name] = (
                weakref.ref(channel),
                self.history[channel].index(expected) + 1,
            )
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
            history = self.history[channel]
            replay: list[Item] = []
            where = positions.get(name) if positions is not None else None
            if where is not None and where[0]() is channel:
                replay = list(history[where[1] :])  # lost ones: an exact lagged notice
            elif where is not None:
                model.owed_reset.add(name)  # another channel object: its cursor is unknown
            model.pending[name] = replay
            model.positions[name] = (weakref.ref(channel), len(history) - len(replay))
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
        self._read_into(data.draw(st.sampled_from(self.listeners)), path, max_items, timeout)

    def _read_into(self, model: ModelListener, path: str, max_items: int, timeout: float) -> None:
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
    @rule(data=st.data(), later=st.booleans())
    def reconnect(self, data: st.DataObject, later: bool) -> None:
        """The client drops the connection and comes back with its last event id, at once
        or ``later`` (`come_back`: whatever was published meanwhile must be replayed or
        told)."""
        model = data.draw(st.sampled_from(self.listeners))
        self._disconnect(model)
        if later:
            self.away.append(model)
        else:
            self._come_back(model)

    def _disconnect(self, model: ModelListener) -> None:
        self.portal.call(model.source.aclose)
        self.listeners.remove(model)

    @precondition(lambda self: self.away)
    @rule(data=st.data())
    def come_back(self, data: st.DataObject) -> None:
        model = data.draw(st.sampled_from(self.away))
        self.away.remove(model)
        self._come_back(model)

    def _come_back(self, model: ModelListener) -> None:
        last_id = model.last_id or None  # "" resets the browser's last event id
        if model.merged:
            # Every event carries the composite id: the model's positions are what it says.
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


@pytest.mark.parametrize("machine", [AsyncioChannelsMachine, TrioChannelsMachine])
@pytest.mark.parametrize("first_a", ["none", "empty-id", "caller-id"])
def test_the_model_catches_a_merged_reconnection_that_loses_events(
    machine: type[ChannelsMachine], first_a: str
) -> None:
    """The review's scenario, step by step through the model (it failed on the code where
    a merged stream's position was the event's id: an empty channel was "a=", an id=""
    dropped the channel from the composite id; the loss went untold)."""
    steps = machine()
    try:
        if first_a != "none":
            steps.publish("a", {"empty-id": "empty", "caller-id": "caller"}[first_a], 1)
        steps.listen_merged(["a", "b"])
        steps.publish("b", "auto", 1)
        (model,) = steps.listeners
        steps._read_into(model, "frames", 1, 0.05)
        assert model.last_id
        steps._disconnect(model)  # away while a publishes more than its ring holds
        steps.publish("a", "auto", 6)
        steps._come_back(model)
        (model,) = steps.listeners
        steps._read_into(model, "frames", 5, 0.05)  # the notice, then 4 retained events
        assert not model.pending["a"]
    finally:
        steps.teardown()
