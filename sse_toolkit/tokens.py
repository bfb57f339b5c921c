"""Access tokens: standard JWTs (RFC 7519), verified with PyJWT.

The contract, which any language's JWT library can meet:

- a JWS-signed JWT; ``exp`` required; ``nbf`` and ``iat`` honoured; ``aud`` and ``iss``
  checked when the verifier is given ``audience`` / ``issuer`` (a token naming an audience
  is refused by a verifier that expects none);
- ``sub`` (optional): the client's identity;
- the grants, under one namespaced claim::

      {"sse": {"subscribe": ["room", "news.*"], "publish": ["room"], "stats": true}}

  a list of channel patterns per action: a channel's name, ``"*"`` for every channel, or
  ``"prefix.*"`` for every channel whose name starts with ``prefix.`` (not ``prefix``
  itself). ``stats`` is a boolean. A token without the claim is valid and grants nothing.

Keys: HS256/384/512 with a shared ``secret``; RS*/PS*/ES*/EdDSA with a public key (PEM), a
JWKS (a file, or a URL fetched off the event loop and cached, keys picked by ``kid``). The
accepted algorithms are an explicit list, never the token's say-so: ``alg: none`` is
refused, and an HMAC algorithm is only ever checked against the secret, so a token signed
with HS256 using the public key as its secret (algorithm confusion) is refused.

Verification raises `InvalidToken` (whose ``description`` is safe to put in a
``WWW-Authenticate`` header), and nothing else, whatever the token holds.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
import jwt

from ._validate import check_delay

__all__ = [
    "ACTIONS",
    "ASYMMETRIC_ALGORITHMS",
    "HMAC_ALGORITHMS",
    "MAX_TOKEN_LENGTH",
    "InvalidToken",
    "TokenClaims",
    "TokenVerifier",
    "create_token",
    "verify_token",
]

log = logging.getLogger("sse_toolkit.tokens")

ACTIONS: Final = frozenset({"subscribe", "publish", "stats"})
HMAC_ALGORITHMS: Final = ("HS256", "HS384", "HS512")
_RSA: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_BY_CURVE: Final = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
ASYMMETRIC_ALGORITHMS: Final = (*_RSA, "ES256", "ES384", "ES512", "EdDSA")
MAX_TOKEN_LENGTH: Final = 16_384  # characters: a JWT anyone sends fits; more is refused unread
CLAIM: Final = "sse"  # the grants' namespace in the payload
_MAX_JWKS_BYTES: Final = 1 << 20


class _Never(Exception):
    """An error of a newer PyJWT than the one installed: never raised."""


# PyJWT's errors, and what a client is told (fixed strings: never a token's content).
_DESCRIPTIONS: Final[tuple[tuple[type[Exception], str], ...]] = (
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
    (jwt.InvalidAudienceError, "the token is for another audience"),
    (jwt.InvalidIssuerError, "the token is from another issuer"),
    (jwt.InvalidSignatureError, "bad token signature"),
    (jwt.InvalidIssuedAtError, "the token's iat claim is not a time"),
    # (PyJWT >= 2.10 checks these types itself)
    (
        getattr(jwt.exceptions, "InvalidSubjectError", _Never),
        "the token's sub claim is not a string",
    ),
    (getattr(jwt.exceptions, "InvalidJTIError", _Never), "the token's jti claim is not a string"),
)
_REQUIRED_CLAIMS: Final = frozenset({"exp", "aud", "iss"})  # those PyJWT may say are missing


def _description(exc: Exception) -> str:
    """The fixed phrase for one of PyJWT's errors."""
    if isinstance(exc, jwt.MissingRequiredClaimError):
        claim = exc.claim if exc.claim in _REQUIRED_CLAIMS else "required"
        return f"the token has no {claim} claim"
    for error, description in _DESCRIPTIONS:
        if isinstance(exc, error):
            return description
    return "malformed token"


