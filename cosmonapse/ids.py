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

__all__ = ["CROCKFORD", "is_ulid", "new_engram_id", "new_event_id", "new_trace_id", "new_ulid"]

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
