"""Where a manager's channels publish: in memory (the default) or shared through Redis."""

from .base import Backend, BackendUnavailable
from .memory import MemoryBackend

__all__ = ["Backend", "BackendUnavailable", "MemoryBackend"]