class InvalidToken(ValueError):
    """The token is malformed, forged, expired, or not for us; ``description`` says which.

    The description is a fixed phrase (no quote, no control character), fit for
    ``WWW-Authenticate: Bearer error="invalid_token", error_description="..."``.
    """

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token grants (``subscribe``/``publish``: channel patterns)."""

    subscribe: tuple[str, ...]
    publish: tuple[str, ...]
    stats: bool
    expires: float
    subject: str | None = None

    def allows(self, channel: str, action: str) -> bool:
        """Whether the token grants ``action`` on ``channel`` (stats: on every channel)."""
        if action == "stats":
            return self.stats
        patterns = self.subscribe if action == "subscribe" else self.publish
        return action in ACTIONS and any(_matches(p, channel) for p in patterns)


def _matches(pattern: str, channel: str) -> bool:
    if pattern == "*" or pattern == channel:
        return True
    return pattern.endswith(".*") and channel.startswith(pattern[:-1])


# -- keys ----------------------------------------------------------------------------------


def _algorithms_of_key(key: Any) -> tuple[str, ...]:
    """The algorithms a public key can check, by its type (never an HMAC one)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if isinstance(key, rsa.RSAPublicKey):
        return _RSA
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithm = _EC_BY_CURVE.get(key.curve.name)
        if algorithm is None:
            raise ValueError(f"unsupported elliptic curve {key.curve.name!r}")
        return (algorithm,)
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return ("EdDSA",)
    raise ValueError(f"not a public key for JWTs: {type(key).__name__}")


def _load_pem(pem: str | bytes) -> Any:
    """A PEM public key (a private key's public half, a certificate's key)."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.x509 import load_pem_x509_certificate
    except ImportError:  # pragma: no cover - the extra is missing
        raise ImportError(
            "public keys need cryptography: pip install 'sse-toolkit[crypto]'"
        ) from None
    data = pem.encode() if isinstance(pem, str) else bytes(pem)
    if b"CERTIFICATE" in data:
        return load_pem_x509_certificate(data).public_key()
    if b"PRIVATE KEY" in data:
        return serialization.load_pem_private_key(data, password=None).public_key()
    return serialization.load_pem_public_key(data)


@dataclass(frozen=True)
class _PublicKey:
    kid: str | None
    key: Any
    algorithms: tuple[str, ...]


def _jwks_keys(jwks: Mapping[str, Any]) -> list[_PublicKey]:
    """The public keys of a JWKS (``{"keys": [...]}``) or of a single JWK."""
    items = jwks.get("keys") if "keys" in jwks else [jwks]
    if not isinstance(items, list) or not items:
        raise ValueError("a JWKS has a non-empty list of keys")
    keys = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("a JWKS key is a JSON object")
        if item.get("kty") == "oct":
            raise ValueError("a JWKS here holds public keys only (a shared secret is `secret`)")
        if item.get("use", "sig") != "sig":
            continue  # an encryption key (Keycloak's sets hold one): not for signatures
        if "alg" in item and item["alg"] not in ASYMMETRIC_ALGORITHMS:
            raise ValueError(f"a JWKS key's alg must be one of {list(ASYMMETRIC_ALGORITHMS)}")
        try:
            jwk = jwt.PyJWK(item)
        except jwt.PyJWTError as exc:  # (InvalidKeyError is no PyJWKError)
            raise ValueError(f"a JWKS key cannot be used: {exc}") from None
        key = _public_half(jwk.key)  # (PyJWT's RSA and EC verify need the public key)
        algorithms = (jwk.algorithm_name,) if "alg" in item else _algorithms_of_key(key)
        keys.append(_PublicKey(jwk.key_id, key, algorithms))
    if not keys:
        raise ValueError("a JWKS has at least one signing key (use: sig)")
    return keys


def _public_half(key: Any) -> Any:
    """A private key's public key (a JWK with its private parameters); else ``key``."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    private = (
        rsa.RSAPrivateKey,
        ec.EllipticCurvePrivateKey,
        ed25519.Ed25519PrivateKey,
        ed448.Ed448PrivateKey,
    )
    return key.public_key() if isinstance(key, private) else key


