"""Prefixed ULIDs: ``evt_``/``trc_``/``eng_`` + 26 Crockford base32 characters.

A ULID is 48 bits of milliseconds followed by 80 random bits.  The random
part is 16 base32 characters, produced two at a time from a 1024-entry table;
the time part is cached per millisecond.  Minting an id is on the hot path of
every Signal.  The randomness comes from ``random`` (reseeded after fork by
CPython): ids must be unique, not secret.
"""

from __future__ import annotations

import random
import time

__all__ = ["CROCKFORD", "SeenIds", "is_ulid", "new_engram_id", "new_event_id", "new_trace_id", "new_ulid"]

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in CROCKFORD for b in CROCKFORD]
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


def new_ulid() -> str:
    """A fresh 26-character ULID (upper-case Crockford base32)."""
    r = _getrandbits(80)
    p = _PAIRS
    rand = (
        p[r >> 70]
        + p[(r >> 60) & 1023]
        + p[(r >> 50) & 1023]
        + p[(r >> 40) & 1023]
        + p[(r >> 30) & 1023]
        + p[(r >> 20) & 1023]
        + p[(r >> 10) & 1023]
        + p[r & 1023]
    )
    return _time_part(time.time_ns() // 1_000_000) + rand


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
    """Ids seen recently: at most ``max_entries``, each for ``ttl_s`` seconds (``time.monotonic``).

    ``first(id)`` is True the first time an id is offered within the window and False
    when it comes again.  The oldest id is forgotten first, when the window is full or
    its time is up; so memory is bounded and an id that comes back after the window
    counts as new.
    """

    __slots__ = ("_adds", "_ids", "max_entries", "ttl_s")

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        if max_entries < 1 or ttl_s <= 0:
            raise ValueError("max_entries must be >= 1 and ttl_s > 0")
        self.max_entries: int = max_entries
        self.ttl_s: float = ttl_s
        self._ids: dict[str, float] = {}  # id -> when it expires, oldest first
        self._adds = 0

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item: object) -> bool:
        expires = self._ids.get(item) if isinstance(item, str) else None
        return expires is not None and expires > time.monotonic()

    def first(self, item: str) -> bool:
        """Remember *item*; True unless it was seen within the window."""
        ids = self._ids
        now = time.monotonic()
        expires = ids.get(item)
        if expires is not None:
            if expires > now:
                return False
            del ids[item]  # seen too long ago: counts as new (and moves to the back)
        ids[item] = now + self.ttl_s
        if len(ids) > self.max_entries:
            del ids[next(iter(ids))]
        self._adds += 1
        if not self._adds & 63:  # now and then, forget what expired (the oldest come first)
            expired = []
            for key, until in ids.items():
                if until > now:
                    break
                expired.append(key)
            for key in expired:
                del ids[key]
        return True
