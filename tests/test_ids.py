"""Prefixed ULIDs (protocol §1.3) and the reference's timestamp format (§1.2)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosmonapse import ids, signal
from cosmonapse.ids import CROCKFORD, is_ulid, new_engram_id, new_event_id, new_trace_id, new_ulid
from cosmonapse.testing import ulids

MAX_MS = 2**48 - 1
ID_RE = re.compile(r"^(evt|trc|eng)_[0-7][0-9A-HJKMNP-TV-Z]{25}$")


def ulid_ms(ulid: str) -> int:
    """The millisecond timestamp a ULID carries (first 10 characters)."""
    value = 0
    for char in ulid[:10]:
        value = value * 32 + CROCKFORD.index(char)
    return value


def fake_clock(monkeypatch: pytest.MonkeyPatch, module: object) -> list[int]:
    """Replace *module*'s ``time`` with a clock the test sets (``now[0]`` nanoseconds)."""
    now = [0]
    monkeypatch.setattr(module, "time", SimpleNamespace(time_ns=lambda: now[0]))
    return now


@pytest.mark.parametrize(
    ("mint", "prefix"), [(new_event_id, "evt_"), (new_trace_id, "trc_"), (new_engram_id, "eng_")]
)
def test_prefix_length_and_shape(mint: object, prefix: str) -> None:
    for _ in range(1000):
        value = mint()  # type: ignore[operator]
        assert value.startswith(prefix)
        assert len(value) == 30
        assert is_ulid(value[4:])
        assert ID_RE.match(value)


def test_time_part_is_now() -> None:
    before = time.time_ns() // 1_000_000
    value = new_ulid()
    after = time.time_ns() // 1_000_000
    assert before <= ulid_ms(value) <= after


@settings(max_examples=200, deadline=None)
@given(st.integers(0, MAX_MS - 1), st.integers(1, 10**6))
def test_time_ordered_across_milliseconds(ms: int, step: int) -> None:
    with pytest.MonkeyPatch.context() as mp:
        now = fake_clock(mp, ids)
        now[0] = ms * 1_000_000 + 999_999
        first = [new_event_id() for _ in range(3)]
        later_ms = min(ms + step, MAX_MS)
        now[0] = later_ms * 1_000_000
        second = [new_event_id() for _ in range(3)]
    assert all(ulid_ms(x[4:]) == ms for x in first)
    assert all(ulid_ms(x[4:]) == later_ms for x in second)
    assert max(first) < min(second)
    assert all(is_ulid(x[4:]) for x in first + second)


def test_clock_going_back_and_forth_is_tracked(monkeypatch: pytest.MonkeyPatch) -> None:
    now = fake_clock(monkeypatch, ids)
    seen = []
    for ms in (5, 6, 5, MAX_MS, 0, 6):
        now[0] = ms * 1_000_000
        seen.append(ulid_ms(new_ulid()))
    assert seen == [5, 6, 5, MAX_MS, 0, 6]


def test_unique_over_100k() -> None:
    minted = [new_event_id() for _ in range(100_000)]
    assert len(set(minted)) == len(minted)


@settings(max_examples=200, deadline=None)
@given(ulids())
def test_is_ulid_accepts_canonical(value: str) -> None:
    assert is_ulid(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "01M7YNP6SH9WAPTDJ963JM1VV",  # 25
        "01M7YNP6SH9WAPTDJ963JM1VVEE",  # 27
        "81M7YNP6SH9WAPTDJ963JM1VVE",  # > 48-bit time
        "01m7ynp6sh9waptdj963jm1vve",  # lower case
        "01M7YNP6SH9WAPTDJ963JM1VVI",  # I, L, O and U are not Crockford
        "01M7YNP6SH9WAPTDJ963JM1VVL",
        "01M7YNP6SH9WAPTDJ963JM1VVO",
        "01M7YNP6SH9WAPTDJ963JM1VVU",
        "evt_01M7YNP6SH9WAPTDJ963JM1",
    ],
)
def test_is_ulid_rejects(value: str) -> None:
    assert not is_ulid(value)


# -- timestamps ---------------------------------------------------------------

TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?Z$")


def test_utc_now_iso_matches_the_reference_format() -> None:
    before = datetime.now(UTC)
    text = signal.utc_now_iso()
    after = datetime.now(UTC)
    assert TS_RE.match(text)
    moment = datetime.fromisoformat(text)
    assert before.replace(microsecond=0) <= moment <= after


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2199, 12, 31)))
def test_utc_now_iso_formats_any_moment(moment: datetime) -> None:
    moment = moment.replace(tzinfo=UTC)
    with pytest.MonkeyPatch.context() as mp:
        now = fake_clock(mp, signal)
        seconds = int(moment.replace(microsecond=0).timestamp())
        now[0] = seconds * 1_000_000_000 + moment.microsecond * 1000 + 999
        text = signal.utc_now_iso()
    # As Python's reference writes it: microseconds, trailing Z, no fraction when it is zero.
    assert text == moment.replace(tzinfo=None).isoformat() + "Z"


def test_utc_now_iso_follows_the_clock_across_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    now = fake_clock(monkeypatch, signal)
    out = []
    for ns in (1_767_225_600_000_000_000, 1_767_225_601_500_000_000, 1_767_225_600_000_001_000):
        now[0] = ns
        out.append(signal.utc_now_iso())
    assert out == ["2026-01-01T00:00:00Z", "2026-01-01T00:00:01.500000Z", "2026-01-01T00:00:00.000001Z"]
