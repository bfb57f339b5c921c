"""Checks of option values shared by every layer: each raises naming the option."""

from __future__ import annotations

import math

__all__ = ["check_delay", "check_positive_int", "check_seconds"]


def check_positive_int(name: str, value: object, *, optional: bool = False) -> int | None:
    """``value`` if it is an int >= 1 (or None when ``optional``); raise naming ``name``."""
    if value is None and optional:
        return None
    if type(value) is not int or value < 1:
        allowed = "a positive int or None" if optional else "a positive int"
        raise ValueError(f"{name} must be {allowed}, not {value!r}")
    return value


def check_seconds(name: str, value: object, *, zero: bool = False) -> float | None:
    """None, or a finite number of seconds > 0 (>= 0 with ``zero``); raise naming ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not {value!r}")
    if not (math.isfinite(value) and (value >= 0 if zero else value > 0)):
        bound = ">= 0" if zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound} seconds, or None, not {value!r}")
    return float(value)


def check_delay(name: str, value: object) -> float:
    """A finite number of seconds >= 0; raise ValueError naming ``name`` otherwise.

    For delays that also come from command lines and the environment (shutdown grace,
    reconnect delays), where a value of the wrong type is a wrong value.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, not {value!r}")
    return float(value)
