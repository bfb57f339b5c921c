"""Presence: how many streams subscribe to a channel, who they are, who joins and leaves.

`SSEApp(presence=True)` serves it (``GET /_presence/{channel}``, and with ``?stream=1`` a
companion stream of ``sse.join`` / ``sse.leave`` events). A `Presence` belongs to a
`ChannelManager` (``manager.presence()``): every app on that manager shares its counts.

Each process keeps a table: channel -> subject -> open streams (subject None: a stream
without a token, or whose token has no ``sub``; counted, never listed).

With a shared backend (Redis), each process also writes its table to the backend, one
entry per channel (``<prefix>_presence:<channel>``, a hash: field = this process's
`Presence.member`, value = ``{"t": unix time, "subjects": {subject: n}, "anonymous": n}``),
when it changes (coalesced: at most one write per ``_COALESCE`` seconds) and every
``ttl / 3`` seconds; the hash expires ``ttl`` seconds after the last write. A reader sums
every process's entry and ignores (and deletes) entries older than ``ttl``: the subscribers
of a process that crashed disappear within ``ttl`` seconds. (Hosts' clocks must agree to
well within ``ttl``.) A process that stops cleanly (`ChannelManager.close`) deletes its
entries at once.

Join and leave events are published on an internal channel of the manager,
``_presence.<channel>`` (a name no HTTP route can reach: channel names never start with
``_``), so with Redis every process's companion streams hear every process's joins and
leaves. A process that crashes sends no ``sse.leave`` for its streams: the counts recover
within ``ttl``, the companion streams never hear of those leaves.

On a shared backend the writes run in an asyncio task (redis-py is asyncio-only), started
on the first join and stopped by `close` (which `ChannelManager.close` calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.lowlevel

from .frames import ServerSentEvent

if TYPE_CHECKING:
    from .manager import ChannelManager

__all__ = [
    "DEFAULT_PRESENCE_TTL",
    "JOIN_EVENT",
    "LEAVE_EVENT",
    "PRESENCE_CHANNEL_PREFIX",
    "Presence",
    "presence_channel",
]

log = logging.getLogger("sse_toolkit.presence")

DEFAULT_PRESENCE_TTL: Final = 30.0
"""Seconds a process's presence entries live in the backend without a refresh."""
PRESENCE_CHANNEL_PREFIX: Final = "_presence."
JOIN_EVENT: Final = "sse.join"
LEAVE_EVENT: Final = "sse.leave"
_COALESCE: Final = 0.05  # changes within this many seconds go out in one write
_EVENT_TIMEOUT: Final = 2.0  # bound on publishing one join/leave event
_CLOSE_TIMEOUT: Final = 2.0  # bound on deleting this process's entries at close
_WRITER_TASK: Final = "sse-toolkit presence writer"


def presence_channel(channel: str) -> str:
    """The internal channel carrying ``channel``'s join and leave events."""
    return PRESENCE_CHANNEL_PREFIX + channel


