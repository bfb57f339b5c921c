"""The token contract (sse_toolkit.tokens), unit level: no app, no server but a JWKS one.

Tokens minted by PyJWT directly (any JWT library can mint them) are verified by
`TokenVerifier` with a shared secret, a PEM public key, a JWKS (dict, text or file) or a
JWKS URL (a local HTTP server in a thread); every refusal is `InvalidToken` with a fixed
``description``; ``alg: none`` and algorithm confusion are refused; grants match names,
``"*"`` and ``"prefix.*"``; `create_token` round-trips. A property test throws any text and
near-JWTs (random headers, payloads and signatures) at every kind of verifier: nothing but
`InvalidToken` ever comes out (``SSE_TOOLKIT_TOKEN_EXAMPLES`` examples, 300 by default).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_toolkit.tokens import (
    MAX_TOKEN_LENGTH,
    InvalidToken,
    TokenClaims,
    TokenVerifier,
    create_token,
    verify_token,
)

EXAMPLES = int(os.environ.get("SSE_TOOLKIT_TOKEN_EXAMPLES", "300"))
SECRET = "a shared secret of at least 32 bytes, for HS512 too: 64 bytes long."
OTHER_SECRET = "another shared secret, as long, that nobody gave to the verifier here"
GRANTS = {"subscribe": ["room", "news.*"], "publish": ["room"], "stats": True}


# -- keys (made once per module: RSA keygen is slow) ---------------------------------------


@dataclass
class KeyPair:
    private: Any
    algorithm: str

    @property
    def private_pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def jwk(self, kid: str | None = None, *, alg: bool = True, private: bool = False) -> Any:
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        key = self.private if private else self.private.public_key()
        data = json.loads(algorithm.to_jwk(key))
        if kid is not None:
            data["kid"] = kid
        if alg:
            data["alg"] = self.algorithm
        return data


@pytest.fixture(scope="module")
def keys() -> dict[str, KeyPair]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "rsa": KeyPair(rsa_key, "RS256"),
        "rsa2": KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        "ec": KeyPair(ec.generate_private_key(ec.SECP256R1()), "ES256"),
        "ec384": KeyPair(ec.generate_private_key(ec.SECP384R1()), "ES384"),
        "ed": KeyPair(ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
    }


# Which key pair signs each asymmetric algorithm.
ASYMMETRIC = [
    ("RS256", "rsa"),
    ("RS384", "rsa"),
    ("RS512", "rsa"),
    ("PS256", "rsa"),
    ("PS512", "rsa"),
    ("ES256", "ec"),
    ("ES384", "ec384"),
    ("EdDSA", "ed"),
]


def self_signed_certificate(pair: KeyPair) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sse-toolkit tests")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pair.private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(pair.private, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


# -- minting and crafting ------------------------------------------------------------------


def claims(**extra: Any) -> dict[str, Any]:
    """A payload valid for five minutes, granting GRANTS (``extra`` overrides; None drops)."""
    payload: dict[str, Any] = {"exp": int(time.time()) + 300, "sse": GRANTS, **extra}
    return {name: value for name, value in payload.items() if value is not None}


def mint(key: Any = SECRET, algorithm: str = "HS256", kid: str | None = None, **extra: Any) -> str:
    headers = None if kid is None else {"kid": kid}
    return jwt.encode(claims(**extra), key, algorithm=algorithm, headers=headers)


def b64(data: bytes | str | Any) -> str:
    if isinstance(data, str):
        data = data.encode()
    elif not isinstance(data, bytes):
        data = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs_signed(header: dict[str, Any], payload: dict[str, Any], key: bytes, digest: Any) -> str:
    """A token signed with HMAC by hand (PyJWT refuses to sign with a PEM as the secret)."""
    signing_input = f"{b64(header)}.{b64(payload)}"
    signature = hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(signature)}"


def crafted(**extra: Any) -> str:
    """`mint` (HS256, SECRET) by hand: PyJWT refuses to encode some malformed claims."""
    return hs_signed(
        {"alg": "HS256", "typ": "JWT"}, claims(**extra), SECRET.encode(), hashlib.sha256
    )


def refusal(verifier: TokenVerifier, token: object) -> str:
    """The description of the InvalidToken ``verifier`` raises for ``token``."""
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token)
    assert type(caught.value) is InvalidToken
    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == caught.value.description
    return caught.value.description


# -- accepted: tokens minted by PyJWT directly ---------------------------------------------


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
@pytest.mark.parametrize("secret", [SECRET, SECRET.encode()])
def test_hmac_tokens_minted_by_pyjwt_are_accepted(algorithm: str, secret: str | bytes) -> None:
    token = mint(SECRET, algorithm, sub="alice")
    for verifier in (
        TokenVerifier(secret=secret),
        TokenVerifier(secret=secret, algorithms=[algorithm]),
    ):
        got = verifier.verify(token)
        assert got.subscribe == ("room", "news.*")
        assert got.publish == ("room",)
        assert got.stats is True
        assert got.subject == "alice"
        assert got.expires == jwt.decode(token, options={"verify_signature": False})["exp"]
    assert verify_token(secret, token) == verify_token(TokenVerifier(secret=secret), token)


@pytest.mark.parametrize(("algorithm", "pair"), ASYMMETRIC)
def test_asymmetric_tokens_are_accepted_with_the_public_key(
    keys: dict[str, KeyPair], algorithm: str, pair: str, tmp_path: Path
) -> None:
    key = keys[pair]
    token = mint(key.private_pem, algorithm, sub="bob")
    pem_file = tmp_path / "key.pem"
    pem_file.write_bytes(key.public_pem)
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [key.jwk("k1", alg=False)]}))
    verifiers = [
        TokenVerifier(public_key=key.public_pem),
        TokenVerifier(public_key=key.public_pem.decode()),
        TokenVerifier(public_key=key.private_pem),  # (its public half)
        TokenVerifier(public_key=key.public_pem, algorithms=[algorithm]),
        TokenVerifier.from_file(pem_file),
        TokenVerifier.from_file(str(pem_file)),
        TokenVerifier(jwks={"keys": [key.jwk(alg=False)]}),
        TokenVerifier(jwks={"keys": [{**key.jwk("k1"), "alg": algorithm}]}),
        TokenVerifier(jwks=json.dumps(key.jwk(alg=False))),  # a single JWK
        TokenVerifier.from_file(jwks_file),
        TokenVerifier(secret=SECRET, public_key=key.public_pem),
    ]
    for verifier in verifiers:
        got = verifier.verify(token)
        assert (got.subject, got.publish, got.stats) == ("bob", ("room",), True), verifier


def test_a_certificate_serves_as_the_public_key(keys: dict[str, KeyPair], tmp_path: Path) -> None:
    certificate = self_signed_certificate(keys["rsa"])
    (tmp_path / "cert.pem").write_bytes(certificate)
    token = mint(keys["rsa"].private_pem, "RS256")
    assert TokenVerifier(public_key=certificate).verify(token).stats
    assert TokenVerifier.from_file(tmp_path / "cert.pem").verify(token).stats


def test_a_verifier_with_a_secret_and_a_public_key_takes_both_kinds(
    keys: dict[str, KeyPair],
) -> None:
    verifier = TokenVerifier(secret=SECRET, public_key=keys["ec"].public_pem)
    assert verifier.algorithms == {"HS256", "HS384", "HS512", "ES256"}
    assert verifier.verify(mint(SECRET, "HS384")).stats
    assert verifier.verify(mint(keys["ec"].private_pem, "ES256")).stats


def test_a_jwk_with_its_private_parameters_verifies_with_its_public_half(
    keys: dict[str, KeyPair],
) -> None:
    for name in ("rsa", "ec", "ed"):
        key = keys[name]
        for alg in (True, False):
            verifier = TokenVerifier(jwks={"keys": [key.jwk("p", alg=alg, private=True)]})
            token = mint(key.private_pem, key.algorithm, kid="p")
            assert verifier.verify(token).stats, (name, alg)  # (RSA was a 500: AttributeError)


def test_encryption_keys_of_a_jwks_are_skipped(keys: dict[str, KeyPair]) -> None:
    """Keycloak's JWKS holds an ``RSA-OAEP`` key with ``use: enc`` next to its signing key."""
    enc = {**keys["rsa2"].jwk("enc"), "use": "enc", "alg": "RSA-OAEP"}
    verifier = TokenVerifier(jwks={"keys": [enc, {**keys["rsa"].jwk("sig"), "use": "sig"}]})
    assert verifier.verify(mint(keys["rsa"].private_pem, "RS256", kid="sig")).stats
    # one signing key left: a token without a kid is checked with it
    assert verifier.verify(mint(keys["rsa"].private_pem, "RS256")).stats
    assert refusal(verifier, mint(keys["rsa2"].private_pem, "RS256", kid="enc")) == (
        "no key for the token's kid and algorithm"
    )


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_verify_async_without_a_url_is_verify(backend: str, keys: dict[str, KeyPair]) -> None:
    verifier = TokenVerifier(secret=SECRET, public_key=keys["ed"].public_pem)

    async def main() -> None:
        assert (await verifier.verify_async(mint())).stats
        assert (await verifier.verify_async(mint(keys["ed"].private_pem, "EdDSA"))).stats
        with pytest.raises(InvalidToken, match="bad token signature"):
            await verifier.verify_async(mint(OTHER_SECRET))
        with pytest.raises(InvalidToken, match="malformed token"):
            await verifier.verify_async("garbage")

    anyio.run(main, backend=backend)


