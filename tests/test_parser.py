"""The incremental client-side parser (sse_toolkit/parser.py), rule by rule.

Each rule of WHATWG HTML "Interpreting an event stream" has its own small test; then
properties: what `frames.encode` writes parses back to the same fields, cutting the
bytes anywhere changes nothing, random streams parse as the spec-exact reference parser
(tests/sse_parser.py) reads them whole, and after `EventParser.reset` a connection parses
as a fresh parser resuming at the last event ID would. ``SSE_TOOLKIT_PARSER_EXAMPLES``
sets the number of examples per property (200 by default; the reset property runs half).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sse_toolkit.frames import encode
from sse_toolkit.parser import Event, EventParser

from . import sse_parser

EXAMPLES = int(os.environ.get("SSE_TOOLKIT_PARSER_EXAMPLES", "200"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None)


def feed_all(parser: EventParser, chunks: Iterable[bytes]) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events


def parse(stream: bytes, last_event_id: str = "") -> list[Event]:
    """The events ``stream`` dispatches, fed whole."""
    return EventParser(last_event_id).feed(stream)


def bytewise(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


def normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


# -- Event ----------------------------------------------------------------------------------


def test_event_defaults() -> None:
    event = Event("x")
    assert (event.data, event.event, event.id, event.retry) == ("x", "message", "", None)


def test_event_equality_compares_all_four_fields() -> None:
    assert Event("x", "t", "1", 5) == Event("x", "t", "1", 5)
    assert Event("x", "t", "1", 5) != Event("y", "t", "1", 5)
    assert Event("x", "t", "1", 5) != Event("x", "u", "1", 5)
    assert Event("x", "t", "1", 5) != Event("x", "t", "2", 5)
    assert Event("x", "t", "1", 5) != Event("x", "t", "1", None)
    assert Event("x") != "x"


def test_event_repr() -> None:
    assert repr(Event("x", "t", "1", 5)) == "Event(data='x', event='t', id='1', retry=5)"


def test_event_json() -> None:
    assert Event('{"a": [1, 2]}').json() == {"a": [1, 2]}
    with pytest.raises(json.JSONDecodeError):
        Event("not json").json()


def test_event_has_slots() -> None:
    with pytest.raises(AttributeError):
        Event("x").other = 1  # type: ignore[attr-defined]


# -- Fields ---------------------------------------------------------------------------------


def test_one_event() -> None:
    stream = b"id: 7\nevent: update\ndata: hello\n\n"
    assert parse(stream) == [Event("hello", "update", "7")]


def test_data_lines_are_joined_with_lf() -> None:
    assert parse(b"data: a\ndata: b\ndata: c\n\n") == [Event("a\nb\nc")]


def test_only_one_trailing_lf_is_removed() -> None:
    assert parse(b"data: a\ndata:\n\n") == [Event("a\n")]
    assert parse(b"data:\ndata:\n\n") == [Event("\n")]


def test_empty_data_field_dispatches_empty_data() -> None:
    assert parse(b"data:\n\n") == [Event("")]
    assert parse(b"data\n\n") == [Event("")]


def test_block_without_data_dispatches_nothing() -> None:
    assert parse(b"event: update\nid: 1\n\n") == []


def test_event_type_of_an_undispatched_block_does_not_leak() -> None:
    assert parse(b"event: update\n\ndata: x\n\n") == [Event("x", "message")]


def test_event_type_defaults_to_message() -> None:
    assert parse(b"data: x\n\n") == [Event("x", "message")]
    assert parse(b"event:\ndata: x\n\n") == [Event("x", "message")]


def test_event_type_is_reset_after_dispatch() -> None:
    events = parse(b"event: a\ndata: 1\n\ndata: 2\n\n")
    assert [e.event for e in events] == ["a", "message"]


def test_last_event_field_wins() -> None:
    assert parse(b"event: a\nevent: b\ndata: x\n\n") == [Event("x", "b")]


def test_id_persists_across_events() -> None:
    events = parse(b"id: 1\ndata: a\n\ndata: b\n\n")
    assert [e.id for e in events] == ["1", "1"]


def test_id_is_set_on_an_empty_line_even_without_dispatch() -> None:
    parser = EventParser()
    assert parser.feed(b"id: 5\n\n") == []
    assert parser.last_event_id == "5"


def test_last_event_id_changes_only_at_the_empty_line() -> None:
    parser = EventParser()
    parser.feed(b"id: 5\ndata: x\n")
    assert parser.last_event_id == ""
    assert parser.feed(b"\n") == [Event("x", id="5")]
    assert parser.last_event_id == "5"


def test_empty_id_resets_the_last_event_id() -> None:
    parser = EventParser()
    events = parser.feed(b"id: 1\ndata: a\n\nid\ndata: b\n\nid:\ndata: c\n\n")
    assert [e.id for e in events] == ["1", "", ""]
    assert parser.last_event_id == ""


def test_id_containing_nul_is_ignored() -> None:
    parser = EventParser()
    assert parser.feed(b"id: 1\n\nid: a\x00b\ndata: x\n\n") == [Event("x", id="1")]
    assert parser.last_event_id == "1"


def test_initial_last_event_id() -> None:
    parser = EventParser("41")
    assert parser.last_event_id == "41"
    assert parser.feed(b"data: x\n\n") == [Event("x", id="41")]


def test_retry_sets_the_reconnection_time() -> None:
    parser = EventParser()
    assert parser.retry is None
    parser.feed(b"retry: 1500\n")
    assert parser.retry == 1500  # at once, before the block ends
    parser.feed(b"retry: 0\n")
    assert parser.retry == 0


def test_retry_only_block_dispatches_nothing() -> None:
    parser = EventParser()
    assert parser.feed(b"retry: 1000\n\n") == []
    assert parser.retry == 1000


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"-1",
        b"+1",
        b"1.5",
        b"1e3",
        b" 10",
        b"10 ",
        b"0x10",
        b"abc",
        "١٢".encode(),
        b"\xc2\xb2",
    ],
)
def test_retry_that_is_not_only_ascii_digits_is_ignored(value: bytes) -> None:
    parser = EventParser()
    parser.feed(b"retry: 7\n\n")
    assert parser.feed(b"retry: " + value + b"\ndata: x\n\n") == [Event("x")]
    assert parser.retry == 7


def test_retry_reads_leading_zeros() -> None:
    parser = EventParser()
    assert parser.feed(b"retry:0010\ndata: x\n\n") == [Event("x", retry=10)]


def test_retry_with_more_digits_than_int_reads_is_ignored() -> None:
    parser = EventParser()
    parser.feed(b"retry: 7\n")
    assert parser.feed(b"retry: " + b"9" * 10_000 + b"\ndata: x\n\n") == [Event("x", retry=7)]
    assert parser.retry == 7


def test_event_retry_is_the_one_its_own_block_set() -> None:
    parser = EventParser()
    events = parser.feed(b"retry: 10\n\ndata: a\n\nretry: 20\ndata: b\n\ndata: c\n\n")
    assert [e.retry for e in events] == [None, 20, None]
    assert parser.retry == 20


def test_comments_are_ignored() -> None:
    stream = b": heartbeat\n:\n:data: no\ndata: a\n: between\ndata: b\n\n"
    assert parse(stream) == [Event("a\nb")]


def test_comment_only_block_dispatches_nothing() -> None:
    assert parse(b": ping\n\n") == []


def test_unknown_fields_are_ignored() -> None:
    stream = b"foo: bar\nData: no\ndata : no\n data: no\ndata: yes\n\n"
    assert parse(stream) == [Event("yes")]


def test_line_without_colon_is_a_field_with_empty_value() -> None:
    assert parse(b"event: x\nevent\ndata\n\n") == [Event("", "message")]


def test_one_leading_space_is_removed() -> None:
    assert parse(b"data:x\n\n") == [Event("x")]
    assert parse(b"data: x\n\n") == [Event("x")]
    assert parse(b"data:  x \n\n") == [Event(" x ")]
    assert parse(b"event:  t\ndata: x\n\n") == [Event("x", " t")]


def test_value_is_everything_after_the_first_colon() -> None:
    assert parse(b"data: a: b\n\n") == [Event("a: b")]
    assert parse(b"data:a: b\n\n") == [Event("a: b")]
    assert parse(b"data::x\n\n") == [Event(":x")]
    assert parse(b"id:a: b\ndata: x\n\n") == [Event("x", id="a: b")]


def test_field_names_with_a_colon_after_them_but_no_space() -> None:
    assert parse(b"event:t\nid:9\nretry:5\ndata:x\n\n") == [Event("x", "t", "9", 5)]


# -- Lines ----------------------------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_every_line_end(eol: bytes) -> None:
    stream = eol.join([b"id: 1", b"event: t", b"data: a", b"data: b", b"", b""])
    assert parse(stream) == [Event("a\nb", "t", "1")]


def test_mixed_line_ends() -> None:
    assert parse(b"data: a\rdata: b\r\ndata: c\n\r\n") == [Event("a\nb\nc")]


def test_cr_then_crlf_is_two_line_ends() -> None:
    assert parse(b"data: a\r\r\n") == [Event("a")]


def test_lf_then_cr_is_two_line_ends() -> None:
    assert parse(b"data: a\n\r") == [Event("a")]


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    parser = EventParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\ndata: b\r") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\r\n") == [Event("a\nb")]


def test_cr_dispatches_without_waiting_for_the_next_byte() -> None:
    assert EventParser().feed(b"data: a\r\r") == [Event("a")]


def test_lf_after_a_chunk_ending_in_cr_is_skipped_once() -> None:
    parser = EventParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n") == []  # the CRLF's second half
    assert parser.feed(b"\n") == [Event("a")]  # an empty line


def test_lf_skip_survives_chunks_that_decode_to_nothing() -> None:
    parser = EventParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"data: \xc3") == []  # half a character: no text yet
    assert parser.feed(b"\xa9\n\n") == [Event("a\né")]


def test_other_unicode_line_breaks_stay_in_the_line() -> None:
    breaks = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
    assert parse(f"data: a{breaks}b\n\n".encode()) == [Event(f"a{breaks}b")]


def test_unfinished_line_waits_for_its_end() -> None:
    parser = EventParser()
    assert parser.feed(b"da") == []
    assert parser.feed(b"ta: hel") == []
    assert parser.feed(b"lo\n") == []
    assert parser.feed(b"\n") == [Event("hello")]


def test_data_lines_of_one_event_across_chunks() -> None:
    parser = EventParser()
    assert parser.feed(b"data: a\n") == []
    assert parser.feed(b"data: b\ndata: c\n") == []
    assert parser.feed(b"data: d\n\ndata: e\n\n") == [Event("a\nb\nc\nd"), Event("e")]


def test_long_line_across_many_chunks() -> None:
    payload = b"x" * 1_000_000
    stream = b"data: " + payload + b"\n\n"
    chunks = [stream[i : i + 1024] for i in range(0, len(stream), 1024)]
    assert feed_all(EventParser(), chunks) == [Event(payload.decode())]


def test_many_events_in_one_chunk_in_order() -> None:
    stream = b"".join(b"id: %d\ndata: %d\n\n" % (n, n) for n in range(1000))
    events = parse(stream)
    assert [(e.id, e.data) for e in events] == [(str(n), str(n)) for n in range(1000)]


def test_feeding_nothing() -> None:
    parser = EventParser()
    assert parser.feed(b"") == []
    assert parser.feed(b"data: x\n\n") == [Event("x")]


# -- Decoding -------------------------------------------------------------------------------


def test_character_split_between_chunks() -> None:
    stream = "data: é€😀\n\n".encode()
    assert feed_all(EventParser(), bytewise(stream)) == [Event("é€😀")]


def test_invalid_utf8_is_replaced() -> None:
    assert parse(b"data: a\xffb\xc3\n\n") == [Event("a\ufffdb\ufffd")]


def test_leading_bom_is_stripped() -> None:
    assert parse(b"\xef\xbb\xbfdata: x\n\n") == [Event("x")]


def test_only_one_leading_bom_is_stripped() -> None:
    # The second makes the field name "\ufeffdata": unknown, so nothing is dispatched.
    assert parse(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n") == []


def test_bom_split_between_chunks() -> None:
    stream = b"\xef\xbb\xbfdata: x\n\n"
    assert feed_all(EventParser(), bytewise(stream)) == [Event("x")]


def test_bom_after_the_start_is_not_stripped() -> None:
    assert parse(b"data: a\n\n\xef\xbb\xbfdata: b\n\n") == [Event("a")]
    parser = EventParser()
    assert parser.feed(b"data: a\n\n") == [Event("a")]
    assert parser.feed(b"\xef\xbb\xbfdata: b\n\n") == []


# -- Connections ----------------------------------------------------------------------------


def test_reset_discards_the_incomplete_event() -> None:
    parser = EventParser()
    assert parser.feed(b"data: a\n") == []
    parser.reset()
    assert parser.feed(b"\n") == []
    assert parser.feed(b"data: b\n\n") == [Event("b")]


def test_reset_discards_a_partial_line() -> None:
    parser = EventParser()
    parser.feed(b"data: a\n\nda")
    parser.reset()
    assert parser.feed(b"ta: b\ndata: c\n\n") == [Event("c")]


def test_reset_discards_partial_bytes() -> None:
    parser = EventParser()
    parser.feed(b"data: a\n\ndata: \xc3")
    parser.reset()
    assert parser.feed(b"data: \xa9\n\n") == [Event("\ufffd")]


def test_reset_expects_a_bom_again() -> None:
    parser = EventParser()
    assert parser.feed(b"\xef\xbb\xbfdata: a\n\n") == [Event("a")]
    parser.reset()
    assert parser.feed(b"\xef\xbb\xbfdata: b\n\n") == [Event("b")]


def test_reset_keeps_last_event_id_and_retry() -> None:
    parser = EventParser()
    parser.feed(b"id: 3\nretry: 250\ndata: a\n\n")
    parser.reset()
    assert (parser.last_event_id, parser.retry) == ("3", 250)
    assert parser.feed(b"data: b\n\n") == [Event("b", id="3")]


def test_reset_drops_the_id_of_the_cut_off_block() -> None:
    parser = EventParser()
    parser.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b\n")
    parser.reset()
    assert parser.last_event_id == "1"
    assert parser.feed(b"data: c\n\n") == [Event("c", id="1")]


def test_reset_keeps_a_retry_from_the_cut_off_block() -> None:
    # The spec applies retry as soon as the line is read, not at dispatch.
    parser = EventParser()
    parser.feed(b"retry: 99\ndata: a\n")
    parser.reset()
    assert parser.retry == 99
    assert parser.feed(b"data: b\n\n") == [Event("b")]


def test_reset_forgets_a_trailing_cr() -> None:
    parser = EventParser()
    assert parser.feed(b"data: a\r\r") == [Event("a")]
    parser.reset()
    assert parser.feed(b"data: b\n") == []
    assert parser.feed(b"\n") == [Event("b")]  # an empty line, not the old CR's LF


# -- Properties -----------------------------------------------------------------------------

# Text the encoder accepts (UTF-8: no lone surrogates), with CR, LF and CRLF mixed in.
TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
MULTILINE = st.lists(st.one_of(TEXT, st.sampled_from(["\r", "\n", "\r\n"])), max_size=6).map(
    "".join
)
ONE_LINE = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12)
ID = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=8)
FRAME = st.fixed_dictionaries(
    {},
    optional={
        "data": MULTILINE,
        "event": ONE_LINE,
        "id": ID,
        "retry": st.integers(0, 10**12),
        "comment": MULTILINE,
    },
)


def split_at(stream: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cut % (len(stream) + 1) for cut in cuts), len(stream)]
    return [stream[a:b] for a, b in pairwise(bounds)]


@PROPERTY
@given(frames=st.lists(FRAME, max_size=6), cuts=st.lists(st.integers(0, 10**6), max_size=6))
def test_what_the_encoder_writes_parses_back(frames: list[dict[str, Any]], cuts: list[int]) -> None:
    stream = b"".join(encode(**frame) for frame in frames)
    expected = []
    last_id: str = ""
    retry: int | None = None
    for frame in frames:
        last_id = frame.get("id", last_id)
        retry = frame.get("retry", retry)
        if "data" in frame:  # no data field: nothing dispatched, but id and retry count
            kind = frame.get("event") or "message"
            expected.append(Event(normalise(frame["data"]), kind, last_id, frame.get("retry")))
    for chunks in ([stream], split_at(stream, cuts)):
        parser = EventParser()
        assert feed_all(parser, chunks) == expected
        assert (parser.last_event_id, parser.retry) == (last_id, retry)


# Byte streams: random bytes, and pieces and whole lines that matter to the parser.
LINE = st.builds(
    lambda name, colon, value, eol: name + colon + value + eol,
    st.sampled_from([b"data", b"id", b"event", b"retry", b"", b"foo", b"\xef\xbb\xbfdata"]),
    st.sampled_from([b"", b":", b": ", b":  "]),
    st.one_of(
        st.sampled_from([b"", b"7", b"0042", b"-1", b"a\x00b", "٣".encode(), b"\xc2\xb2"]),
        TEXT.map(str.encode),
    ),
    st.sampled_from([b"\n", b"\r", b"\r\n", b"\n\n", b"\r\r", b"\r\n\r\n"]),
)
PIECES = st.one_of(
    LINE,
    st.sampled_from(
        [
            b"\xef\xbb\xbf",
            b"\r",
            b"\n",
            b"\r\n",
            b"data:",
            b"data: ",
            b"id: ",
            b"retry: ",
            b":",
            b" ",
            b"\x00",
            b"42",
            "é€😀".encode(),
            "😀".encode()[:2],
            "\u2028\x85".encode(),
            b"\xff",
            b"\xc3",
        ]
    ),
    st.binary(max_size=6),
)
STREAM = st.lists(PIECES, max_size=30).map(b"".join)


def outcome(parser: EventParser, chunks: Iterable[bytes]) -> tuple[list[Event], str, int | None]:
    return feed_all(parser, chunks), parser.last_event_id, parser.retry


@PROPERTY
@given(stream=STREAM, cuts=st.lists(st.integers(0, 10**6), max_size=10))
@example(stream=b"data: a\r\ndata: b\r\n\r\n", cuts=[8])
@example(stream=b"data: a\r\n\r\n", cuts=[9])
@example(stream=b"data: a\r\r\n", cuts=[8, 9])
@example(stream=b"\xef\xbb\xbfdata: x\r\n\r\n", cuts=[1, 2])
def test_cutting_the_bytes_anywhere_changes_nothing(stream: bytes, cuts: list[int]) -> None:
    whole = outcome(EventParser(), [stream])
    assert outcome(EventParser(), split_at(stream, cuts)) == whole
    assert outcome(EventParser(), bytewise(stream)) == whole


@PROPERTY
@given(stream=STREAM, cuts=st.lists(st.integers(0, 10**6), max_size=4))
@example(stream=b"data: a\n\r", cuts=[])
@example(stream=b"retry: 5\r\rid: 1\rdata\r\r", cuts=[])
@example(stream="retry: 1\n\nretry: ٣\nid: a\0\ndata\n\n".encode(), cuts=[])
def test_random_streams_parse_as_the_reference_parser_reads_them(
    stream: bytes, cuts: list[int]
) -> None:
    reference = sse_parser.parse(stream)
    expected = [(e.data, e.event, e.last_event_id) for e in reference.events]
    retry = reference.retries[-1] if reference.retries else None
    for chunks in ([stream], split_at(stream, cuts)):
        parser = EventParser()
        events = feed_all(parser, chunks)
        assert [(e.data, e.event, e.id) for e in events] == expected
        assert all(e.retry is None or e.retry in reference.retries for e in events)
        assert (parser.last_event_id, parser.retry) == (reference.last_event_id, retry)


@settings(max_examples=max(1, EXAMPLES // 2), deadline=None)
@given(first=STREAM, cuts=st.lists(st.integers(0, 10**6), max_size=4), second=STREAM)
def test_after_reset_a_connection_parses_as_a_fresh_parser_resuming_there(
    first: bytes, cuts: list[int], second: bytes
) -> None:
    parser = EventParser()
    feed_all(parser, split_at(first, cuts))
    last_event_id, retry = parser.last_event_id, parser.retry
    parser.reset()
    fresh = EventParser(last_event_id)
    assert parser.feed(second) == fresh.feed(second)
    assert parser.last_event_id == fresh.last_event_id
    assert parser.retry == (retry if fresh.retry is None else fresh.retry)
