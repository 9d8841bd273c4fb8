"""``LineReader`` fed from a transport's read callback: ``feed`` + ``next_line``, bounded lines.

The dev bus client and server hand the bytes of each read to ``feed`` and take lines
with ``next_line`` (no waiting, no exception while nothing is complete); these check
that lines split across reads, several lines in one read and over-long lines come
out as ``receive_line`` would give them.
"""

from __future__ import annotations

from typing import Any, cast

import pytest

from cosmonapse.synapse.framing import LineReader, LineTooLong


def _reader(max_line: int = 1024) -> LineReader:
    return LineReader(cast(Any, None), max_line)  # fed by hand: the stream is never read


def _drain(reader: LineReader) -> list[bytes]:
    lines = []
    while (line := reader.next_line()) is not None:
        lines.append(line)
    return lines


def test_nothing_complete_is_none_not_an_exception() -> None:
    reader = _reader()
    assert reader.next_line() is None
    reader.feed(b'{"op":"pi')
    assert reader.next_line() is None
    reader.feed(b"")
    assert reader.next_line() is None


def test_a_line_split_across_reads_and_several_in_one_read_come_out_in_order() -> None:
    reader = _reader()
    reader.feed(b"one\ntw")
    assert _drain(reader) == [b"one"]
    reader.feed(b"o\nthree\nfour\nfi")
    assert _drain(reader) == [b"two", b"three", b"four"]
    reader.feed(b"ve\n")
    assert _drain(reader) == [b"five"]


def test_an_over_long_line_is_reported_once_skipped_to_its_newline_and_the_next_line_is_whole() -> None:
    reader = _reader(max_line=8)
    reader.feed(b"ok\n" + b"x" * 6)
    assert reader.next_line() == b"ok"
    assert reader.next_line() is None  # 6 bytes: still within the limit
    reader.feed(b"x" * 6)  # now over it: reported at once, before its newline
    with pytest.raises(LineTooLong) as caught:
        reader.next_line()
    assert caught.value.limit == 8
    reader.feed(b"x" * 100)  # the rest of that line is dropped as it arrives
    assert reader.next_line() is None
    reader.feed(b"xx\nnext\n")
    assert _drain(reader) == [b"next"]
