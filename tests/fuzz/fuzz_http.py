"""atheris fuzz target: raw request bytes into `SSEApp`, with the HTTP fuzz test's oracle.

Not run by CI (coverage-guided, open-ended). From the repository root::

    pip install atheris
    python -m tests.fuzz.fuzz_http -atheris_runs=100000

Each input becomes one request: method, path, query, headers (any bytes) and a body split
over several messages, against an app with a secret and publishing on. A crash is an
exception escaping the app, a hang past 5 s, or an answer the oracle refuses.
"""

from __future__ import annotations

import sys

import anyio
import atheris

with atheris.instrument_imports():
    from sse_toolkit import create_token

from tests.test_http_fuzz import SECRET, Shape, answer_one

TOKEN = create_token(SECRET, channels="*", actions=["subscribe", "publish", "stats"], ttl=10**8)
METHODS = ["GET", "HEAD", "POST", "OPTIONS", "PUT"]
HEADERS = ["authorization", "cookie", "last-event-id", "content-type", "content-length", "origin"]


def shape_from(data: bytes) -> Shape:
    fdp = atheris.FuzzedDataProvider(data)
    method = METHODS[fdp.ConsumeIntInRange(0, len(METHODS) - 1)]
    raw_path = b"/" + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))
    headers = [("content-type", "application/json")] if fdp.ConsumeBool() else []
    if fdp.ConsumeBool():
        headers.append(("authorization", f"Bearer {TOKEN}"))
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        name = HEADERS[fdp.ConsumeIntInRange(0, len(HEADERS) - 1)]
        headers.append((name, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 80)).decode("latin-1")))
    query = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 60))
    chunks = fdp.ConsumeIntInRange(1, 4)
    cut = fdp.ConsumeBool() and fdp.ConsumeBool()
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    return Shape(
        method=method,
        path=raw_path.decode("utf-8", "surrogateescape"),
        raw_path=raw_path,
        root_path="",
        query=query,
        headers=headers,
        body=body,
        chunks=chunks,
        cut_mid_body=cut,
        app_options={"allow_publish": True, "secret": SECRET, "stats": True},
    )


def test_one_input(data: bytes) -> None:
    anyio.run(answer_one, shape_from(data))


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
