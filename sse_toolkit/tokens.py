"""Signed, expiring access tokens: HMAC-SHA256 over a small JSON claim, standard library only.

A token is ``<payload>.<signature>``, both base64url without padding. The payload names
the channels (``"*"`` for all), the actions (``"subscribe"``, ``"publish"``, ``"stats"``)
and the expiry (Unix seconds). EventSource cannot send headers, so `SSEApp` accepts a token
from the ``Authorization: Bearer`` header, a cookie, or the ``token`` query parameter.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = ["ACTIONS", "InvalidToken", "TokenClaims", "create_token", "verify_token"]

ACTIONS: Final = frozenset({"subscribe", "publish", "stats"})


class InvalidToken(ValueError):
    """The token is malformed, forged, or expired (the message says which)."""


@dataclass(frozen=True)
class TokenClaims:
    channels: tuple[str, ...]
    actions: tuple[str, ...]
    expires: float

    def allows(self, channel: str, action: str) -> bool:
        return action in self.actions and ("*" in self.channels or channel in self.channels)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str | bytes, payload: str) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return _b64(hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest())


def create_token(
    secret: str | bytes,
    *,
    channels: str | Iterable[str],
    actions: str | Iterable[str] = ("subscribe",),
    ttl: float = 3600.0,
    now: float | None = None,
) -> str:
    """A token granting ``actions`` on ``channels`` for ``ttl`` seconds."""
    if not secret:
        raise ValueError("secret must not be empty")
    channel_list = [channels] if isinstance(channels, str) else list(channels)
    action_list = [actions] if isinstance(actions, str) else list(actions)
    unknown = set(action_list) - ACTIONS
    if unknown or not action_list:
        raise ValueError(f"actions must be some of {sorted(ACTIONS)}, not {action_list!r}")
    if not channel_list or not all(isinstance(c, str) and c for c in channel_list):
        raise ValueError(f"channels must be non-empty strings, not {channel_list!r}")
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl < math.inf:
        raise ValueError(f"ttl must be a finite number of seconds > 0, not {ttl!r}")
    expires = int((time.time() if now is None else now) + ttl)
    claims = {"ch": channel_list, "act": action_list, "exp": expires}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{payload}.{_signature(secret, payload)}"


def verify_token(secret: str | bytes, token: str, *, now: float | None = None) -> TokenClaims:
    """The claims of a valid token; raises `InvalidToken` otherwise, whatever ``token`` holds."""
    if not secret:
        raise ValueError("secret must not be empty")
    # A token is client input: any characters may arrive. Only ASCII can be ours, and
    # hmac.compare_digest raises TypeError on non-ASCII str, so refuse those first.
    if not isinstance(token, str) or not token.isascii():
        raise InvalidToken("malformed token")
    payload, dot, signature = token.partition(".")
    if not dot or not payload or not signature:
        raise InvalidToken("malformed token")
    if not hmac.compare_digest(_signature(secret, payload).encode(), signature.encode()):
        raise InvalidToken("bad token signature")
    try:
        claims = json.loads(_unb64(payload))
        channels = tuple(claims["ch"])
        actions = tuple(claims["act"])
        expires = float(claims["exp"])
    except (ValueError, KeyError, TypeError, RecursionError):
        raise InvalidToken("malformed token claims") from None
    if not all(isinstance(item, str) for item in channels + actions) or expires != expires:
        raise InvalidToken("malformed token claims")
    if (time.time() if now is None else now) >= expires:
        raise InvalidToken("token expired")
    return TokenClaims(channels=channels, actions=actions, expires=expires)
