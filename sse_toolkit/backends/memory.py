"""The default backend: events live in this process's channels and nowhere else."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Backend

if TYPE_CHECKING:
    from ..channel import SSEChannel
    from ..frames import ServerSentEvent


class MemoryBackend(Backend):
    kind = "memory"

    async def publish(self, channel: SSEChannel, event: ServerSentEvent) -> ServerSentEvent:
        return channel.deliver(event)
