"""Issue 14: the hub (``python -m sse_toolkit``, a real process) takes standard JWTs.

Tokens minted by PyJWT directly, by Node's ``jose`` (tests/node/mint.mjs, run with the
machine's node) and by the ``token`` command are accepted: HS256 with ``--secret``, RS256
and ES256 with ``--jwt-key pub.pem``, a JWKS file of two keys picked by ``kid``, a JWKS
URL. Every refusal is checked over HTTP with its exact status and ``WWW-Authenticate``
header; an open stream ends when its token expires.

Node tests skip when tests/node/node_modules is missing (``npm ci --prefix tests/node``),
except in CI (``CI=true``), where they fail instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from httpx_sse import connect_sse

from .sse_servers import HubProcess, hub_process, until_sync

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "node"
WAIT = 5.0
SECRET = "a-shared-secret-of-64-bytes-for-hs512-" + "0123456789abcdef0123456789"
AUDIENCE = "sse-hub"
ISSUER = "https://auth.example"
JSON = {"content-type": "application/json"}
HUB = ("--allow-publish", "--stats")


# -- keys (generated once per module) ------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    private_pem: str  # PKCS#8: what jose's importPKCS8 and PyJWT both read
    public_pem: str
    private_path: Path
    public_path: Path
    public_key: Any


def key_pair(private: Any, folder: Path, name: str) -> KeyPair:
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    private_path, public_path = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private_path.write_text(private_pem)
    public_path.write_text(public_pem)
    return KeyPair(private_pem, public_pem, private_path, public_path, private.public_key())


@dataclass(frozen=True)
class Keys:
    rsa: KeyPair
    other_rsa: KeyPair  # the wrong key
    ec: KeyPair
    ec_next: KeyPair  # the JWKS's second key (rotation)
    ed: KeyPair
    jwks: dict[str, Any]  # ec (kid "2024") and ec_next (kid "2025")
    jwks_path: Path
    folder: Path


def public_jwk(pair: KeyPair, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt_public_json(pair))
    return {**jwk, "kid": kid, "use": "sig"}


def jwt_public_json(pair: KeyPair) -> str:
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    if isinstance(pair.public_key, rsa.RSAPublicKey):
        return str(RSAAlgorithm.to_jwk(pair.public_key))
    return str(ECAlgorithm.to_jwk(pair.public_key))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("keys")
    rsa_pair = key_pair(rsa.generate_private_key(65537, 2048), folder, "rsa")
    other = key_pair(rsa.generate_private_key(65537, 2048), folder, "other-rsa")
    ec_pair = key_pair(ec.generate_private_key(ec.SECP256R1()), folder, "ec")
    ec_next = key_pair(ec.generate_private_key(ec.SECP256R1()), folder, "ec-next")
    ed = key_pair(ed25519.Ed25519PrivateKey.generate(), folder, "ed")
    jwks = {"keys": [public_jwk(ec_pair, "2024"), public_jwk(ec_next, "2025")]}
    jwks_path = folder / "jwks.json"
    jwks_path.write_text(json.dumps(jwks))
    return Keys(rsa_pair, other, ec_pair, ec_next, ed, jwks, jwks_path, folder)


# -- minting: PyJWT, jose, the token command, by hand --------------------------------------


def claims(
    channel: str,
    actions: tuple[str, ...] = ("subscribe", "publish", "stats"),
    ttl: float = 60,
    **extra: Any,
) -> dict[str, Any]:
    """The contract's claims: exp, iat, and the grants under "sse"."""
    now = int(time.time())
    grants: dict[str, Any] = {a: [channel] for a in ("subscribe", "publish") if a in actions}
    if "stats" in actions:
        grants["stats"] = True
    return {"exp": now + int(ttl), "iat": now, "sub": "alice", "sse": grants, **extra}


def pyjwt(key: str, payload: dict[str, Any], alg: str = "HS256", kid: str | None = None) -> str:
    return jwt.encode(payload, key, algorithm=alg, headers=None if kid is None else {"kid": kid})