class Presence:
    """Subscribers per channel, for one `ChannelManager` (see the module's docstring)."""

    def __init__(self, manager: ChannelManager, *, ttl: float = DEFAULT_PRESENCE_TTL) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
            raise ValueError(f"presence ttl must be a number of seconds > 0, not {ttl!r}")
        self.manager = manager
        self.ttl = float(ttl)
        self.member = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        """This process's field in the shared presence hashes."""
        self.generation = 0
        """Bumped by `close`: a `leave` for a join of an earlier generation is ignored."""
        self._table: dict[str, dict[str | None, int]] = {}
        self._dirty: set[str] = set()
        self._closed = False
        self._changed: anyio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def shared(self) -> bool:
        """Whether presence spans processes (the manager's backend is not local)."""
        return not self.manager.backend.local

    @property
    def refresh_interval(self) -> float:
        return self.ttl / 3

    # -- joining and leaving ---------------------------------------------------------------

    async def join(self, channel: str, subject: str | None = None) -> None:
        """A stream of ``subject`` (None: anonymous) subscribed to ``channel``."""
        self._closed = False
        counts = self._table.setdefault(channel, {})
        counts[subject] = counts.get(subject, 0) + 1
        self._changed_locally(channel)
        await self._announce(JOIN_EVENT, channel, subject, self._local_count(channel))

    async def leave(
        self, channel: str, subject: str | None = None, *, generation: int | None = None
    ) -> None:
        """That stream ended. Ignored if unknown, or joined before `close` (``generation``)."""
        if generation is not None and generation != self.generation:
            await anyio.lowlevel.checkpoint()
            return
        counts = self._table.get(channel)
        if counts is None or subject not in counts:
            await anyio.lowlevel.checkpoint()
            return
        counts[subject] -= 1
        if counts[subject] <= 0:
            del counts[subject]
        if not counts:
            del self._table[channel]
        self._changed_locally(channel)
        await self._announce(LEAVE_EVENT, channel, subject, self._local_count(channel))

    def _local_count(self, channel: str) -> int:
        return sum(self._table.get(channel, {}).values())

    def local(self, channel: str) -> dict[str | None, int]:
        """This process's streams on ``channel`` by subject (a copy)."""
        return dict(self._table.get(channel, {}))

    async def snapshot(self, channel: str) -> dict[str, Any]:
        """``{"channel": name, "subscribers": n, "subjects": [sorted distinct subjects]}``:
        this process's streams, plus every other live process's with a shared backend."""
        subjects: dict[str, int] = {}
        anonymous = 0
        for subject, count in self._table.get(channel, {}).items():
            if subject is None:
                anonymous += count
            else:
                subjects[subject] = subjects.get(subject, 0) + count
        if self.shared:
            stored = await self.manager.backend.read_presence(channel)
            oldest = time.time() - self.ttl
            stale: list[str] = []
            for member, raw in stored.items():
                if member == self.member:
                    continue  # our own table is fresher than what we wrote
                entry = _parse_entry(raw)
                if entry is None:
                    continue  # not ours to judge (another version's entry, say)
                written, their_subjects, their_anonymous = entry
                if written < oldest:
                    stale.append(member)  # its process stopped refreshing: gone
                    continue
                anonymous += their_anonymous
                for subject, count in their_subjects.items():
                    subjects[subject] = subjects.get(subject, 0) + count
            if stale:
                try:
                    await self.manager.backend.drop_presence(channel, stale)
                except Exception as exc:  # ignored when read anyway; dropped next time
                    log.debug("could not drop stale presence of %r: %s", channel, exc)
        return {
            "channel": channel,
            "subscribers": anonymous + sum(subjects.values()),
            "subjects": sorted(subject for subject, count in subjects.items() if count > 0),
        }

    async def close(self) -> None:
        """Stop writing, and delete this process's entries from the backend (bounded).

        Streams still open are forgotten (their leaves are ignored); a later `join` starts
        afresh.
        """
        self.generation += 1
        self._closed = True
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done():
            try:
                same_loop = writer.get_loop() is asyncio.get_running_loop()
            except RuntimeError:  # on trio: our asyncio task cannot be running here
                same_loop = False
            if same_loop:
                writer.cancel()
                await asyncio.wait([writer], timeout=_CLOSE_TIMEOUT)
        channels = set(self._table) | self._dirty
        self._table.clear()
        self._dirty.clear()
        self._changed = None
        self._loop = None
        if self.shared and channels:
            with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                try:
                    entries = dict.fromkeys(channels)
                    await self.manager.backend.write_presence(self.member, entries, self.ttl)
                except Exception as exc:  # they expire within the ttl all the same
                    log.warning("could not delete this process's presence entries: %s", exc)

    # -- internals -------------------------------------------------------------------------

    def _entry(self, channel: str) -> str | None:
        """This process's entry for ``channel`` as stored (None: nothing to store)."""
        counts = self._table.get(channel)
        if not counts:
            return None
        subjects = {subject: n for subject, n in counts.items() if subject is not None}
        entry = {"t": time.time(), "subjects": subjects, "anonymous": counts.get(None, 0)}
        return json.dumps(entry, separators=(",", ":"))

    def _changed_locally(self, channel: str) -> None:
        if not self.shared:
            return
        self._dirty.add(channel)
        self._ensure_writer()
        if self._changed is not None:
            self._changed.set()

    def _ensure_writer(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "presence on a shared backend runs on asyncio only (as RedisBackend does)"
            ) from None
        if self._loop is not loop:
            self._loop, self._writer = loop, None  # a new event loop: start afresh
        if self._writer is None or self._writer.done():
            writer = self._writer
            if writer is not None and not writer.cancelled() and writer.exception() is not None:
                log.error("the presence writer had stopped (%r); restarting", writer.exception())
            self._changed = anyio.Event()
            self._writer = loop.create_task(self._write_forever(), name=_WRITER_TASK)

    async def _write_forever(self) -> None:
        """Write what changed (coalesced), and everything every ``ttl / 3`` seconds."""
        last_full = -math.inf
        while True:
            changed = self._changed
            if changed is None:  # (closed meanwhile)
                return
            if not self._dirty:
                wait = last_full + self.refresh_interval - time.monotonic()
                with anyio.move_on_after(max(0.0, wait)):
                    await changed.wait()
            if self._dirty:
                await anyio.sleep(_COALESCE)  # let a burst of joins go out as one write
            self._changed = anyio.Event()
            now = time.monotonic()
            full = now - last_full >= self.refresh_interval
            channels = (set(self._table) | self._dirty) if full else set(self._dirty)
            self._dirty.clear()
            entries = {channel: self._entry(channel) for channel in channels}
            try:
                await self.manager.backend.write_presence(self.member, entries, self.ttl)
            except Exception as exc:  # try again soon; the entries expire meanwhile at worst
                log.warning("could not write presence (%s); retrying", exc)
                self._dirty |= channels
                await anyio.sleep(min(1.0, self.refresh_interval))
                continue
            if full:
                last_full = now

    async def _announce(self, kind: str, channel: str, subject: str | None, local: int) -> None:
        """Publish ``kind`` (join/leave) on the channel's companion channel (bounded; a
        failure is logged, never raised: subscribing does not depend on it).

        ``local``: this process's count just after the change, taken before any await
        (joins and leaves that overlap must each tell their own count); other processes'
        counts are as of their last write (coalesced: at most ~50 ms behind)."""
        if self._closed:
            await anyio.lowlevel.checkpoint()
            return
        name = presence_channel(channel)
        try:
            with anyio.move_on_after(_EVENT_TIMEOUT):
                if self.shared:
                    companion = await self.manager.get_or_create(name)
                else:
                    # In memory, a companion channel exists while somebody listens (or
                    # could replay): nobody to tell otherwise.
                    found = await self.manager.get(name)
                    if found is None:
                        return
                    companion = found
                subscribers = local
                if self.shared:
                    snapshot = await self.snapshot(channel)  # (ours in it as of now: replaced)
                    subscribers += snapshot["subscribers"] - self._local_count(channel)
                data = {"channel": channel, "subject": subject, "subscribers": subscribers}
                await companion.broadcast(ServerSentEvent(data, event=kind))
        except Exception as exc:
            log.warning("could not publish %s on %r: %s", kind, channel, exc)


def _parse_entry(raw: str) -> tuple[float, dict[str, int], int] | None:
    """A stored entry as (written at, subjects, anonymous); None if it is not one."""
    with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
        entry = json.loads(raw)
        written = float(entry["t"])
        subjects = {
            str(subject): int(count)
            for subject, count in dict(entry.get("subjects", {})).items()
            if int(count) > 0
        }
        anonymous = max(0, int(entry.get("anonymous", 0)))
        if math.isfinite(written):
            return written, subjects, anonymous
    return None