def test_leeway_accepts_a_token_just_expired() -> None:
    token = mint(exp=int(time.time()) - 5)
    assert refusal(TokenVerifier(secret=SECRET), token) == "the token has expired"
    assert TokenVerifier(secret=SECRET, leeway=30).verify(token).stats


def test_audience_and_issuer_when_configured() -> None:
    verifier = TokenVerifier(secret=SECRET, audience=["hub", "other"], issuer="https://auth")
    assert verifier.verify(mint(aud="hub", iss="https://auth")).stats
    assert verifier.verify(mint(aud=["x", "other"], iss="https://auth")).stats


# -- JWKS: two keys, picked by kid ---------------------------------------------------------


@pytest.fixture(scope="module")
def two_keys(keys: dict[str, KeyPair]) -> TokenVerifier:
    return TokenVerifier(jwks={"keys": [keys["rsa"].jwk("A"), keys["rsa2"].jwk("B")]})


def test_a_jwks_with_two_keys_picks_each_by_kid(
    keys: dict[str, KeyPair], two_keys: TokenVerifier, tmp_path: Path
) -> None:
    token_a = mint(keys["rsa"].private_pem, "RS256", kid="A", sub="a")
    token_b = mint(keys["rsa2"].private_pem, "RS256", kid="B", sub="b")
    assert two_keys.verify(token_a).subject == "a"
    assert two_keys.verify(token_b).subject == "b"
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [keys["rsa"].jwk("A"), keys["rsa2"].jwk("B")]}))
    from_file = TokenVerifier.from_file(path)
    assert (from_file.verify(token_a).subject, from_file.verify(token_b).subject) == ("a", "b")


def test_a_jwks_with_two_keys_refuses_the_wrong_one(
    keys: dict[str, KeyPair], two_keys: TokenVerifier
) -> None:
    wrong = mint(keys["rsa2"].private_pem, "RS256", kid="A")  # kid A, signed by key B
    assert refusal(two_keys, wrong) == "bad token signature"
    unknown = mint(keys["rsa"].private_pem, "RS256", kid="C")
    assert refusal(two_keys, unknown) == "no key for the token's kid and algorithm"
    no_kid = mint(keys["rsa"].private_pem, "RS256")
    assert refusal(two_keys, no_kid) == "the token needs a kid to pick its key"
    # the JWK says RS256: PS256 (same key type) is not accepted for it
    assert refusal(two_keys, mint(keys["rsa"].private_pem, "PS256", kid="A")) == (
        "the token's algorithm is not accepted"
    )


def test_mixed_key_types_pick_by_algorithm_and_kid(keys: dict[str, KeyPair]) -> None:
    verifier = TokenVerifier(jwks={"keys": [keys["rsa"].jwk("A"), keys["ec"].jwk("E")]})
    assert verifier.verify(mint(keys["ec"].private_pem, "ES256")).stats  # one ES256 key
    assert refusal(verifier, mint(keys["ec"].private_pem, "ES256", kid="A")) == (
        "no key for the token's kid and algorithm"
    )


# -- JWKS URL: a local server in a thread --------------------------------------------------


@dataclass
class JWKSServer:
    url: str = ""
    jwks: Any = None
    delay: float = 0.0
    status: int = 200
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def jwks_server(keys: dict[str, KeyPair]) -> Iterator[JWKSServer]:
    state = JWKSServer(jwks={"keys": [keys["rsa"].jwk("A")]})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with state.lock:
                state.requests += 1
            time.sleep(state.delay)
            body = state.jwks if isinstance(state.jwks, bytes) else json.dumps(state.jwks).encode()
            self.send_response(state.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def run(backend: str, verifier: TokenVerifier, *tokens: str) -> list[TokenClaims | str]:
    """``verify_async`` of each token in turn, on ``backend``: claims or the refusal."""

    async def main() -> list[TokenClaims | str]:
        results: list[TokenClaims | str] = []
        for token in tokens:
            try:
                results.append(await verifier.verify_async(token))
            except InvalidToken as exc:
                results.append(exc.description)
        return results

    return anyio.run(main, backend=backend)


BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])


