"""The hub's demo publishers (``HubSettings(demo=True)``, ``python -m sse_toolkit --demo``).

Three channels, each with its own event type, published to from the first instant:

- ``clock``: ``tick`` every second, ``{"time": "<ISO 8601, UTC>"}``;
- ``jobs``: ``progress`` of a simulated job, ``{"job": n, "percent": p}``, from 0 to 100 %
  in steps of 10 every half second, then the next job;
- ``metrics``: ``metric`` every second, ``{"name": "cpu", "value": <0 to 100>}`` (a random
  walk).

`run_demo` runs them until cancelled (the `Hub` cancels it at lifespan shutdown). A publish
that fails (the backend is unavailable, the channel closing) is logged and skipped: the
demo never takes the hub down.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timezone
from typing import Any, Final

import anyio

from .backends.base import BackendUnavailable
from .channel import ChannelClosed
from .manager import ChannelManager, TooManyChannels

__all__ = ["DEMO_CHANNELS", "clock", "jobs", "metrics", "run_demo"]

log = logging.getLogger("sse_toolkit.demo")

DEMO_CHANNELS: Final[dict[str, str]] = {"clock": "tick", "jobs": "progress", "metrics": "metric"}
"""Each demo channel and the type of the events published on it."""


async def run_demo(manager: ChannelManager, *, interval: float = 1.0) -> None:
    """Publish the demo's events on ``manager`` until cancelled (``interval``: seconds
    between ticks; the job advances twice as often)."""
    async with anyio.create_task_group() as group:
        group.start_soon(clock, manager, interval)
        group.start_soon(jobs, manager, interval / 2)
        group.start_soon(metrics, manager, interval, random.Random())


async def clock(manager: ChannelManager, interval: float = 1.0) -> None:
    while True:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        await _publish(manager, "clock", {"time": now})
        await anyio.sleep(interval)


async def jobs(manager: ChannelManager, interval: float = 0.5) -> None:
    job = 0
    while True:
        job += 1
        for percent in range(0, 101, 10):
            await _publish(manager, "jobs", {"job": job, "percent": percent})
            await anyio.sleep(interval)


async def metrics(manager: ChannelManager, interval: float = 1.0, rng: Any = None) -> None:
    rng = rng or random.Random()
    value = 40.0
    while True:
        value = min(100.0, max(0.0, value + rng.uniform(-8.0, 8.0)))
        await _publish(manager, "metrics", {"name": "cpu", "value": round(value, 1)})
        await anyio.sleep(interval)


async def _publish(manager: ChannelManager, name: str, data: dict[str, Any]) -> None:
    try:
        # Asked each time: the manager may have evicted an idle channel since.
        channel = await manager.get_or_create(name)
        await channel.broadcast({"event": DEMO_CHANNELS[name], "data": data})
    except (BackendUnavailable, ChannelClosed, TooManyChannels) as exc:
        log.warning("demo: cannot publish on %r now: %s", name, exc)
