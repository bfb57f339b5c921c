"""FastAPI: the Starlette adapter (FastAPI responses are Starlette's)."""

from __future__ import annotations

from .starlette import EventStreamResponse

__all__ = ["EventStreamResponse"]