@BACKENDS
def test_a_jwks_url_is_fetched_on_first_use(
    backend: str, keys: dict[str, KeyPair], jwks_server: JWKSServer
) -> None:
    verifier = TokenVerifier(jwks_url=jwks_server.url)
    token = mint(keys["rsa"].private_pem, "RS256", kid="A", sub="a")
    # verify (sync) uses only the keys fetched so far: none yet
    assert refusal(verifier, token) == "no key for the token's kid and algorithm"
    assert jwks_server.requests == 0
    (got,) = run(backend, verifier, token)
    assert isinstance(got, TokenClaims) and got.subject == "a"
    assert jwks_server.requests == 1
    assert run(backend, verifier, token, token) == [got, got]  # cached
    assert jwks_server.requests == 1
    assert verifier.verify(token) == got


@BACKENDS
def test_a_rotated_key_is_fetched_on_demand(
    backend: str, keys: dict[str, KeyPair], jwks_server: JWKSServer
) -> None:
    verifier = TokenVerifier(jwks_url=jwks_server.url, jwks_min_interval=0)
    token_a = mint(keys["rsa"].private_pem, "RS256", kid="A", sub="a")
    token_b = mint(keys["rsa2"].private_pem, "RS256", kid="B", sub="b")
    assert [c.subject for c in run(backend, verifier, token_a)] == ["a"]  # type: ignore[union-attr]
    jwks_server.jwks = {"keys": [keys["rsa"].jwk("A"), keys["rsa2"].jwk("B")]}
    (got,) = run(backend, verifier, token_b)
    assert isinstance(got, TokenClaims) and got.subject == "b"
    assert jwks_server.requests == 2
    # a known kid fetches nothing more; the old key still verifies
    assert [c.subject for c in run(backend, verifier, token_a, token_b)] == ["a", "b"]  # type: ignore[union-attr]
    assert jwks_server.requests == 2


@BACKENDS
def test_fetches_for_unknown_kids_are_rate_limited(
    backend: str, keys: dict[str, KeyPair], jwks_server: JWKSServer
) -> None:
    verifier = TokenVerifier(jwks_url=jwks_server.url, jwks_min_interval=0.5)
    token_a = mint(keys["rsa"].private_pem, "RS256", kid="A")
    unknown = [mint(keys["rsa"].private_pem, "RS256", kid=f"k{i}") for i in range(6)]
    results = run(backend, verifier, token_a, *unknown)
    assert isinstance(results[0], TokenClaims)
    assert results[1:] == ["no key for the token's kid and algorithm"] * 6
    assert jwks_server.requests == 1  # the first fetch only: the rest within min_interval
    time.sleep(0.6)
    run(backend, verifier, *unknown)
    assert jwks_server.requests == 2  # one more, once min_interval had passed


@BACKENDS
def test_a_failed_fetch_keeps_the_old_keys(
    backend: str, keys: dict[str, KeyPair], jwks_server: JWKSServer
) -> None:
    verifier = TokenVerifier(jwks_url=jwks_server.url, jwks_min_interval=0, jwks_lifetime=0)
    token_a = mint(keys["rsa"].private_pem, "RS256", kid="A")
    token_b = mint(keys["rsa2"].private_pem, "RS256", kid="B")
    assert isinstance(run(backend, verifier, token_a)[0], TokenClaims)
    for failure in ({"status": 500}, {"jwks": b"not json"}, {"jwks": {"keys": [{"kty": "oct"}]}}):
        jwks_server.status = failure.get("status", 200)  # type: ignore[assignment]
        jwks_server.jwks = failure.get("jwks", jwks_server.jwks)
        before = jwks_server.requests
        results = run(backend, verifier, token_a, token_b)
        assert jwks_server.requests > before  # (lifetime 0: each use fetches again)
        assert isinstance(results[0], TokenClaims), failure
        assert results[1] == "no key for the token's kid and algorithm"


@BACKENDS
def test_an_unreachable_jwks_url_refuses_tokens_without_raising(
    backend: str, keys: dict[str, KeyPair]
) -> None:
    with socket_closed_port() as port:
        verifier = TokenVerifier(jwks_url=f"http://127.0.0.1:{port}/jwks", jwks_timeout=2)
        token = mint(keys["rsa"].private_pem, "RS256", kid="A")
        assert run(backend, verifier, token) == ["no key for the token's kid and algorithm"]


@BACKENDS
def test_the_fetch_runs_off_the_event_loop(
    backend: str, keys: dict[str, KeyPair], jwks_server: JWKSServer
) -> None:
    jwks_server.delay = 0.3
    verifier = TokenVerifier(jwks_url=jwks_server.url)
    token = mint(keys["rsa"].private_pem, "RS256", kid="A", sub="a")
    ticks = 0

    async def main() -> TokenClaims:
        nonlocal ticks

        async def tick() -> None:
            nonlocal ticks
            while True:
                await anyio.sleep(0.01)
                ticks += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            started = time.monotonic()
            got = await verifier.verify_async(token)
            assert time.monotonic() - started >= 0.25
            tg.cancel_scope.cancel()
        return got

    assert anyio.run(main, backend=backend).subject == "a"
    assert ticks >= 10  # the loop kept running while the worker thread waited


@BACKENDS
def test_refused_algorithms_fetch_nothing(
    backend: str, keys: dict[str, KeyPair], jwks_server: JWKSServer
) -> None:
    verifier = TokenVerifier(jwks_url=jwks_server.url, jwks_min_interval=0)
    none = f"{b64({'alg': 'none', 'kid': 'X'})}.{b64(claims())}."
    hs = mint(SECRET, "HS256", kid="X")
    assert run(backend, verifier, none, hs, "garbage") == [
        "the token's algorithm is not accepted",
        "the token's algorithm is not accepted",
        "malformed token",
    ]
    assert jwks_server.requests == 0


def test_a_jwks_url_must_be_http() -> None:
    for url in ("file:///etc/passwd", "ftp://example.com/jwks", "example.com/jwks"):
        with pytest.raises(ValueError, match="jwks_url"):
            TokenVerifier(jwks_url=url)