class _JWKSFetcher:
    """A JWKS URL's keys: fetched in a worker thread, cached for ``lifetime`` seconds, and
    fetched again for an unknown ``kid`` (key rotation) at most every ``min_interval``."""

    def __init__(self, url: str, lifetime: float, min_interval: float, timeout: float) -> None:
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"jwks_url must be an http(s) URL, not {url!r}")
        self.url = url
        self.lifetime = lifetime
        self.min_interval = min_interval
        self.timeout = timeout
        self.keys: list[_PublicKey] = []
        self.fetched_at = -math.inf
        self.lock = threading.Lock()
        # The fetch in flight on an event loop (its token) and what tells its end: the
        # requests that come meanwhile wait for it instead of checking the old keys.
        self.in_flight: tuple[object, anyio.Event] | None = None

    async def ensure_fresh(self, kid: object) -> None:
        """Fetch the keys if due (in a worker thread; one fetch at a time per loop, the
        other requests waiting for it), giving up waiting after ``timeout`` (+1) seconds."""
        loop = anyio.lowlevel.current_token()
        flight = self.in_flight
        if flight is not None and flight[0] == loop:
            with anyio.move_on_after(self.timeout + 1):
                await flight[1].wait()
            return
        if not self.due(kid):
            return
        done = anyio.Event()
        self.in_flight = (loop, done)
        try:
            # (the thread ends by itself within twice the timeout: see refresh)
            with anyio.move_on_after(self.timeout + 1):
                await anyio.to_thread.run_sync(self.refresh, abandon_on_cancel=True)
        finally:
            if self.in_flight is not None and self.in_flight[1] is done:
                self.in_flight = None
            done.set()

    def due(self, kid: object) -> bool:
        age = time.monotonic() - self.fetched_at
        if age >= self.lifetime:
            return True
        known = any(key.kid == kid for key in self.keys)
        return kid is not None and not known and age >= self.min_interval

    def refresh(self) -> None:
        """Fetch the keys (blocking: call it from a worker thread); keep the old on failure."""
        with self.lock:
            if time.monotonic() - self.fetched_at < self.min_interval:
                return  # (another thread just did)
            self.fetched_at = started = time.monotonic()
            deadline = started + self.timeout  # for the whole fetch, not each read
            try:
                request = urllib.request.Request(self.url, headers={"accept": "application/json"})
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    chunks: list[bytes] = []
                    size = 0
                    while size <= _MAX_JWKS_BYTES:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise TimeoutError(f"the JWKS took over {self.timeout} s")
                        # (each read waits at most `timeout`: the whole is bounded by twice
                        # that, however slowly a server trickles its bytes)
                        chunk = response.read1(65536)
                        if not chunk:
                            break
                        chunks.append(chunk)
                        size += len(chunk)
                body = b"".join(chunks)
                if len(body) > _MAX_JWKS_BYTES:
                    raise ValueError("the JWKS is over 1 MiB")
                self.keys = _jwks_keys(json.loads(body))
            except Exception as exc:  # the old keys stay; a bad key set is logged, not raised
                log.warning("cannot fetch the JWKS at %s: %s", self.url, exc)


