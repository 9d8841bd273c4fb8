"""``new_signal``, the runtime's hot-path Signal builder, gives what ``Signal(...)`` gives."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from types import SimpleNamespace

import attrs
import pytest

from cosmonapse import Signal, SignalType, signal
from cosmonapse.ids import is_ulid
from cosmonapse.signal import Directed, new_signal


def test_every_field_matches_the_attrs_constructor() -> None:
    directed = Directed("echo", capabilities=("chat",))
    fast = new_signal(SignalType.TASK, "trc_x", {"input": {"a": 1}}, "evt_parent", directed, {"k": "v"})
    slow = Signal(
        type=SignalType.TASK, trace_id="trc_x", payload={"input": {"a": 1}}, parent_id="evt_parent",
        directed=directed, meta={"k": "v"}, id=fast.id, ts=fast.ts,
    )  # fmt: skip
    assert fast == slow
    for field in attrs.fields(Signal):  # eq=False fields too (filled)
        assert getattr(fast, field.name) == getattr(slow, field.name), field.name
    assert repr(fast) == repr(slow)
    assert Signal.decode(fast.encode()) == fast


def test_defaults_are_fresh_and_well_formed() -> None:
    a = new_signal(SignalType.AGENT_OUTPUT, "trc_x", {})
    b = new_signal(SignalType.AGENT_OUTPUT, "trc_x", {})
    assert a.parent_id is None and a.directed is None and a.v == "1" and a.filled == ()
    assert a.meta == {} and a.meta is not b.meta  # each Signal its own meta
    assert a.id != b.id and a.id.startswith("evt_") and is_ulid(a.id[4:])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?Z", a.ts)


def test_it_is_frozen_like_any_signal() -> None:
    sig = new_signal(SignalType.TASK, "trc_x", {})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        sig.trace_id = "trc_y"  # type: ignore[misc]


def test_id_and_ts_come_from_one_clock_read(monkeypatch: pytest.MonkeyPatch) -> None:
    moment = datetime(2026, 1, 1, 0, 0, 1, 500_000, tzinfo=UTC)
    ns = int(moment.timestamp()) * 1_000_000_000 + 500_000_000
    monkeypatch.setattr(signal, "time", SimpleNamespace(time_ns=lambda: ns))
    sig = new_signal(SignalType.TASK, "trc_x", {})
    assert sig.ts == "2026-01-01T00:00:01.500000Z"
    ms = 0
    for char in sig.id[4:14]:
        ms = ms * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(char)
    assert ms == ns // 1_000_000
