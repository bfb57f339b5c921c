"""Stream slots per client and per channel, taken atomically before a stream awaits anything.

Checking a count and then awaiting (to create a channel, say) before counting the new
stream lets concurrent requests all pass the check. `StreamSlots.reserve` checks and counts
in one synchronous step; the returned `Reservation` gives the slots back exactly once.

Three bounds: streams per client, distinct channels per client (over all its open streams;
a channel several of its streams name counts once) and streams per channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from ._http import HTTPError

__all__ = ["Reservation", "StreamSlots"]

RETRY_AFTER: Final = ("retry-after", "5")


class StreamSlots:
    def __init__(
        self,
        per_client: int | None,
        per_channel: int | None,
        channels_per_client: int | None = None,
    ) -> None:
        self.per_client = per_client
        self.per_channel = per_channel
        self.channels_per_client = channels_per_client
        self._clients: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        # client -> {channel: streams of that client naming it}
        self._held: dict[str, dict[str, int]] = {}

    def reserve(self, client: str, names: Sequence[str]) -> Reservation:
        """A slot for ``client`` and one on each of ``names`` (distinct), or `HTTPError` 429
        naming the bound (nothing taken)."""
        names = tuple(dict.fromkeys(names))
        limit = self.per_client
        if limit is not None and self._clients.get(client, 0) >= limit:
            raise HTTPError(429, f"at most {limit} streams per client", [RETRY_AFTER])
        limit = self.channels_per_client
        held = self._held.get(client, {})
        if limit is not None:
            holding = len(held) + sum(1 for name in names if name not in held)
            if holding > limit:
                raise HTTPError(
                    429,
                    f"at most {limit} channels per client over its open streams "
                    f"(max_channels_per_client; this stream would make {holding})",
                    [RETRY_AFTER],
                )
        limit = self.per_channel
        if limit is not None:
            for name in names:
                if self._channels.get(name, 0) >= limit:
                    raise HTTPError(429, f"channel {name!r} is full ({limit})", [RETRY_AFTER])
        _add(self._clients, client, 1)
        held = self._held.setdefault(client, held)
        for name in names:
            _add(self._channels, name, 1)
            _add(held, name, 1)
        return Reservation(self, client, names)

    def streams_of(self, client: str) -> int:
        return self._clients.get(client, 0)

    def channels_of(self, client: str) -> int:
        """Distinct channels ``client``'s open streams name."""
        return len(self._held.get(client, ()))

    def streams_on(self, channel: str) -> int:
        return self._channels.get(channel, 0)

    def __len__(self) -> int:
        """Streams holding slots now."""
        return sum(self._clients.values())


class Reservation:
    """Slots held by one stream; `release` (or leaving the ``with`` block) frees them once."""

    __slots__ = ("_client", "_names", "_slots")

    def __init__(self, slots: StreamSlots, client: str, names: tuple[str, ...]) -> None:
        self._slots: StreamSlots | None = slots
        self._client = client
        self._names = names

    def release(self) -> None:
        slots, self._slots = self._slots, None
        if slots is None:
            return
        _add(slots._clients, self._client, -1)
        held = slots._held.get(self._client, {})
        for name in self._names:
            _add(slots._channels, name, -1)
            _add(held, name, -1)
        if not held:
            slots._held.pop(self._client, None)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _add(counts: dict[str, int], key: str, delta: int) -> None:
    count = counts.get(key, 0) + delta
    if count > 0:
        counts[key] = count
    else:
        counts.pop(key, None)
