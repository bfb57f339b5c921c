"""One stream carrying several channels, with ids that replay each of them on reconnect.

Browsers open at most six HTTP/1.1 connections per origin, so a page that follows many
channels wants them on one stream. An event on such a stream carries a composite id
naming the position reached in *every* channel (``a=<id>&b=<id>``, ids percent-encoded),
so whichever event was last before a reconnect, its ``Last-Event-ID`` lets each channel
replay exactly what was missed. A channel that was empty when the stream began is listed
with an empty position, meaning "everything it retains is new to this client".

An event published with an empty id (``id=""``: per the spec, it resets the browser's
last event id) resets its channel's position the same way: the channel leaves the
composite id, and a reconnection follows it live from then on, as a single-channel stream
would. (Its position never becomes "", which would replay everything retained again.)

The stream ends as a whole when any of its channels ends it (a channel closed, or a
listener lagging under ``lag_policy="close"``), after the events already taken: the client
reconnects with its composite ``Last-Event-ID`` and every channel replays from there.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final
from urllib.parse import parse_qsl, quote

import anyio
import anyio.lowlevel

from .channel import Listener, SSEChannel
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
    ) -> None:
        if not channels:
            raise ValueError("a merged stream needs at least one channel")
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
                position = last_event_id
                listener = channel.listen(last_event_id=last_event_id)
            else:
                newest = channel.last_id
                listener = channel.listen()
                if newest == "":
                    # Its newest event reset the id: follow it live on a reconnection, as
                    # its own stream would (a position "" would replay all it retains).
                    self._listeners.append((name, listener))
                    continue
                position = newest or ""
            self._positions[name] = position
            self._listeners.append((name, listener))
        self._heartbeat_interval = heartbeat_interval
        self._last_activity = time.monotonic()
        self._ended = False

    def use_heartbeat(self, interval: float) -> None:
        if self._heartbeat_interval is None:
            self._heartbeat_interval = interval

    @property
    def channels(self) -> list[str]:
        return [name for name, _ in self._listeners]

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
                for event in events:
                    parts.append(self._with_composite_id(name, event))
            if parts:
                self._last_activity = time.monotonic()
                return b"".join(parts)
            if self._ended:
                continue
            if await self._wait_any():
                self._last_activity = time.monotonic()
                return _HEARTBEAT_FRAME

    def _with_composite_id(self, name: str, event: ServerSentEvent) -> bytes:
        frame = event._encoded
        if event.id is None:  # a notice: it must not move the client's Last-Event-ID
            return frame
        if event.id:
            self._positions[name] = event.id
        else:
            self._positions.pop(name, None)  # an empty id: follow this channel live
        # Stored frames start with their id line: swap it for the composite one.
        body = frame[len(id_line(event.id)) :]
        return id_line(encode_positions(self._positions)) + body

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
        for _, listener in self._listeners:
            listener.close()
        self._listeners.clear()