class socket_closed_port:
    """A local port nothing listens on (bound, then closed)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        pass


# -- refusals, each with its description ---------------------------------------------------


def test_expired_and_not_yet_valid() -> None:
    verifier = TokenVerifier(secret=SECRET)
    now = int(time.time())
    assert refusal(verifier, mint(exp=now - 10)) == "the token has expired"
    assert refusal(verifier, mint(nbf=now + 60)) == "the token is not valid yet"
    assert refusal(verifier, mint(iat=now + 60)) == "the token is not valid yet"
    assert refusal(verifier, mint(exp=None)) == "the token has no exp claim"
    assert verifier.verify(mint(nbf=now - 1, iat=now - 1)).stats


def test_wrong_key() -> None:
    assert refusal(TokenVerifier(secret=SECRET), mint(OTHER_SECRET)) == "bad token signature"
    # a tampered payload under the right signature
    header, _, signature = mint().split(".")
    forged = f"{header}.{b64(claims(sse={'subscribe': ['*']}))}.{signature}"
    assert refusal(TokenVerifier(secret=SECRET), forged) == "bad token signature"


@pytest.mark.parametrize(
    ("algorithm", "pair", "other"),
    [("RS256", "rsa", "rsa2"), ("ES256", "ec", None), ("EdDSA", "ed", None)],
)
def test_wrong_public_key(
    keys: dict[str, KeyPair], algorithm: str, pair: str, other: str | None
) -> None:
    if other is None:  # another key of the same type
        private = (
            ec.generate_private_key(ec.SECP256R1())
            if algorithm == "ES256"
            else ed25519.Ed25519PrivateKey.generate()
        )
        signer = KeyPair(private, algorithm)
    else:
        signer = keys[other]
    verifier = TokenVerifier(public_key=keys[pair].public_pem)
    assert refusal(verifier, mint(signer.private_pem, algorithm)) == "bad token signature"


def test_audience() -> None:
    with_audience = TokenVerifier(secret=SECRET, audience="hub")
    assert refusal(with_audience, mint(aud="elsewhere")) == "the token is for another audience"
    assert refusal(with_audience, mint(aud=["a", "b"])) == "the token is for another audience"
    assert refusal(with_audience, crafted(aud=5)) == "the token is for another audience"
    assert refusal(with_audience, mint()) == "the token has no aud claim"
    # a token naming an audience, to a verifier that expects none
    assert refusal(TokenVerifier(secret=SECRET), mint(aud="hub")) == (
        "the token is for another audience"
    )


def test_issuer() -> None:
    verifier = TokenVerifier(secret=SECRET, issuer="https://auth")
    assert refusal(verifier, mint(iss="https://evil")) == "the token is from another issuer"
    assert refusal(verifier, crafted(iss=7)) == "the token is from another issuer"
    assert refusal(verifier, mint()) == "the token has no iss claim"
    assert TokenVerifier(secret=SECRET).verify(mint(iss="anyone")).stats  # not checked


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", ["", "c2ln"])
def test_alg_none_is_refused(keys: dict[str, KeyPair], alg: str, signature: str) -> None:
    token = f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(claims())}.{signature}"
    for verifier in (
        TokenVerifier(secret=SECRET),
        TokenVerifier(public_key=keys["rsa"].public_pem),
        TokenVerifier(secret=SECRET, public_key=keys["rsa"].public_pem),
        TokenVerifier(jwks={"keys": [keys["rsa"].jwk("A")]}),
    ):
        assert refusal(verifier, token) == "the token's algorithm is not accepted"


@pytest.mark.parametrize(
    ("alg", "digest"),
    [("HS256", hashlib.sha256), ("HS384", hashlib.sha384), ("HS512", hashlib.sha512)],
)
def test_algorithm_confusion_is_refused(keys: dict[str, KeyPair], alg: str, digest: Any) -> None:
    """HS256 with the public key's PEM as the HMAC secret: what a naive verifier accepts."""
    public_pem = keys["rsa"].public_pem
    for kid, headers in ((None, {"alg": alg, "typ": "JWT"}), ("A", {"alg": alg, "kid": "A"})):
        token = hs_signed(headers, claims(sse={"publish": ["*"]}), public_pem, digest)
        assert refusal(TokenVerifier(public_key=public_pem), token) == (
            "the token's algorithm is not accepted"
        )
        assert refusal(TokenVerifier(jwks={"keys": [keys["rsa"].jwk("A")]}), token) == (
            "the token's algorithm is not accepted"
        ), kid
        both = TokenVerifier(secret=SECRET, public_key=public_pem)
        assert refusal(both, token) == "bad token signature"
    # (the crafting is right: with the PEM as the secret, the HMAC checks out)
    raw = hs_signed({"alg": alg}, claims(), public_pem, digest)
    signing_input, _, signature = raw.rpartition(".")
    expected = hmac.new(public_pem, signing_input.encode(), digest).digest()
    assert base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)) == expected


def test_an_algorithm_outside_an_explicit_list_is_refused(keys: dict[str, KeyPair]) -> None:
    hs256_only = TokenVerifier(secret=SECRET, algorithms=["HS256"])
    assert hs256_only.algorithms == {"HS256"}
    assert hs256_only.verify(mint(SECRET, "HS256")).stats
    assert refusal(hs256_only, mint(SECRET, "HS512")) == "the token's algorithm is not accepted"
    rs256_only = TokenVerifier(public_key=keys["rsa"].public_pem, algorithms="RS256")
    assert refusal(rs256_only, mint(keys["rsa"].private_pem, "PS256")) == (
        "the token's algorithm is not accepted"
    )
    assert refusal(rs256_only, mint(SECRET, "HS256")) == "the token's algorithm is not accepted"


@pytest.mark.parametrize(
    ("extra", "description"),
    [
        ({"sse": ["room"]}, "the token's sse claim is not an object"),
        ({"sse": "subscribe"}, "the token's sse claim is not an object"),
        (
            {"sse": {"subscribe": "room"}},
            "the token's sse.subscribe claim is not a list of strings",
        ),
        ({"sse": {"subscribe": [1]}}, "the token's sse.subscribe claim is not a list of strings"),
        (
            {"sse": {"subscribe": {"room": 1}}},
            "the token's sse.subscribe claim is not a list of strings",
        ),
        (
            {"sse": {"publish": ["room", None]}},
            "the token's sse.publish claim is not a list of strings",
        ),
        ({"sse": {"stats": "true"}}, "the token's sse.stats claim is not a boolean"),
        ({"sse": {"stats": 1}}, "the token's sse.stats claim is not a boolean"),
        ({"sub": 5}, "the token's sub claim is not a string"),
        ({"sub": ["a"]}, "the token's sub claim is not a string"),
        ({"iat": "yesterday"}, "the token's iat claim is not a time"),
        ({"exp": "soon"}, "malformed token"),
        ({"exp": [1]}, "malformed token"),
        ({"exp": {"at": 1}}, "malformed token"),
        ({"exp": 10**400}, "malformed token"),
        ({"exp": True}, "the token's exp claim is not a time"),
        ({"exp": str(int(time.time()) + 60)}, "the token's exp claim is not a time"),
        ({"nbf": str(int(time.time()) - 60)}, "the token's nbf claim is not a time"),
        ({"iat": str(int(time.time()) - 60)}, "the token's iat claim is not a time"),
        ({"nbf": False}, "the token's nbf claim is not a time"),
        ({"nbf": "now"}, "malformed token"),
    ],
)
def test_malformed_claims(extra: dict[str, Any], description: str) -> None:
    token = crafted(**extra)
    assert refusal(TokenVerifier(secret=SECRET), token) == description


