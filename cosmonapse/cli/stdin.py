"""Read lines from stdin without a thread: wait for the descriptor, then read what is there.

Works on asyncio and trio for terminals and pipes.  A regular file (``< answers.txt``)
cannot be waited on, and never blocks, so it is read directly.
"""

from __future__ import annotations

import os
import sys

import anyio

__all__ = ["StdinLines"]


class StdinLines:
    """``await readline()`` → the next line without its newline, or None at end of input."""

    def __init__(self, fd: int | None = None) -> None:
        self.fd: int = sys.stdin.fileno() if fd is None else fd
        self._buf = b""
        self._eof = False

    async def readline(self) -> str | None:
        while b"\n" not in self._buf and not self._eof:
            try:
                await anyio.wait_readable(self.fd)
            except (OSError, ValueError):
                pass  # a regular file: reading does not block
            chunk = os.read(self.fd, 65536)
            if chunk:
                self._buf += chunk
            else:
                self._eof = True
        if not self._buf:
            return None
        line, _sep, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace").rstrip("\r")
