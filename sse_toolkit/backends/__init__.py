"""Where a manager's channels publish: in memory (the default) or shared through Redis."""

from .base import Backend
from .memory import MemoryBackend

__all__ = ["Backend", "MemoryBackend"]