def test_exp_as_1e400_is_malformed() -> None:
    """JSON's 1e400 is float('inf') in Python: int() of it raises OverflowError."""
    for raw in ("1e400", "-1e400", "NaN", "Infinity"):
        payload = b64(b'{"exp":' + raw.encode() + b',"sse":{}}')
        signing_input = f"{b64({'alg': 'HS256'})}.{payload}"
        signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
        token = f"{signing_input}.{b64(signature)}"
        assert refusal(TokenVerifier(secret=SECRET), token) == "malformed token", raw


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "",
        " ",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "...",
        "é.é.é",
        "eyJhbGciOiJIUzI1NiJ9.é.x",
        "\x00\x01\x02",
        "\ud800.\udfff.x",  # lone surrogates: not even UTF-8
        "a" * (MAX_TOKEN_LENGTH + 1),
        b64({"alg": "HS256"}) + "." + "a" * MAX_TOKEN_LENGTH + ".x",
        b64("not json") + "." + b64(claims()) + ".x",
        b64([1, 2]) + "." + b64(claims()) + ".x",
        b64({"alg": 256}) + "." + b64(claims()) + ".x",
        b64({"alg": None}) + "." + b64(claims()) + ".x",
        b64({"typ": "JWT"}) + "." + b64(claims()) + ".x",
        b64({"alg": "HS256", "kid": 5}) + "." + b64(claims()) + ".x",
    ],
)
def test_garbage_is_malformed(token: str) -> None:
    assert refusal(TokenVerifier(secret=SECRET), token) == "malformed token"


@pytest.mark.parametrize("token", [None, 42, b"bytes", ["a.b.c"], object()])
def test_not_a_string_is_malformed(token: object) -> None:
    assert refusal(TokenVerifier(secret=SECRET), token) == "malformed token"
    with pytest.raises(InvalidToken, match="malformed token"):
        verify_token(SECRET, token)


def test_a_valid_token_as_bytes_is_malformed() -> None:
    assert refusal(TokenVerifier(secret=SECRET), mint().encode()) == "malformed token"


def test_a_payload_that_is_not_an_object_is_malformed() -> None:
    for payload in ([1], "text", 5, None):
        signing_input = f"{b64({'alg': 'HS256'})}.{b64(payload)}"
        signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
        token = f"{signing_input}.{b64(signature)}"
        assert refusal(TokenVerifier(secret=SECRET), token) == "malformed token"


# -- grants --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "channel", "allowed"),
    [
        ("room", "room", True),
        ("room", "room2", False),
        ("room", "roo", False),
        ("*", "anything", True),
        ("*", "news.sport", True),
        ("news.*", "news.sport", True),
        ("news.*", "news.a.b", True),
        ("news.*", "news.", True),
        ("news.*", "news", False),
        ("news.*", "newsroom", False),
        ("news.*", "old.news.sport", False),
        ("news", "news.sport", False),
        ("news*", "newsroom", False),
        ("a.b.*", "a.b.c", True),
        ("a.b.*", "a.bc", False),
    ],
)
def test_channel_patterns(pattern: str, channel: str, allowed: bool) -> None:
    granted = TokenVerifier(secret=SECRET).verify(mint(sse={"subscribe": [pattern]}))
    assert granted.allows(channel, "subscribe") is allowed
    assert granted.allows(channel, "publish") is False  # subscribe only


def test_each_action_is_its_own_grant() -> None:
    verifier = TokenVerifier(secret=SECRET)
    granted = verifier.verify(mint(sse={"publish": ["room"], "stats": False}))
    assert granted.allows("room", "publish")
    assert not granted.allows("room", "subscribe")
    assert not granted.allows("*", "stats")
    assert not granted.allows("room", "delete")
    stats = verifier.verify(mint(sse={"stats": True}))
    assert stats.allows("*", "stats") and stats.allows("anything", "stats")
    assert not stats.allows("room", "subscribe") and not stats.allows("room", "publish")


def test_a_token_without_the_sse_claim_grants_nothing() -> None:
    for extra in ({"sse": None}, {"sse": {}}, {"sse": {"subscribe": [], "publish": []}}):
        granted = TokenVerifier(secret=SECRET).verify(mint(**extra))
        assert (granted.subscribe, granted.publish, granted.stats) == ((), (), False)
        for action in ("subscribe", "publish", "stats"):
            assert not granted.allows("room", action)


def test_other_claims_are_ignored() -> None:
    token = mint(sse={"subscribe": ["room"], "admin": True}, roles=["x"], jti="j1")
    assert TokenVerifier(secret=SECRET).verify(token).subscribe == ("room",)


# -- create_token --------------------------------------------------------------------------


