"""Stream slots per client and per channel, taken atomically before a stream awaits anything.

Checking a count and then awaiting (to create a channel, say) before counting the new
stream lets concurrent requests all pass the check. `StreamSlots.reserve` checks and counts
in one synchronous step; the returned `Reservation` gives the slots back exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from ._http import HTTPError

__all__ = ["Reservation", "StreamSlots"]

RETRY_AFTER: Final = ("retry-after", "5")


class StreamSlots:
    def __init__(self, per_client: int | None, per_channel: int | None) -> None:
        self.per_client = per_client
        self.per_channel = per_channel
        self._clients: dict[str, int] = {}
        self._channels: dict[str, int] = {}

    def reserve(self, client: str, names: Sequence[str]) -> Reservation:
        """A slot for ``client`` and one on each channel, or `HTTPError` 429 (nothing taken)."""
        limit = self.per_client
        if limit is not None and self._clients.get(client, 0) >= limit:
            raise HTTPError(429, f"at most {limit} streams per client", [RETRY_AFTER])
        limit = self.per_channel
        if limit is not None:
            for name in names:
                if self._channels.get(name, 0) >= limit:
                    raise HTTPError(429, f"channel {name!r} is full ({limit})", [RETRY_AFTER])
        _add(self._clients, client, 1)
        for name in names:
            _add(self._channels, name, 1)
        return Reservation(self, client, tuple(names))

    def streams_of(self, client: str) -> int:
        return self._clients.get(client, 0)

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
        for name in self._names:
            _add(slots._channels, name, -1)

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
