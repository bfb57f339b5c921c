"""Tokens for your clients, minted in Python: with PyJWT directly (what any language's JWT
library does: see examples/mint_token.mjs) or with `create_token`; an `SSEApp` checks them.

Serve it with ``SSE_SECRET=... python -m sse_toolkit run examples.mint_token:app``.
"""

import os
import time

import jwt

from sse_toolkit import SSEApp, create_token
from sse_toolkit.tokens import TokenVerifier

# At least 32 random bytes, shared with the backend that mints the tokens.
SECRET = os.environ.get("SSE_SECRET", "a long random secret from your config, 32+ bytes")


# --8<-- [start:pyjwt]
def mint_with_pyjwt(user_id: str, room: str) -> str:
    """The contract, by hand: exp (required), sub, and the grants under "sse"."""
    now = int(time.time())
    claims = {
        "sub": user_id,
        "iat": now,
        "exp": now + 3600,
        "sse": {"subscribe": [room, "news.*"], "publish": [room]},
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


# --8<-- [end:pyjwt]


# --8<-- [start:create_token]
def mint_with_create_token(user_id: str, room: str) -> str:
    """The same JWT, made by sse_toolkit (HS256 by default)."""
    return create_token(
        SECRET,
        channels=[room, "news.*"],
        actions=["subscribe", "publish"],
        ttl=3600,
        subject=user_id,
    )


# --8<-- [end:create_token]


# --8<-- [start:keys]
def public_key_verifier(path: str) -> TokenVerifier:
    """RS256/ES256/EdDSA: your identity provider's public key (PEM) or JWKS file."""
    return TokenVerifier.from_file(path, audience="sse", issuer="https://auth.example")


def jwks_url_verifier(url: str) -> TokenVerifier:
    """Its JWKS endpoint: fetched off the event loop, cached, fetched again for a new kid."""
    return TokenVerifier(jwks_url=url, algorithms=["RS256", "ES256"])


# --8<-- [end:keys]

# --8<-- [start:app]
verifier = TokenVerifier(secret=SECRET, algorithms=["HS256"], leeway=5)
app = SSEApp(allow_publish=True, secret=verifier)  # every action needs a token
# --8<-- [end:app]