def decoded(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return jwt.get_unverified_header(token), jwt.decode(
        token, options={"verify_signature": False, "verify_exp": False}
    )


def test_create_token_round_trip() -> None:
    before = int(time.time())
    token = create_token(
        SECRET,
        channels=["room", "news.*"],
        actions=["subscribe", "publish", "stats"],
        ttl=90,
        subject="alice",
        audience="hub",
        issuer="https://auth",
    )
    header, payload = decoded(token)
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert before <= payload["iat"] <= int(time.time())
    assert payload["iat"] + 90 <= payload["exp"] <= payload["iat"] + 91  # (rounded up)
    assert (payload["sub"], payload["aud"], payload["iss"]) == ("alice", "hub", "https://auth")
    assert payload["sse"] == {
        "subscribe": ["room", "news.*"],
        "publish": ["room", "news.*"],
        "stats": True,
    }
    assert isinstance(payload["jti"], str)
    verifier = TokenVerifier(secret=SECRET, audience="hub", issuer="https://auth")
    got = verifier.verify(token)
    assert got == TokenClaims(("room", "news.*"), ("room", "news.*"), True, payload["exp"], "alice")
    # PyJWT alone reads it the same (any library can)
    assert jwt.decode(token, SECRET, algorithms=["HS256"], audience="hub")["sse"]["stats"]


def test_create_token_defaults_and_now() -> None:
    _, payload = decoded(create_token(SECRET, channels="room", now=0, ttl=0.2))
    assert (payload["iat"], payload["exp"]) == (0, 1)  # ttl rounded up to whole seconds
    assert payload["sse"] == {"subscribe": ["room"]}
    assert "sub" not in payload and "aud" not in payload and "iss" not in payload
    assert refusal(TokenVerifier(secret=SECRET), create_token(SECRET, channels="c", now=0)) == (
        "the token has expired"
    )
    _, stats_only = decoded(create_token(SECRET, actions="stats"))
    assert stats_only["sse"] == {"stats": True}
    assert create_token(SECRET, channels="c") != create_token(SECRET, channels="c")  # jti


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_create_token_with_other_hmac_algorithms(algorithm: str) -> None:
    token = create_token(SECRET.encode(), channels="c", algorithm=algorithm, key_id="k")
    assert decoded(token)[0] == {"alg": algorithm, "typ": "JWT", "kid": "k"}
    assert TokenVerifier(secret=SECRET).verify(token).subscribe == ("c",)


@pytest.mark.parametrize(
    ("algorithm", "pair"), [("RS256", "rsa"), ("PS256", "rsa"), ("ES256", "ec"), ("EdDSA", "ed")]
)
def test_create_token_with_a_private_key_verified_by_a_jwks(
    keys: dict[str, KeyPair], algorithm: str, pair: str
) -> None:
    key = keys[pair]
    for pem in (key.private_pem, key.private_pem.decode()):
        token = create_token(pem, channels="room", algorithm=algorithm, key_id="k1")
        assert decoded(token)[0]["kid"] == "k1"
        jwks = {"keys": [key.jwk("k1", alg=False), keys["rsa2"].jwk("k2")]}
        assert TokenVerifier(jwks=jwks).verify(token).subscribe == ("room",)
        assert TokenVerifier(public_key=key.public_pem).verify(token).subscribe == ("room",)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"key": ""}, "key"),
        ({"key": b""}, "key"),
        ({"key": "   "}, "key"),
        ({"key": None}, "key"),
        ({"key": 42}, "key"),
        ({"actions": "delete"}, "actions"),
        ({"actions": ["subscribe", "subscibe"]}, "actions"),
        ({"actions": []}, "actions"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": -5}, "ttl"),
        ({"ttl": math.inf}, "ttl"),
        ({"ttl": math.nan}, "ttl"),
        ({"ttl": True}, "ttl"),
        ({"ttl": "60"}, "ttl"),
        ({"channels": ()}, "channels"),
        ({"channels": [""]}, "channels"),
        ({"channels": ["ok", 5]}, "channels"),
        ({"channels": [], "actions": "publish"}, "channels"),
        ({"subject": 5}, "subject"),
        ({"algorithm": "none"}, "algorithm"),
        ({"algorithm": "HS1"}, "algorithm"),
    ],
)
def test_create_token_refuses_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    arguments: dict[str, Any] = {"key": SECRET, "channels": "room", **kwargs}
    key = arguments.pop("key")
    with pytest.raises(ValueError, match=match):
        create_token(key, **arguments)


# -- TokenVerifier construction ------------------------------------------------------------


def test_construction_errors(keys: dict[str, KeyPair]) -> None:
    public = keys["rsa"].public_pem
    with pytest.raises(ValueError, match="needs a secret, a public_key, a jwks or a jwks_url"):
        TokenVerifier()
    for empty in ("", b"", "   "):
        with pytest.raises(ValueError, match="secret must not be empty"):
            TokenVerifier(secret=empty)
    with pytest.raises(TypeError, match="secret"):
        TokenVerifier(secret=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot be checked with the keys given"):
        TokenVerifier(public_key=public, algorithms=["HS256"])
    with pytest.raises(ValueError, match="cannot be checked with the keys given"):
        TokenVerifier(public_key=public, algorithms=["ES256"])
    for algorithms in (["none"], ["HS256", "none"], [], ["hs256"]):
        with pytest.raises(ValueError, match="algorithms"):
            TokenVerifier(secret=SECRET, algorithms=algorithms)
    for pem in (
        "not a pem",
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        SECRET,
    ):
        with pytest.raises(ValueError, match="public_key is not a PEM public key"):
            TokenVerifier(public_key=pem)
    secp256k1 = KeyPair(ec.generate_private_key(ec.SECP256K1()), "ES256K")
    with pytest.raises(ValueError, match="unsupported elliptic curve"):
        TokenVerifier(public_key=secp256k1.public_pem)
    hmac_jwk = {"kty": "oct", "k": b64(SECRET), "alg": "HS256"}
    bad_jwks: list[Any] = [
        {"keys": [hmac_jwk]},
        {"keys": [keys["rsa"].jwk("A"), hmac_jwk]},
        {"keys": []},
        {"keys": "x"},
        {"keys": [5]},
        {"keys": [{}]},  # no kty (PyJWT's InvalidKeyError escaped before)
        {"keys": [{"kty": "RSA", "n": "AQAB"}]},  # no e
        {"keys": [{**keys["rsa"].jwk(), "alg": "none"}]},  # (NotImplementedError before)
        {"keys": [{**keys["rsa"].jwk(), "alg": "HS256"}]},
        {"keys": [{**keys["rsa"].jwk(), "use": "enc"}]},  # no signing key
        {"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]},
        "not json",
        "[1, 2]",
        "5",
    ]
    for jwks in bad_jwks:
        with pytest.raises(ValueError, match="jwks is not a usable JWKS"):
            TokenVerifier(jwks=jwks)
    for leeway in (math.nan, -1, math.inf, "5"):
        with pytest.raises(ValueError, match="leeway"):
            TokenVerifier(secret=SECRET, leeway=leeway)  # type: ignore[arg-type]
    for audience in ([], [""], [5], ""):
        with pytest.raises(ValueError, match="audience"):
            TokenVerifier(secret=SECRET, audience=audience)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="issuer"):
        TokenVerifier(secret=SECRET, issuer="")
    with pytest.raises(ValueError, match="jwks_min_interval"):
        TokenVerifier(jwks_url="https://auth.example/jwks", jwks_min_interval=math.nan)


def test_from_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        TokenVerifier.from_file(tmp_path / "missing.pem")
    (tmp_path / "bad.json").write_text('{"keys": [{"kty": "oct", "k": "AAAA"}]}')
    with pytest.raises(ValueError, match="public keys only"):
        TokenVerifier.from_file(tmp_path / "bad.json")
    (tmp_path / "bad.pem").write_text("hello")
    with pytest.raises(ValueError, match="public_key"):
        TokenVerifier.from_file(tmp_path / "bad.pem")


def test_repr_shows_no_secret(keys: dict[str, KeyPair]) -> None:
    verifier = TokenVerifier(secret=SECRET, public_key=keys["ec"].public_pem, audience="hub")
    text = repr(verifier)
    assert SECRET not in text and "ES256" in text and "hub" in text


# -- property: nothing but InvalidToken, whatever the token --------------------------------

any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=80)
latin1 = st.binary(max_size=120).map(lambda b: b.decode("latin-1"))
ALGS = ["HS256", "HS384", "HS512", "RS256", "PS256", "ES256", "ES384", "EdDSA", "none", "None", ""]
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),  # NaN and infinities: written as NaN / Infinity, which json.loads reads
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
RAW_NUMBERS = ["1e400", "-1e400", "1e308", "9" * 400, "9" * 5000, "-0", "1.5", "NaN", "Infinity"]


