"""Prefixed ULIDs: ``evt_``/``trc_``/``eng_`` + 26 Crockford base32 characters.

A ULID is 48 bits of milliseconds followed by 80 random bits.  The random
part is 16 base32 characters: 16 random bytes mapped through a 256-entry table
(``bytes.translate``: each byte keeps its low 5 bits, uniform since 256 is a
multiple of 32), all in C; the time part is cached per millisecond.  Minting an
id is on the hot path of every Signal (three per ``dispatch_and_wait``).  The
randomness comes from ``random`` (reseeded after fork by CPython): ids must be
unique, not secret.
"""

from __future__ import annotations

import random
import time

__all__ = [
    "CROCKFORD",
    "SeenIds",
    "event_id_at",
    "is_ulid",
    "new_engram_id",
    "new_event_id",
    "new_trace_id",
    "new_ulid",
]

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# byte -> the Crockford character of its low 5 bits
_BYTE_TO_CHAR = bytes(CROCKFORD.encode()[i & 31] for i in range(256))
_getrandbits = random.getrandbits
_CROCKFORD_SET = frozenset(CROCKFORD)

# (ms, its 10 characters) in one tuple, so a thread never pairs one ms with another's text.
_last: tuple[int, str] = (-1, "")


def _time_part(ms: int) -> str:
    global _last
    last_ms, part = _last
    if ms != last_ms:
        chars = []
        for shift in range(45, -5, -5):
            chars.append(CROCKFORD[(ms >> shift) & 31])
        part = "".join(chars)
        _last = (ms, part)
    return part


def _ulid_at(now_ns: int) -> str:
    rand = _getrandbits(128).to_bytes(16, "little").translate(_BYTE_TO_CHAR).decode("ascii")
    return _time_part(now_ns // 1_000_000) + rand


def new_ulid() -> str:
    """A fresh 26-character ULID (upper-case Crockford base32)."""
    return _ulid_at(time.time_ns())


def event_id_at(now_ns: int) -> str:
    """A fresh Signal id minted at *now_ns* (``time.time_ns()``): one clock read serves id and ``ts``."""
    return "evt_" + _ulid_at(now_ns)


def new_event_id() -> str:
    """A fresh Signal id: ``evt_`` + ULID."""
    return "evt_" + new_ulid()


def new_trace_id() -> str:
    """A fresh trace id: ``trc_`` + ULID."""
    return "trc_" + new_ulid()


def new_engram_id() -> str:
    """A fresh Engram entry id: ``eng_`` + ULID."""
    return "eng_" + new_ulid()


def is_ulid(text: str) -> bool:
    """True when *text* is a canonical 26-character ULID."""
    return len(text) == 26 and text[0] <= "7" and all(c in _CROCKFORD_SET for c in text)


class SeenIds:
    """Ids seen recently, kept in two generations: bounded in memory and time, each step O(1).

    ``first(id)`` is True the first time an id is offered within the window and False
    when it comes again.  New ids go into the current generation; it is retired when
    it holds ``max_entries / 2`` ids or is ``ttl_s / 2`` seconds old
    (``time.monotonic``), and a retired generation is forgotten at the next
    retirement or ``ttl_s`` after it began, whichever comes first.  So an id is
    remembered for at most ``ttl_s`` seconds (and among at most ``max_entries``
    ids), and for at least ``ttl_s / 2`` seconds unless ``max_entries / 2`` newer
    ids came first.  Two plain sets: the hot path pays a look-up and an insert, no
    time stamp per id and no ordered structure to trim.
    """

    __slots__ = (
        "_check_at",
        "_current",
        "_current_since",
        "_previous",
        "_previous_since",
        "half_entries",
        "max_entries",
        "ttl_s",
    )

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        if max_entries < 2 or ttl_s <= 0:
            raise ValueError("max_entries must be >= 2 and ttl_s > 0")
        self.max_entries: int = max_entries
        self.ttl_s: float = ttl_s
        self.half_entries: int = max_entries // 2
        now = time.monotonic()
        self._current: set[str] = set()
        self._previous: set[str] = set()
        self._current_since = self._previous_since = now
        self._check_at = now + ttl_s / 2  # the next time a generation is due to go

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def __contains__(self, item: object) -> bool:
        now = time.monotonic()
        if now >= self._check_at:
            self._expire(now)
        return item in self._current or item in self._previous

    def first(self, item: str) -> bool:
        """Remember *item*; True unless it was seen within the window."""
        now = time.monotonic()
        if now >= self._check_at:
            self._expire(now)
        current = self._current
        if item in current or item in self._previous:
            return False
        current.add(item)
        if len(current) >= self.half_entries:
            self._retire(now)
        return True

    def forget(self, item: str) -> None:
        """Undo ``first(item)``: the work was not taken after all (it will be offered again)."""
        self._current.discard(item)
        self._previous.discard(item)

    def _expire(self, now: float) -> None:
        if now >= self._current_since + self.ttl_s / 2:
            self._retire(now)
        if self._previous and now >= self._previous_since + self.ttl_s:
            self._previous = set()
        self._schedule()

    def _retire(self, now: float) -> None:
        self._previous, self._previous_since = self._current, self._current_since
        self._current, self._current_since = set(), now
        self._schedule()

    def _schedule(self) -> None:
        due = self._current_since + self.ttl_s / 2
        if self._previous:
            due = min(due, self._previous_since + self.ttl_s)
        self._check_at = due
