"""Newline-delimited JSON framing for the ``cosmo://`` dev bus (§17.1), with a line limit.

Both ends of the dev bus read lines through :class:`LineReader`.  Unlike a plain
``readline`` with a limit, an over-long line does not break the stream: the
reader raises :class:`LineTooLong` once, drops that line's bytes as they arrive
and goes on with the line after it.  Memory stays bounded by the limit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import orjson
from anyio.abc import ByteReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream

__all__ = ["DEFAULT_MAX_LINE", "LineReader", "LineTooLong", "encode_line", "receive_batch"]

T = TypeVar("T")

#: Longest line the server accepts by default (the reference stops at 64 KiB).
DEFAULT_MAX_LINE = 1024 * 1024

_CHUNK = 65536


class LineTooLong(Exception):
    """A line went over the limit; it is being skipped up to its newline."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"line longer than {limit} bytes")


def encode_line(message: dict[str, Any]) -> bytes:
    """One protocol message as compact JSON plus ``\\n``."""
    return orjson.dumps(message, option=orjson.OPT_APPEND_NEWLINE)


class LineReader:
    """Reads ``\\n``-terminated lines (newline stripped) from a byte stream.

    ``receive_line`` raises ``anyio.EndOfStream`` at the end; an unterminated
    last line is returned first, as ``asyncio``'s ``readline`` does.
    """

    __slots__ = ("_discarding", "_eof", "_lines", "_max", "_partial", "_partial_len", "_stream")

    def __init__(self, stream: ByteReceiveStream, max_line: int = DEFAULT_MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be >= 1")
        self._stream = stream
        self._max = max_line
        # Complete lines waiting to be handed out; None marks an over-long line.
        self._lines: deque[bytes | None] = deque()
        self._partial: list[bytes] = []
        self._partial_len = 0
        self._discarding = False
        self._eof = False

    @property
    def max_line(self) -> int:
        return self._max

    @max_line.setter
    def max_line(self, value: int) -> None:
        """Change the limit for the lines still to come (a server raises it after authentication)."""
        if value < 1:
            raise ValueError("max_line must be >= 1")
        self._max = value

    async def receive_line(self) -> bytes:
        while not self._lines:
            if self._eof:
                raise anyio.EndOfStream
            try:
                chunk = await self._stream.receive(_CHUNK)
            except anyio.EndOfStream:
                self._eof = True
                if self._partial and not self._discarding:
                    self._lines.append(b"".join(self._partial))
                self._partial.clear()
                continue
            self._feed(chunk)
        line = self._lines.popleft()
        if line is None:
            raise LineTooLong(self._max)
        return line

    def feed(self, data: bytes) -> None:
        """Add bytes read by someone else (a transport's read callback); ``next_line`` hands
        out the lines they complete.  The end of the stream is left to :meth:`receive_line`."""
        self._feed(data)

    def next_line(self) -> bytes | None:
        """The next complete line, or None when there is none yet (no waiting, no exception
        on the hot path); ``LineTooLong`` for an over-long one, which is being skipped."""
        lines = self._lines
        if not lines:
            return None
        line = lines.popleft()
        if line is None:
            raise LineTooLong(self._max)
        return line

    def _feed(self, chunk: bytes) -> None:
        if b"\n" not in chunk:
            self._grow(chunk)
            return
        parts = chunk.split(b"\n")
        head = parts[0]
        if self._discarding:
            self._discarding = False  # the skipped line ends here; it was reported already
        else:
            if self._partial:
                self._partial.append(head)
                head = b"".join(self._partial)
                self._partial.clear()
                self._partial_len = 0
            self._lines.append(head if len(head) <= self._max else None)
        for mid in parts[1:-1]:
            self._lines.append(mid if len(mid) <= self._max else None)
        self._grow(parts[-1])

    def _grow(self, piece: bytes) -> None:
        """Add an unterminated piece to the current line, or drop it if over the limit."""
        if self._discarding or not piece:
            return
        self._partial.append(piece)
        self._partial_len += len(piece)
        if self._partial_len > self._max:
            self._partial.clear()
            self._partial_len = 0
            self._discarding = True
            self._lines.append(None)  # report now; the rest is skipped as it arrives


async def receive_batch(
    receive: MemoryObjectReceiveStream[T], size_of: Callable[[T], int], max_bytes: int
) -> tuple[list[T], int]:
    """Wait for one item, then take what is already queued, up to about *max_bytes*.

    Returns the items and their total size; a writer sends them in one socket
    write.  Raises ``anyio.EndOfStream`` once the stream is closed and drained.
    """
    try:
        item = receive.receive_nowait()  # no scheduling round while work is waiting
    except anyio.WouldBlock:
        item = await receive.receive()
    batch = [item]
    size = size_of(item)
    while size < max_bytes:
        try:
            item = receive.receive_nowait()
        except (anyio.WouldBlock, anyio.EndOfStream):
            break
        batch.append(item)
        size += size_of(item)
    return batch, size