@st.composite
def raw_json_value(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> str:
    """JSON text of a value, or a raw number json.dumps never writes (1e400, 5000 digits)."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.sampled_from(RAW_NUMBERS))
    return json.dumps(draw(values))


def raw_object(fields: dict[str, str]) -> str:
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields.items()) + "}"


def mostly(sane: st.SearchStrategy[Any], wild: st.SearchStrategy[Any]) -> Any:
    """``sane`` three times in four, else ``wild``: tokens that get past the first check."""
    return st.one_of(sane, sane, sane, wild)


def raw_mostly(draw: st.DrawFn, sane: st.SearchStrategy[Any]) -> str:
    """JSON text: mostly ``sane``; else any value, or a raw number (1e400, 5000 digits)."""
    if draw(st.integers(0, 3)):
        return json.dumps(draw(sane))
    return draw(raw_json_value(json_values))


@st.composite
def near_header(draw: st.DrawFn) -> str:
    fields: dict[str, str] = {}
    if draw(st.integers(0, 19)):
        fields["alg"] = raw_mostly(draw, st.sampled_from(ALGS))
    if draw(st.booleans()):
        fields["kid"] = raw_mostly(draw, st.sampled_from(["A", "B", "k1", "C", ""]))
    if draw(st.integers(0, 4)) == 0:
        names = st.sampled_from(["typ", "crit", "b64", "jku", "x5u", "jwk", "cty"])
        for name in draw(st.lists(names, max_size=2)):
            fields[name] = json.dumps(draw(json_values))
    if draw(st.integers(0, 19)) == 0:
        return draw(raw_json_value(json_values))  # not an object
    return raw_object(fields)


@st.composite
def near_payload(draw: st.DrawFn) -> str:
    fields: dict[str, str] = {}
    soon = st.integers(-100, 1000).map(lambda delta: int(time.time()) + delta)
    past = st.integers(-1000, 10).map(lambda delta: int(time.time()) + delta)
    if draw(st.integers(0, 19)):
        fields["exp"] = raw_mostly(draw, soon)
    for name in ("nbf", "iat"):
        if draw(st.integers(0, 2)) == 0:
            fields[name] = raw_mostly(draw, past)
    for name, values in (
        ("sub", st.text(max_size=8)),
        ("aud", st.sampled_from(["hub", "other"])),
        ("iss", st.sampled_from(["https://auth", "https://evil"])),
        ("jti", st.text(max_size=8)),
    ):
        if draw(st.integers(0, 3)) == 0:
            fields[name] = raw_mostly(draw, values)
    patterns = mostly(
        st.lists(st.sampled_from(["room", "*", "news.*", "", "a.b"]), max_size=3), json_values
    )
    grant = st.fixed_dictionaries(
        {},
        optional={
            "subscribe": patterns,
            "publish": patterns,
            "stats": mostly(st.booleans(), json_values),
            "other": json_values,
        },
    )
    if draw(st.integers(0, 3)):
        fields["sse"] = raw_mostly(draw, grant)
    if draw(st.integers(0, 19)) == 0:
        return draw(raw_json_value(json_values))  # not an object
    return raw_object(fields)


@st.composite
def near_jwt(draw: st.DrawFn, signers: dict[str, Callable[[bytes], bytes]]) -> str:
    header = draw(near_header())
    payload = draw(near_payload())
    encoded = [b64(header), b64(payload)]
    signing_input = ".".join(encoded).encode()
    kind = draw(st.sampled_from(["valid", "valid", "valid", "random", "empty", "confusion"]))
    try:
        alg = json.loads(header).get("alg")
    except (ValueError, AttributeError):
        alg = None
    if kind == "valid" and isinstance(alg, str) and alg in signers:
        signature = b64(signers[alg](signing_input))
    elif kind == "confusion":
        signature = b64(signers["confusion"](signing_input))
    elif kind == "empty":
        signature = ""
    else:
        signature = draw(st.one_of(st.binary(max_size=300).map(b64), any_text))
    parts = [*encoded, signature]
    count = draw(st.sampled_from([3, 3, 3, 3, 3, 2, 4]))  # (2 or 4 parts: malformed)
    if count == 2:
        parts = parts[:2]
    elif count == 4:
        parts.append(draw(st.one_of(st.binary(max_size=20).map(b64), any_text)))
    if draw(st.integers(0, 19)) == 0:  # one part replaced by any text
        index = draw(st.integers(0, len(parts) - 1))
        parts[index] = draw(any_text)
    return ".".join(parts)


@dataclass
class Fixture:
    verifiers: list[TokenVerifier]
    signers: dict[str, Callable[[bytes], bytes]]


@pytest.fixture(scope="module")
def property_fixture(keys: dict[str, KeyPair]) -> Fixture:
    rsa_key, ec_key, ed_key = keys["rsa"].private, keys["ec"].private, keys["ed"].private
    public = keys["rsa"].public_pem

    def jws(alg: str, key: Any) -> Callable[[bytes], bytes]:
        algorithm = jwt.get_algorithm_by_name(alg)
        return lambda data: algorithm.sign(data, algorithm.prepare_key(key))

    signers: dict[str, Callable[[bytes], bytes]] = {
        "HS256": lambda data: hmac.new(SECRET.encode(), data, hashlib.sha256).digest(),
        "HS384": lambda data: hmac.new(SECRET.encode(), data, hashlib.sha384).digest(),
        "HS512": lambda data: hmac.new(SECRET.encode(), data, hashlib.sha512).digest(),
        "RS256": jws("RS256", rsa_key),
        "PS256": jws("PS256", rsa_key),
        "ES256": jws("ES256", ec_key),
        "EdDSA": jws("EdDSA", ed_key),
        "confusion": lambda data: hmac.new(public, data, hashlib.sha256).digest(),
    }
    jwks = {"keys": [keys["rsa"].jwk("A"), keys["rsa2"].jwk("B"), keys["ec"].jwk("k1")]}
    verifiers = [
        TokenVerifier(secret=SECRET),
        TokenVerifier(public_key=public),
        TokenVerifier(secret=SECRET, public_key=keys["ec"].public_pem, audience="hub"),
        TokenVerifier(jwks=jwks),
        TokenVerifier(public_key=keys["ed"].public_pem, issuer="https://auth", leeway=5),
    ]
    return Fixture(verifiers, signers)


DESCRIPTION = re.compile(r"[ -~]+")


def check_outcome(outcome: TokenClaims | InvalidToken) -> None:
    if isinstance(outcome, InvalidToken):
        assert type(outcome) is InvalidToken
        # safe in a quoted WWW-Authenticate parameter
        assert DESCRIPTION.fullmatch(outcome.description) and '"' not in outcome.description
        assert "\\" not in outcome.description
        return
    assert isinstance(outcome, TokenClaims)
    assert all(isinstance(p, str) for p in outcome.subscribe + outcome.publish)
    assert isinstance(outcome.stats, bool)
    assert isinstance(outcome.expires, float) and math.isfinite(outcome.expires)
    assert outcome.subject is None or isinstance(outcome.subject, str)


def outcome_of(verifier: TokenVerifier, token: object) -> TokenClaims | InvalidToken:
    try:
        return verifier.verify(token)
    except InvalidToken as exc:
        return exc


async def async_outcome_of(verifier: TokenVerifier, token: object) -> TokenClaims | InvalidToken:
    try:
        return await verifier.verify_async(token)
    except InvalidToken as exc:
        return exc


def tokens_for(fixture: Fixture) -> st.SearchStrategy[str]:
    return st.one_of(
        any_text,
        latin1,
        near_jwt(fixture.signers),
        near_jwt(fixture.signers),
        near_jwt(fixture.signers),
    )


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_no_token_makes_verification_raise_anything_but_invalid_token(
    backend: str, property_fixture: Fixture
) -> None:
    outcomes: dict[str, int] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(token=tokens_for(property_fixture))
    def check(token: str) -> None:
        async def main() -> list[TokenClaims | InvalidToken]:
            return [await async_outcome_of(v, token) for v in property_fixture.verifiers]

        synchronous = [outcome_of(v, token) for v in property_fixture.verifiers]
        asynchronous = anyio.run(main, backend=backend)
        for sync, async_ in zip(synchronous, asynchronous, strict=True):
            check_outcome(sync)
            check_outcome(async_)
            if isinstance(sync, InvalidToken):
                assert isinstance(async_, InvalidToken)
                assert sync.description == async_.description
            else:
                assert sync == async_
            key = "accepted" if isinstance(sync, TokenClaims) else sync.description
            outcomes[key] = outcomes.get(key, 0) + 1

    check()
    # The strategy reaches past the signature check (claims are parsed), not only garbage.
    if EXAMPLES >= 100:
        assert "malformed token" in outcomes and "bad token signature" in outcomes, outcomes
        assert len(outcomes) >= 6, outcomes


def test_the_strategy_reaches_valid_tokens(property_fixture: Fixture) -> None:
    """A near-JWT with a valid signature and good claims passes: the property is not vacuous."""
    now = int(time.time())
    for alg in ("HS256", "RS256", "ES256"):
        header = json.dumps({"alg": alg})
        payload = json.dumps({"exp": now + 60, "sse": {"subscribe": ["room"]}})
        signing_input = f"{b64(header)}.{b64(payload)}".encode()
        token = f"{signing_input.decode()}.{b64(property_fixture.signers[alg](signing_input))}"
        accepted = [
            v for v in property_fixture.verifiers if isinstance(outcome_of(v, token), TokenClaims)
        ]
        assert accepted, alg


def test_a_stream_lasts_until_exp_plus_the_verifiers_leeway() -> None:
    """A token accepted thanks to the leeway gets a stream that lasts the leeway out, not
    one that ends at once (which would make the client reconnect in a loop)."""
    from sse_toolkit import Auth, TokenVerifier

    expired = create_token(SECRET, channels="c", ttl=1, now=time.time() - 5)
    auth = Auth(TokenVerifier(secret=SECRET, leeway=60))
    claims = auth.verifier.verify(expired)  # type: ignore[union-attr]
    left = auth.seconds_left(claims)
    assert left is not None and 50 < left <= 57
    assert Auth(SECRET).seconds_left(None) is None
    strict = Auth(SECRET).seconds_left(claims)
    assert strict == 0.0


@BACKENDS
def test_requests_during_a_fetch_wait_for_it_instead_of_being_refused(
    backend: str, keys: dict[str, KeyPair], jwks_server: JWKSServer
) -> None:
    """A cold start (or a rotation) with a slow JWKS: every request that comes while the
    keys are fetched waits for that one fetch, and is then accepted."""
    jwks_server.delay = 0.5
    verifier = TokenVerifier(jwks_url=jwks_server.url)
    token = mint(keys["rsa"].private_pem, "RS256", kid="A", sub="a")
    results: list[object] = []

    async def main() -> None:
        async def check() -> None:
            try:
                results.append(await verifier.verify_async(token))
            except InvalidToken as exc:
                results.append(exc.description)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(6):  # spread over the fetch (a schedule, not a wait)
                    tg.start_soon(check)
                    await anyio.sleep(0.05)

    anyio.run(main, backend=backend)
    assert [type(r) for r in results] == [TokenClaims] * 6, results
    assert jwks_server.requests == 1


def test_a_trickling_jwks_server_is_given_up_within_twice_the_timeout(
    keys: dict[str, KeyPair],
) -> None:
    """A server that sends one byte every 0.2 s never makes a per-read timeout fire: the
    whole fetch has a deadline, and the request stops waiting after the timeout."""
    import socket as socket_module

    listener = socket_module.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
            while not stop.wait(0.2):
                try:
                    conn.sendall(b" ")
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        verifier = TokenVerifier(jwks_url=f"http://127.0.0.1:{port}/jwks", jwks_timeout=1)
        token = mint(keys["rsa"].private_pem, "RS256", kid="A")
        started = time.monotonic()
        assert run("asyncio", verifier, token) == ["no key for the token's kid and algorithm"]
        assert time.monotonic() - started < 3.0
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def test_a_token_lives_at_least_its_ttl_and_an_empty_subject_is_nobody() -> None:
    for now in (1000.0, 1000.2, 1000.999):
        claims = jwt.decode(
            create_token(SECRET, channels="c", ttl=1, now=now),
            SECRET,
            algorithms=["HS256"],
            options={"verify_exp": False},
        )
        assert claims["exp"] >= now + 1
    token = jwt.encode({"exp": int(time.time()) + 60, "sub": ""}, SECRET, algorithm="HS256")
    assert TokenVerifier(secret=SECRET).verify(token).subject is None