def node_ready() -> None:
    """Skip (fail in CI) unless node and tests/node's jose are installed."""
    missing = shutil.which("node") is None or not (NODE_DIR / "node_modules" / "jose").is_dir()
    if missing:
        message = "node or tests/node/node_modules missing: npm ci --prefix tests/node"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def jose(key: str, payload: dict[str, Any], alg: str = "HS256", kid: str | None = None) -> str:
    """A JWT minted by Node's jose (SignJWT), from the same claims."""
    node_ready()
    spec = json.dumps({"alg": alg, "key": key, "kid": kid, "claims": payload})
    done = subprocess.run(
        ["node", str(NODE_DIR / "mint.mjs"), spec],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def token_command(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "sse_toolkit", "token", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no warning for a long enough secret, no traceback
    return done.stdout.strip()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def by_hand(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A JWT put together without a library: HMAC-SHA256 with ``key``, or unsigned."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if key is None:
        return signing_input + "."
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


# -- hubs (one process each, for the module) -----------------------------------------------


@pytest.fixture(scope="module")
def hs_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    with hub_process(tmp_path_factory.mktemp("hs"), *HUB, "--secret", SECRET) as hub:
        yield hub


@pytest.fixture(scope="module")
def rsa_hub(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """RS256 by --jwt-key, and a secret as well: either key will do."""
    args = (*HUB, "--jwt-key", str(keys.rsa.public_path), "--secret", SECRET)
    with hub_process(tmp_path_factory.mktemp("rsa"), *args) as hub:
        yield hub


@pytest.fixture(scope="module")
def ec_hub(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    args = (*HUB, "--jwt-key", str(keys.ec.public_path))
    with hub_process(tmp_path_factory.mktemp("ec"), *args) as hub:
        yield hub


@pytest.fixture(scope="module")
def jwks_hub(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    args = (*HUB, "--jwt-key", str(keys.jwks_path))
    with hub_process(tmp_path_factory.mktemp("jwks"), *args) as hub:
        yield hub


@pytest.fixture(scope="module")
def aud_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    args = (*HUB, "--secret", SECRET, "--jwt-audience", AUDIENCE, "--jwt-issuer", ISSUER)
    with hub_process(tmp_path_factory.mktemp("aud"), *args) as hub:
        yield hub


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=WAIT) as client:
        yield client


def new_channel() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def challenge(description: str) -> str:
    return f'Bearer error="invalid_token", error_description="{description}"'


def subscribers(client: httpx.Client, hub: HubProcess, channel: str, token: str) -> int:
    response = client.get(f"{hub.url}/sse/_stats", headers=bearer(token))
    assert response.status_code == 200, response.text
    entry = response.json()["per_channel"].get(channel)
    return 0 if entry is None else int(entry["subscribers"])


def assert_accepted(hub: HubProcess, channel: str, token: str) -> None:
    """The token subscribes (as EventSource does: ?token=), reads its stats, publishes (202),
    and the stream receives what it published."""
    url = f"{hub.url}/sse/{channel}"
    with httpx.Client(timeout=WAIT) as client:
        with connect_sse(client, "GET", f"{url}?token={token}") as source:
            assert source.response.status_code == 200
            until_sync(lambda: subscribers(client, hub, channel, token) == 1, "the subscriber")
            sent = client.post(url, json={"data": "hi"}, headers={**JSON, **bearer(token)})
            assert sent.status_code == 202, sent.text
            event = next(e for e in source.iter_sse() if e.data)
        assert (event.data, event.id) == ("hi", sent.json()["id"])


def assert_refused(
    hub: HubProcess,
    token: str,
    description: str,
    channel: str = "demo",
    *,
    status: int = 401,
) -> None:
    """Refused everywhere, with the exact status and header: subscribe (Bearer and ?token=),
    publish, stats."""
    url = f"{hub.url}/sse/{channel}"
    with httpx.Client(timeout=WAIT) as client:
        answers = [
            client.get(url, headers=bearer(token)),
            client.get(url, params={"token": token}),
            client.post(url, json={"data": "x"}, headers={**JSON, **bearer(token)}),
            client.get(f"{hub.url}/sse/_stats", headers=bearer(token)),
        ]
    for response in answers:
        assert response.status_code == status, (response.request.url, response.text)
        if status == 401:
            assert response.headers["www-authenticate"] == challenge(description)
        assert response.json() == {"error": description}


# -- accepted ------------------------------------------------------------------------------


def test_hs256_tokens_from_pyjwt_and_the_token_command_are_accepted(hs_hub: HubProcess) -> None:
    channel = new_channel()
    assert_accepted(hs_hub, channel, pyjwt(SECRET, claims(channel)))
    for alg in ("HS384", "HS512"):
        assert_accepted(hs_hub, channel, pyjwt(SECRET, claims(channel), alg))
    actions = ("--action", "subscribe", "--action", "publish", "--action", "stats")
    minted = token_command("--secret", SECRET, "--channel", channel, *actions)
    assert_accepted(hs_hub, channel, minted)


def test_hs256_tokens_from_jose_are_accepted(hs_hub: HubProcess) -> None:
    channel = new_channel()
    assert_accepted(hs_hub, channel, jose(SECRET, claims(channel)))
    # A prefix pattern: "news.*" covers news.x (not news).
    pattern = {"exp": int(time.time()) + 60, "sse": {"subscribe": ["news.*"], "stats": True}}
    token = jose(SECRET, pattern, "HS512")
    with httpx.Client(timeout=WAIT) as client:
        allowed = f"{hs_hub.url}/sse/news.{uuid.uuid4().hex[:6]}?token={token}"
        with client.stream("GET", allowed) as response:
            assert response.status_code == 200
        assert client.get(f"{hs_hub.url}/sse/news?token={token}").status_code == 403


def test_rs256_by_jwt_key_from_pyjwt_jose_and_the_token_command(
    rsa_hub: HubProcess, keys: Keys
) -> None:
    channel = new_channel()
    assert_accepted(rsa_hub, channel, pyjwt(keys.rsa.private_pem, claims(channel), "RS256"))
    assert_accepted(rsa_hub, channel, jose(keys.rsa.private_pem, claims(channel), "RS256"))
    assert_accepted(rsa_hub, channel, jose(keys.rsa.private_pem, claims(channel), "PS256"))
    assert_accepted(rsa_hub, channel, pyjwt(SECRET, claims(channel)))  # the secret as well
    actions = ("--action", "subscribe", "--action", "publish", "--action", "stats")
    private = str(keys.rsa.private_path)
    assert_accepted(
        rsa_hub, channel, token_command("--private-key", private, "--channel", channel, *actions)
    )


def test_es256_by_jwt_key_from_pyjwt_jose_and_the_token_command(
    ec_hub: HubProcess, keys: Keys
) -> None:
    channel = new_channel()
    assert_accepted(ec_hub, channel, pyjwt(keys.ec.private_pem, claims(channel), "ES256"))
    assert_accepted(ec_hub, channel, jose(keys.ec.private_pem, claims(channel), "ES256"))
    actions = ("--action", "subscribe", "--action", "publish", "--action", "stats")
    private = str(keys.ec.private_path)
    minted = token_command(
        "--private-key", private, "--algorithm", "ES256", "--channel", channel, *actions
    )
    assert jwt.get_unverified_header(minted)["alg"] == "ES256"
    assert_accepted(ec_hub, channel, minted)


def test_eddsa_by_jwt_key(keys: Keys, tmp_path: Path) -> None:
    node_ready()
    with hub_process(tmp_path, *HUB, "--jwt-key", str(keys.ed.public_path)) as hub:
        channel = new_channel()
        assert_accepted(hub, channel, jose(keys.ed.private_pem, claims(channel), "EdDSA"))
        assert_accepted(hub, channel, pyjwt(keys.ed.private_pem, claims(channel), "EdDSA"))


def test_a_jwks_file_of_two_keys_picks_each_by_kid(jwks_hub: HubProcess, keys: Keys) -> None:
    channel = new_channel()
    for pair, kid in ((keys.ec, "2024"), (keys.ec_next, "2025")):
        assert_accepted(jwks_hub, channel, pyjwt(pair.private_pem, claims(channel), "ES256", kid))
        assert_accepted(jwks_hub, channel, jose(pair.private_pem, claims(channel), "ES256", kid))
    actions = ("--action", "subscribe", "--action", "publish", "--action", "stats")
    private = str(keys.ec_next.private_path)
    minted = token_command(
        "--private-key", private, "--key-id", "2025", "--channel", channel, *actions
    )
    assert_accepted(jwks_hub, channel, minted)
    # Signed by one key, naming the other's kid; no kid (two keys: which?); an unknown kid.
    crossed = pyjwt(keys.ec.private_pem, claims(channel), "ES256", "2025")
    assert_refused(jwks_hub, crossed, "bad token signature", channel)
    no_kid = pyjwt(keys.ec.private_pem, claims(channel), "ES256")
    assert_refused(jwks_hub, no_kid, "the token needs a kid to pick its key", channel)
    unknown = pyjwt(keys.ec.private_pem, claims(channel), "ES256", "2099")
    assert_refused(jwks_hub, unknown, "no key for the token's kid and algorithm", channel)


class _JWKSHandler(http.server.BaseHTTPRequestHandler):
    body = b""
    requests: list[str] = []  # noqa: RUF012 (set per server, below)

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_jwks_url_is_fetched_once_and_its_keys_picked_by_kid(keys: Keys, tmp_path: Path) -> None:
    handler = type("Handler", (_JWKSHandler,), {"body": json.dumps(keys.jwks).encode()})
    handler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
        with hub_process(tmp_path, *HUB, "--jwks-url", url) as hub:
            assert handler.requests == []  # fetched when a token needs it, not at start
            channel = new_channel()
            for pair, kid in ((keys.ec, "2024"), (keys.ec_next, "2025")):
                token = pyjwt(pair.private_pem, claims(channel), "ES256", kid)
                assert_accepted(hub, channel, token)
            wrong = pyjwt(keys.ec.private_pem, claims(channel), "ES256", "2025")
            assert_refused(hub, wrong, "bad token signature", channel)
            hs = pyjwt(SECRET, claims(channel))
            assert_refused(hub, hs, "the token's algorithm is not accepted", channel)
            assert "Traceback" not in hub.log()
        assert handler.requests == ["/.well-known/jwks.json"]  # cached: fetched once
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)


def test_audience_and_issuer_when_the_hub_expects_them(aud_hub: HubProcess) -> None:
    channel = new_channel()
    good = claims(channel, aud=AUDIENCE, iss=ISSUER)
    assert_accepted(aud_hub, channel, pyjwt(SECRET, good))
    assert_accepted(aud_hub, channel, jose(SECRET, good))
    args = ("--secret", SECRET, "--audience", AUDIENCE, "--issuer", ISSUER)
    actions = ("--action", "subscribe", "--action", "publish", "--action", "stats")
    assert_accepted(aud_hub, channel, token_command(*args, "--channel", channel, *actions))
    other = pyjwt(SECRET, claims(channel, aud="another-service", iss=ISSUER))
    assert_refused(aud_hub, other, "the token is for another audience", channel)
    stranger = pyjwt(SECRET, claims(channel, aud=AUDIENCE, iss="https://evil.example"))
    assert_refused(aud_hub, stranger, "the token is from another issuer", channel)
    no_aud = pyjwt(SECRET, claims(channel, iss=ISSUER))
    assert_refused(aud_hub, no_aud, "the token has no aud claim", channel)


# -- refused -------------------------------------------------------------------------------


def test_expired_and_not_yet_valid_tokens_are_401(hs_hub: HubProcess) -> None:
    expired = claims("demo")
    expired["exp"] = int(time.time()) - 5
    assert_refused(hs_hub, pyjwt(SECRET, expired), "the token has expired")
    assert_refused(hs_hub, jose(SECRET, expired), "the token has expired")
    early = claims("demo", nbf=int(time.time()) + 60)
    assert_refused(hs_hub, pyjwt(SECRET, early), "the token is not valid yet")
    no_exp = claims("demo")
    del no_exp["exp"]
    assert_refused(hs_hub, pyjwt(SECRET, no_exp), "the token has no exp claim")


def test_a_token_signed_with_another_key_is_401(
    hs_hub: HubProcess, rsa_hub: HubProcess, keys: Keys
) -> None:
    wrong_secret = pyjwt(SECRET[::-1], claims("demo"))
    assert_refused(hs_hub, wrong_secret, "bad token signature")
    wrong_rsa = pyjwt(keys.other_rsa.private_pem, claims("demo"), "RS256")
    assert_refused(rsa_hub, wrong_rsa, "bad token signature")
    assert_refused(hs_hub, wrong_rsa, "the token's algorithm is not accepted")


def test_a_token_for_another_audience_is_401_where_none_is_expected(hs_hub: HubProcess) -> None:
    token = pyjwt(SECRET, claims("demo", aud="another-service"))
    assert_refused(hs_hub, token, "the token is for another audience")


def test_alg_none_is_401(hs_hub: HubProcess, rsa_hub: HubProcess) -> None:
    for alg in ("none", "None", "NONE"):
        unsigned = by_hand({"alg": alg, "typ": "JWT"}, claims("demo"), None)
        for hub in (hs_hub, rsa_hub):
            assert_refused(hub, unsigned, "the token's algorithm is not accepted")


def test_hs256_signed_with_the_public_key_is_401(
    rsa_hub: HubProcess, ec_hub: HubProcess, keys: Keys
) -> None:
    """Algorithm confusion: the public key (which anyone may have) used as an HMAC secret."""
    for pem in (keys.rsa.public_pem, keys.rsa.public_pem.strip()):
        forged = by_hand({"alg": "HS256", "typ": "JWT"}, claims("demo"), pem.encode())
        # The RSA hub also takes HS256 (its --secret): checked against the secret only.
        assert_refused(rsa_hub, forged, "bad token signature")
    forged = by_hand({"alg": "HS256", "typ": "JWT"}, claims("demo"), keys.ec.public_pem.encode())
    assert_refused(ec_hub, forged, "the token's algorithm is not accepted")


def test_a_grant_for_another_channel_or_action_is_403(hs_hub: HubProcess) -> None:
    channel = new_channel()
    subscribe_only = pyjwt(SECRET, claims(channel, ("subscribe",)))
    other_channel = pyjwt(SECRET, claims("elsewhere"))
    url = f"{hs_hub.url}/sse/{channel}"
    with httpx.Client(timeout=WAIT) as client:
        for token, request in (
            (other_channel, lambda t: client.get(url, params={"token": t})),
            (other_channel, lambda t: client.post(url, json={"data": 1}, headers=bearer(t))),
            (subscribe_only, lambda t: client.post(url, json={"data": 1}, headers=bearer(t))),
            (subscribe_only, lambda t: client.get(f"{hs_hub.url}/sse/_stats", headers=bearer(t))),
        ):
            response = request(token)
            assert response.status_code == 403, response.text
            assert "www-authenticate" not in response.headers
        # A stream of two channels needs both.
        both = f"{hs_hub.url}/sse/?channel={channel}&channel=elsewhere&token={subscribe_only}"
        assert client.get(both).status_code == 403
        with client.stream("GET", f"{url}?token={subscribe_only}") as response:
            assert response.status_code == 200


GARBAGE = [
    "garbage",
    "a.b.c",
    "...",
    "e30.e30.e30",  # {} . {} . {}
    b64(b'{"alg":"HS256"}') + ".bm90IGpzb24." + "x",
    b64(b'["alg"]') + "." + b64(b"{}") + ".",
    "é.ü.ñ",
    "\u2603" * 10,
    "x" * 20_000,
]


@pytest.mark.parametrize("value", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_in_the_query_is_401_never_500(hs_hub: HubProcess, value: str) -> None:
    url = f"{hs_hub.url}/sse/demo"
    with httpx.Client(timeout=WAIT) as client:
        response = client.get(url, params={"token": value})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == challenge("malformed token")


# (raw bytes over 0x7f in the request line: uvicorn answers 400 before the app sees them)
RAW_QUERIES = [b"token=%FF%FE%00", b"token=%C3%28", b"token=%E2%98", b"token=%00", b"token=%"]


@pytest.mark.parametrize("query", RAW_QUERIES, ids=range(len(RAW_QUERIES)))
def test_bytes_that_are_not_utf8_in_the_query_are_401(hs_hub: HubProcess, query: bytes) -> None:
    response = raw_get(hs_hub, b"/sse/demo?" + query, [])
    assert response.startswith(b"HTTP/1.1 401 "), response[:200]
    assert b'error="invalid_token"' in response


HEADER_VALUES = [
    b"Bearer garbage",
    b"Bearer a.b.c",
    b"Bearer \xff\xfe\xfd",
    "Bearer é.ü.ñ".encode(),
    "Bearer \u2603".encode(),
    b"Bearer " + b"x" * 20_000,
    b"bearer " + b64(b'{"alg":"none"}').encode() + b".e30.",
]


@pytest.mark.parametrize("value", HEADER_VALUES, ids=range(len(HEADER_VALUES)))
def test_garbage_in_the_authorization_header_is_401_never_500(
    hs_hub: HubProcess, value: bytes
) -> None:
    response = raw_get(hs_hub, b"/sse/demo", [b"authorization: " + value])
    head = response.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
    assert head.startswith("http/1.1 401 "), head
    assert 'www-authenticate: bearer error="invalid_token", error_description="' in head


def test_no_token_or_another_scheme_is_401_with_a_plain_challenge(hs_hub: HubProcess) -> None:
    with httpx.Client(timeout=WAIT) as client:
        for headers in ({}, {"authorization": "Basic dXNlcjpwYXNz"}, {"authorization": "Bearer"}):
            response = client.get(f"{hs_hub.url}/sse/demo", headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
    assert "Traceback" not in hs_hub.log()


def raw_get(hub: HubProcess, target: bytes, headers: list[bytes]) -> bytes:
    """One GET with exactly these bytes (httpx would refuse or re-encode some of them)."""
    import socket

    request = b"GET " + target + b" HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n"
    request += b"".join(h + b"\r\n" for h in headers) + b"\r\n"
    with socket.create_connection(("127.0.0.1", hub.port), timeout=WAIT) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                break
    return b"".join(chunks)


# -- expiry ends an open stream ------------------------------------------------------------


def test_a_stream_ends_when_its_token_expires_and_the_reconnect_gets_401(
    hs_hub: HubProcess,
) -> None:
    channel = new_channel()
    token = pyjwt(SECRET, claims(channel, ("subscribe",), ttl=2))
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    with httpx.Client(timeout=WAIT) as client:
        url = f"{hs_hub.url}/sse/{channel}?token={token}"
        with connect_sse(client, "GET", url) as source:
            assert source.response.status_code == 200
            # Heartbeats at most: the stream ends by itself, cleanly (a complete chunked
            # body: httpx raises on one cut short), within a bounded wait.
            list(source.iter_sse())
            ended = time.time()
        assert expires - 1.5 <= ended <= expires + 3, (expires, ended)
        # A browser's EventSource reconnects with the same URL: the token has expired.
        again = client.get(url, headers={"last-event-id": "0"})
        assert again.status_code == 401
        assert again.headers["www-authenticate"] == challenge("the token has expired")
