"""atheris fuzz target: the event encoder against the spec-exact parser in the tests.

Not run by CI. From the repository root::

    python -m tests.fuzz.fuzz_encoder -atheris_runs=1000000

Any text for data, event, id and comment: the encoder either refuses it with ValueError or
TypeError, or its bytes parse back (WHATWG algorithm) to exactly one event with the same
data (line breaks as LF), type and id: no injected field, no extra event.
"""

from __future__ import annotations

import re
import sys

import atheris

with atheris.instrument_imports():
    from sse_toolkit.frames import ServerSentEvent

from tests.sse_parser import parse


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    text = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 200))
    event = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 20)) or None
    event_id = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 20)) or None
    comment = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 20)) or None
    try:
        encoded = ServerSentEvent(text, event=event, id=event_id, comment=comment).encode()
    except (ValueError, TypeError):
        return
    stream = parse(encoded)
    assert len(stream.events) == 1, (encoded, stream)
    (parsed,) = stream.events
    # SSE has one line break in data: CR, LF and CRLF all arrive as LF.
    assert parsed.data == re.sub(r"\r\n|\r", "\n", text), (encoded, parsed)
    assert parsed.event == (event or "message"), (encoded, parsed)
    if event_id is not None:
        assert parsed.last_event_id == event_id, (encoded, parsed)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
