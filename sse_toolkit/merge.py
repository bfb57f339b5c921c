"""One stream carrying several channels, with ids that replay each of them on reconnect.

Browsers open at most six HTTP/1.1 connections per origin, so a page that follows many
channels wants them on one stream. An event on such a stream carries a composite id
naming the position reached in *every* channel (``a=<id>&b=<id>``, ids percent-encoded),
so whichever event was last before a reconnect, its ``Last-Event-ID`` lets each channel
replay exactly what was missed. A position is the channel's own cursor
(`Listener.position`), not the id its event carries: an empty channel (``<prefix>-0``), an
event with an empty or caller-set id, an event since pushed out of the ring all keep their
place, and a reconnection after more than the ring holds gets `sse.lagged` with the exact
count, never a silent loss. With a backend (Redis), positions are the events' stream ids,
which every process knows (``0-0`` before the first event). A position that is not the
channel's (another channel object, a restart) gets `sse.reset`; an empty one (ids from
earlier versions) replays everything retained.

The stream ends as a whole when any of its channels ends it (a channel closed, or a
listener lagging under ``lag_policy="close"``), after the events already taken: the client
reconnects with its composite ``Last-Event-ID`` and every channel replays from there.

With ``events`` (event types), every channel of the stream is filtered alike. The filter is
applied here, on the channels' unfiltered batches, since every event read (kept or not)
moves its channel's position: a kept event carries the composite id of the positions
reached, and a batch that ends with filtered-out events ends with an id-only frame of the
composite id, so that a reconnection resumes exactly (see `SSEChannel.listen`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Final
from urllib.parse import parse_qsl, quote

import anyio
import anyio.lowlevel

from .channel import Listener, SSEChannel, event_filter
from .frames import HEARTBEAT, ServerSentEvent, id_line

__all__ = ["MergedListener", "decode_positions", "encode_positions"]

_HEARTBEAT_FRAME: Final = HEARTBEAT.encode()


def encode_positions(positions: dict[str, str]) -> str:
    """``{"a": "1-5", "b": ""}`` -> ``"a=1-5&b="``: a composite event id."""
    return "&".join(
        f"{quote(name, safe='')}={quote(pos, safe='')}" for name, pos in positions.items()
    )


def decode_positions(text: str) -> dict[str, str] | None:
    """The inverse of `encode_positions`; None if ``text`` is not a composite id."""
    if "=" not in text:
        return None
    try:
        return dict(parse_qsl(text, keep_blank_values=True, strict_parsing=True))
    except ValueError:
        return None


class MergedListener:
    """A `FrameBatches` source over several channels' listeners, in one task and one wait."""

    def __init__(
        self,
        channels: Sequence[SSEChannel],
        *,
        last_event_id: str | None = None,
        heartbeat_interval: float | None = None,
        events: Iterable[str] | None = None,
    ) -> None:
        if not channels:
            raise ValueError("a merged stream needs at least one channel")
        self._types = event_filter(events)  # validated before any listener exists
        self._unsent = False  # positions moved past filtered-out events since the last frame
        positions = decode_positions(last_event_id) if last_event_id is not None else None
        self._positions: dict[str, str] = {}
        self._listeners: list[tuple[str, Listener]] = []
        for channel in channels:
            name = channel.name
            if positions is not None and name in positions:
                position = positions[name]
                if position:
                    listener = channel.listen(last_event_id=position)
                else:
                    listener = channel.listen(from_oldest=True)
            elif last_event_id is not None and positions is None:
                # Not a composite id (a single channel's, or garbage): each channel says
                # whether it can replay after it, or sends its reset notice.
                listener = channel.listen(last_event_id=last_event_id)
            else:
                listener = channel.listen()
            self._positions[name] = listener.position()
            self._listeners.append((name, listener))
        self._heartbeat_interval = heartbeat_interval
        self._last_activity = time.monotonic()
        self._ended = False
        self._closed_counts = (0, 0)  # (delivered, filtered) of the listeners, once closed

    def use_heartbeat(self, interval: float) -> None:
        if self._heartbeat_interval is None:
            self._heartbeat_interval = interval

    @property
    def channels(self) -> list[str]:
        return [name for name, _ in self._listeners]

    @property
    def delivered(self) -> int:
        """Events handed over so far, over every channel (as `Listener.delivered`)."""
        listeners = self._listeners
        return sum(lst.delivered for _, lst in listeners) if listeners else self._closed_counts[0]

    @property
    def filtered(self) -> int:
        """Events the filter skipped so far, over every channel."""
        listeners = self._listeners
        return sum(lst.filtered for _, lst in listeners) if listeners else self._closed_counts[1]

    def __aiter__(self) -> MergedListener:
        return self

    async def __anext__(self) -> bytes:
        return await self.next_frames()

    async def next_frames(self) -> bytes:
        while True:
            if self._ended:
                self.close()
                raise StopAsyncIteration
            parts: list[bytes] = []
            for name, listener in self._listeners:
                try:
                    events = listener.take_ready()
                except StopAsyncIteration:
                    # One channel ended this stream: end all of it (after what is ready),
                    # so that the client reconnects for every channel.
                    self._ended = True
                    continue
                if events:
                    parts += self._with_composite_ids(name, listener, events)
            if self._unsent:
                # The batch ends with filtered-out events: a frame with no data carries
                # the positions past them (it moves Last-Event-ID, dispatches nothing).
                self._unsent = False
                parts.append(id_line(encode_positions(self._positions)) + b"\n")
            if parts:
                self._last_activity = time.monotonic()
                return b"".join(parts)
            if self._ended:
                continue
            if await self._wait_any():
                self._last_activity = time.monotonic()
                return _HEARTBEAT_FRAME

    def _with_composite_ids(
        self, name: str, listener: Listener, events: list[ServerSentEvent]
    ) -> list[bytes]:
        """The frames of ``events`` just taken from ``listener``, each with the composite id
        of the positions reached once it is read."""
        # Notices (no id) come first and do not move the client's Last-Event-ID; the
        # events follow, consecutive in the channel, the last one where it stands now.
        stored = sum(1 for event in events if event.id is not None)
        frames: list[bytes] = []
        types = self._types
        for event in events:
            frame = event.frame
            if event.id is not None:
                stored -= 1
                self._positions[name] = listener.position(stored)
                if types is not None:
                    if event.event not in types:
                        listener.filtered += 1
                        self._unsent = True
                        continue
                    self._unsent = False
                # Stored frames start with their id line: swap it for the composite one.
                frame = id_line(encode_positions(self._positions)) + frame[len(id_line(event.id)) :]
            frames.append(frame)
        return frames

    async def _wait_any(self) -> bool:
        """Wait for any channel to publish or close; True if a heartbeat is due instead."""
        wakeup = anyio.Event()
        channels = [listener.channel for _, listener in self._listeners]
        for channel in channels:
            channel.link(wakeup)
        interval = self._heartbeat_interval
        try:
            if any(listener.ready for _, listener in self._listeners):
                # Published from another thread between our look and the link.
                await anyio.lowlevel.checkpoint()
                return False
            if interval is None:
                await wakeup.wait()
                return False
            with anyio.move_on_after(self._last_activity + interval - time.monotonic()):
                await wakeup.wait()
                return False
            return True
        except BaseException:
            for _, listener in self._listeners:
                listener.suspend()  # the client left (or timed out): not a subscriber now
            raise
        finally:
            for channel in channels:
                channel.unlink(wakeup)

    async def aclose(self) -> None:
        self.close()
        await anyio.lowlevel.checkpoint()

    def close(self) -> None:
        self._ended = True
        if self._listeners:  # (kept: metrics read the counts after the stream closed it)
            self._closed_counts = (self.delivered, self.filtered)
        for _, listener in self._listeners:
            listener.close()
        self._listeners.clear()