class TokenVerifier:
    """Checks tokens: the keys, the accepted algorithms, and the expected ``aud``/``iss``.

    - ``secret``: the shared secret of HS256/384/512 (at least 32 bytes recommended).
    - ``public_key``: a PEM public key (or certificate) for RS*/PS*/ES*/EdDSA.
    - ``jwks``: a JWKS (``{"keys": [...]}``, a dict or its JSON text), keys picked by
      ``kid``; ``jwks_url``: the same fetched over HTTP(S) in a worker thread, cached for
      ``jwks_lifetime`` seconds and fetched again, at most every ``jwks_min_interval``
      seconds, when a token names an unknown ``kid`` (key rotation).
    - ``algorithms``: the accepted ``alg`` values; by default those of the keys given
      (HS256/384/512 with a secret, by key type otherwise). ``none`` is never accepted,
      HMAC ones only with a secret.
    - ``audience``, ``issuer``: checked when given; ``leeway``: seconds of clock skew.

    `from_file` reads a PEM or JWKS file (the hub's ``--jwt-key PATH``).
    """

    def __init__(
        self,
        *,
        secret: str | bytes | None = None,
        public_key: str | bytes | None = None,
        jwks: Mapping[str, Any] | str | None = None,
        jwks_url: str | None = None,
        algorithms: Iterable[str] | None = None,
        audience: str | Iterable[str] | None = None,
        issuer: str | None = None,
        leeway: float = 0.0,
        jwks_lifetime: float = 300.0,
        jwks_min_interval: float = 10.0,
        jwks_timeout: float = 5.0,
    ) -> None:
        if secret is not None:
            if not isinstance(secret, (str, bytes)):
                raise TypeError(f"secret must be a str, bytes or None, not {type(secret).__name__}")
            if not secret.strip():
                raise ValueError("secret must not be empty (None turns tokens off)")
        self._secret = secret.encode() if isinstance(secret, str) else secret
        keys: list[_PublicKey] = []
        if public_key is not None:
            try:
                loaded = _load_pem(public_key)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"public_key is not a PEM public key: {exc}") from None
            keys.append(_PublicKey(None, loaded, _algorithms_of_key(loaded)))
        if jwks is not None:
            try:
                data = json.loads(jwks) if isinstance(jwks, str) else jwks
                keys += _jwks_keys(data)
            except (ValueError, TypeError, KeyError, jwt.PyJWTError) as exc:
                raise ValueError(f"jwks is not a usable JWKS: {exc}") from None
        self._keys = keys
        self._fetcher = (
            None
            if jwks_url is None
            else _JWKSFetcher(
                jwks_url,
                check_delay("jwks_lifetime", jwks_lifetime),
                check_delay("jwks_min_interval", jwks_min_interval),
                check_delay("jwks_timeout", jwks_timeout) or 1e-3,
            )
        )
        if self._secret is None and not keys and self._fetcher is None:
            raise ValueError("a TokenVerifier needs a secret, a public_key, a jwks or a jwks_url")
        offered = set(HMAC_ALGORITHMS if self._secret is not None else ())
        for key in keys:
            offered.update(key.algorithms)
        if self._fetcher is not None:
            offered.update(ASYMMETRIC_ALGORITHMS)
        if algorithms is None:
            accepted = offered
        else:
            accepted = set([algorithms] if isinstance(algorithms, str) else algorithms)
            unusable = sorted(accepted - offered)
            if unusable or not accepted:
                raise ValueError(
                    f"algorithms {unusable or '[]'} cannot be checked with the keys given "
                    f"(they allow {sorted(offered)})"
                )
        self.algorithms: frozenset[str] = frozenset(accepted)
        if isinstance(audience, str):
            audience = [audience]
        self.audience = None if audience is None else list(audience)
        if self.audience is not None and not (
            self.audience and all(isinstance(a, str) and a for a in self.audience)
        ):
            # (an empty list would refuse every token)
            raise ValueError(f"audience must be a non-empty str or list of them, not {audience!r}")
        if issuer is not None and not (isinstance(issuer, str) and issuer):
            raise ValueError(f"issuer must be a non-empty str or None, not {issuer!r}")
        self.issuer = issuer
        # (a NaN leeway would make PyJWT accept every expired token)
        self.leeway = check_delay("leeway", leeway)

    @classmethod
    def from_file(cls, path: str | Path, **options: Any) -> TokenVerifier:
        """A verifier for the PEM public key (or certificate) or JWKS in ``path``."""
        text = Path(path).read_text()
        if text.lstrip().startswith("{"):
            return cls(jwks=text, **options)
        return cls(public_key=text, **options)

    def __repr__(self) -> str:
        return (
            f"TokenVerifier(algorithms={sorted(self.algorithms)}, keys={len(self._keys)}, "
            f"jwks_url={None if self._fetcher is None else self._fetcher.url!r}, "
            f"audience={self.audience!r}, issuer={self.issuer!r})"
        )

    def verify(self, token: object) -> TokenClaims:
        """The claims of a valid token; `InvalidToken` otherwise (never anything else).

        With a ``jwks_url``, only the keys fetched so far are used: `verify_async` fetches
        them (`SSEApp` uses it); a verifier with only a ``jwks_url`` refuses every token
        here until `verify_async` has fetched once.
        """
        header = _header(token)
        return self._decode(str(token), header)

    async def verify_async(self, token: object) -> TokenClaims:
        """`verify`, fetching a ``jwks_url``'s keys first when due (in a worker thread)."""
        header = _header(token)
        fetcher = self._fetcher
        algorithm = header["alg"]
        # (an algorithm refused anyway fetches nothing: no fetch on `alg: none`)
        asymmetric = algorithm in self.algorithms and algorithm not in HMAC_ALGORITHMS
        if fetcher is not None and asymmetric:
            await fetcher.ensure_fresh(header.get("kid"))
        return self._decode(str(token), header)

    def _decode(self, token: str, header: dict[str, Any]) -> TokenClaims:
        algorithm = header["alg"]
        if algorithm not in self.algorithms:
            raise InvalidToken("the token's algorithm is not accepted")
        try:
            payload = jwt.decode(
                token,
                self._key(algorithm, header.get("kid")),
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp"]},
            )
            return _claims(payload)
        except InvalidToken:
            raise
        except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError) as exc:
            # (the signature was good: PyJWT checks times after it) PyJWT reads "123" as a
            # time; the contract says a number, whether or not it has passed.
            _check_times(jwt.decode(token, options={"verify_signature": False}))
            raise InvalidToken(_description(exc)) from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(_description(exc)) from None
        except (ValueError, TypeError, KeyError, OverflowError, RecursionError):
            raise InvalidToken("malformed token") from None

    def _key(self, algorithm: str, kid: object) -> Any:
        if algorithm in HMAC_ALGORITHMS:
            return self._secret  # (only ever the secret: never a public key's bytes)
        keys = self._keys + (self._fetcher.keys if self._fetcher is not None else [])
        usable = [key for key in keys if algorithm in key.algorithms]
        if kid is not None:
            # the key of that kid; else a key that has none (a PEM public key: IdPs put a
            # kid in every token, and a PEM cannot name one)
            named = [key for key in usable if key.kid == kid]
            usable = named or [key for key in usable if key.kid is None]
        if not usable:
            raise InvalidToken("no key for the token's kid and algorithm")
        if len(usable) > 1:
            raise InvalidToken("the token needs a kid to pick its key")
        return usable[0].key


