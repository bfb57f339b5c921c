"""A tiny, spec-exact Server-Sent Events parser, used only by the tests.

It follows WHATWG HTML, "Server-sent events", section "Interpreting an event stream",
step by step, so that the encoder is checked against the standard rather than against
itself. It favours being obviously right over being fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Event", "ParsedStream", "parse"]

# "Lines must be separated by either a U+000D CARRIAGE RETURN U+000A LINE FEED (CRLF)
# character pair, a single U+000A LINE FEED (LF) character, or a single U+000D CARRIAGE
# RETURN (CR) character." Nothing else ends a line (unlike str.splitlines()).
_EOL = re.compile(r"\r\n|\r|\n")
_ASCII_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Event:
    """A dispatched ``MessageEvent``: what ``EventSource`` hands to listeners."""

    data: str
    event: str = "message"
    last_event_id: str = ""


@dataclass
class ParsedStream:
    """Everything a parse observed, in order."""

    events: list[Event] = field(default_factory=list)
    retries: list[int] = field(default_factory=list)  # every valid retry field, in order
    comments: list[str] = field(default_factory=list)  # after the ':', one leading space off
    last_event_id: str = ""  # the EventSource's last event ID string at the end


def parse(stream: bytes) -> ParsedStream:
    """Interpret ``stream`` (a whole event stream) exactly as a browser would."""
    # "UTF-8 decode": invalid bytes become U+FFFD and one leading BOM is dropped.
    text = stream.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    # The text after the last line terminator is an unfinished line: at the end of the
    # stream "any pending data must be discarded".
    lines = _EOL.split(text)[:-1]

    out = ParsedStream()
    data = ""  # the data buffer
    event_type = ""  # the event type buffer
    last_id = ""  # the last event ID buffer (persists across events)
    for line in lines:
        if line == "":  # dispatch the event
            out.last_event_id = last_id
            if data == "":
                data = event_type = ""
                continue
            if data.endswith("\n"):
                data = data[:-1]
            out.events.append(Event(data, event_type or "message", out.last_event_id))
            data = event_type = ""
            continue
        if line.startswith(":"):  # a comment: the spec ignores it, we record it
            comment = line[1:]
            out.comments.append(comment[1:] if comment.startswith(" ") else comment)
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            event_type = value
        elif name == "data":
            data += value + "\n"
        elif name == "id":
            if "\0" not in value:
                last_id = value
        elif name == "retry" and _ASCII_DIGITS.fullmatch(value):
            out.retries.append(int(value))
        # any other field is ignored
    return out