def _header(token: object) -> dict[str, Any]:
    """The unverified header, with a string ``alg``; `InvalidToken` for anything else."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("malformed token")
    try:
        header = jwt.get_unverified_header(token)
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
        raise InvalidToken("malformed token") from None
    if not isinstance(header.get("alg"), str):
        raise InvalidToken("malformed token")
    return header


def _check_times(payload: dict[str, Any]) -> None:
    for name in ("exp", "nbf", "iat"):
        # a NumericDate is a JSON number (RFC 7519 2): PyJWT also takes "123" and true
        value = payload.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidToken(f"the token's {name} claim is not a time")


def _claims(payload: dict[str, Any]) -> TokenClaims:
    _check_times(payload)
    subject = payload.get("sub")
    if subject is not None and not isinstance(subject, str):
        raise InvalidToken("the token's sub claim is not a string")
    subject = subject or None  # an empty subject names nobody
    grants = payload.get(CLAIM, {})
    if not isinstance(grants, dict):
        raise InvalidToken("the token's sse claim is not an object")
    lists = []
    for action in ("subscribe", "publish"):
        patterns = grants.get(action, [])
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise InvalidToken(f"the token's sse.{action} claim is not a list of strings")
        lists.append(tuple(patterns))
    stats = grants.get("stats", False)
    if not isinstance(stats, bool):
        raise InvalidToken("the token's sse.stats claim is not a boolean")
    expires = float(payload["exp"])
    return TokenClaims(lists[0], lists[1], stats, expires, subject)


# -- minting -------------------------------------------------------------------------------


def create_token(
    key: str | bytes,
    *,
    channels: str | Iterable[str] = (),
    actions: str | Iterable[str] = ("subscribe",),
    ttl: float = 3600.0,
    subject: str | None = None,
    audience: str | None = None,
    issuer: str | None = None,
    algorithm: str = "HS256",
    key_id: str | None = None,
    now: float | None = None,
) -> str:
    """A JWT granting ``actions`` on ``channels`` (patterns: a name, ``"*"``,
    ``"prefix.*"``) for ``ttl`` seconds.

    ``key`` is the shared secret (HS256/384/512), or a PEM private key with ``algorithm``
    RS*/PS*/ES*/EdDSA (and ``key_id``, its JWKS ``kid``). ``stats`` grants the stats route
    whatever the channels. Any JWT library can mint the same: see the module's contract.
    """
    if not isinstance(key, (str, bytes)) or not key.strip():
        raise ValueError("the key (secret) must not be empty")
    if algorithm not in HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS:
        raise ValueError(
            f"algorithm must be one of {list(HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS)}"
        )
    channel_list = [channels] if isinstance(channels, str) else list(channels)
    action_list = [actions] if isinstance(actions, str) else list(actions)
    unknown = set(action_list) - ACTIONS
    if unknown or not action_list:
        raise ValueError(f"actions must be some of {sorted(ACTIONS)}, not {action_list!r}")
    if not all(isinstance(c, str) and c for c in channel_list):
        raise ValueError(f"channels must be non-empty strings, not {channel_list!r}")
    if not channel_list and {"subscribe", "publish"} & set(action_list):
        raise ValueError("channels must name at least one channel pattern to subscribe or publish")
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl < math.inf:
        raise ValueError(f"ttl must be a finite number of seconds > 0, not {ttl!r}")
    if subject is not None and not isinstance(subject, str):
        raise ValueError(f"subject must be a string, not {subject!r}")
    minted = time.time() if now is None else now
    issued = int(minted)
    grants: dict[str, Any] = {
        action: channel_list for action in ("subscribe", "publish") if action in action_list
    }
    if "stats" in action_list:
        grants["stats"] = True
    # exp rounded up: a token never lives less than its ttl (int(now) + ttl could lose up
    # to a second, and a ttl of 1 s made tokens already expired)
    payload: dict[str, Any] = {"exp": math.ceil(minted + ttl), "iat": issued}
    payload["jti"] = uuid.uuid4().hex  # (two tokens minted in one second differ)
    for name, value in (("sub", subject), ("aud", audience), ("iss", issuer)):
        if value is not None:
            payload[name] = value
    payload[CLAIM] = grants
    headers = None if key_id is None else {"kid": key_id}
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def verify_token(secret: str | bytes | TokenVerifier, token: object) -> TokenClaims:
    """The claims of ``token`` checked with ``secret`` (HS256/384/512) or a `TokenVerifier`;
    raises `InvalidToken` otherwise, whatever ``token`` holds."""
    verifier = secret if isinstance(secret, TokenVerifier) else TokenVerifier(secret=secret)
    return verifier.verify(token)
