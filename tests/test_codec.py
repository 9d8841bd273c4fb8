"""The Signal codec: round trips, rejection of malformed frames, leniency (protocol §1)."""

from __future__ import annotations

import json
import logging
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cosmonapse import Directed, Signal, SignalDecodeError, SignalType
from cosmonapse.codec import (
    converter,
    decode_signal,
    dumps,
    encode_signal,
    loads,
    signal_from_dict,
    signal_to_dict,
)
from cosmonapse.ids import is_ulid
from cosmonapse.testing import (
    ENVELOPE_KEYS,
    lenient_frames,
    malformed_frames,
    payloads,
    signal_dicts,
    signal_types,
    signals,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- round trips ---------------------------------------------------------------


@pytest.mark.parametrize("signal_type", list(SignalType), ids=str)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip_every_type(signal_type: SignalType, data: st.DataObject) -> None:
    sig = data.draw(signals(types=[signal_type]))
    assert sig.type is signal_type
    frame = encode_signal(sig)
    back = decode_signal(frame)
    assert back == sig
    assert back.filled == ()
    assert decode_signal(frame, strict=True) == sig


@FAST
@given(signals())
def test_round_trip_any_signal(sig: Signal) -> None:
    frame = encode_signal(sig)
    assert decode_signal(frame) == sig
    assert decode_signal(bytearray(frame)) == sig
    assert decode_signal(memoryview(frame)) == sig
    assert decode_signal(frame.decode()) == sig


@FAST
@given(signal_dicts())
def test_wire_dict_round_trip(wire: dict[str, Any]) -> None:
    sig = signal_from_dict(wire)
    assert signal_to_dict(sig) == wire
    assert list(signal_to_dict(sig)) == list(ENVELOPE_KEYS)
    assert orjson.loads(encode_signal(sig)) == wire
    assert converter.unstructure(sig) == wire
    assert converter.structure(wire, Signal) == sig


@FAST
@given(signals())
def test_encoding_is_compact_and_ordered(sig: Signal) -> None:
    frame = encode_signal(sig)
    assert frame.startswith(b'{"v":"1","id":"evt_')
    parsed = orjson.loads(frame)
    assert list(parsed) == list(ENVELOPE_KEYS)
    assert orjson.dumps(parsed) == frame  # compact: no spaces after separators


@pytest.mark.parametrize("signal_type", list(SignalType), ids=str)
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_payload_strategy_exists_for_every_type(signal_type: SignalType, data: st.DataObject) -> None:
    payload = data.draw(payloads(signal_type))
    assert isinstance(payload, dict)
    assert orjson.loads(orjson.dumps(payload)) == payload


def test_signal_types_strategy_includes_legacy_and_audit() -> None:
    seen: set[SignalType] = set()

    @settings(max_examples=300, database=None)
    @given(signal_types())
    def collect(t: SignalType) -> None:
        seen.add(t)

    collect()
    assert {SignalType.THOUGHT_DELTA, SignalType.AUDIT} <= seen


# -- rejection -------------------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malformed_frames())
def test_malformed_frames_raise_naming_the_field(case: tuple[bytes, str | None]) -> None:
    data, field = case
    with pytest.raises(SignalDecodeError) as info:
        decode_signal(data)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)  # callers may catch ValueError too


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"v": None}, "v"),
        ({"v": "2.1"}, "v"),
        ({"type": "thought_delta"}, "type"),
        ({"id": "evt"}, "id"),
        ({"id": "EVT_01M7YNP6SH9WAPTDJ963JM1VVE"}, "id"),
        ({"trace_id": 7}, "trace_id"),
        ({"parent_id": ""}, "parent_id"),
        ({"directed": []}, "directed"),
        ({"directed": {"id": 1}}, "directed.id"),
        ({"directed": {"type": ["a"]}}, "directed.type"),
        ({"directed": {"capabilities": "summarize"}}, "directed.capabilities"),
        ({"directed": {"capabilities": ["a", 1]}}, "directed.capabilities"),
        ({"ts": True}, "ts"),
        ({"ts": "21 Nov 2026"}, "ts"),
        ({"ts": 1e20}, "ts"),
        ({"payload": "x"}, "payload"),
        ({"meta": [1]}, "meta"),
    ],
)
def test_specific_rejections(patch: dict[str, Any], field: str) -> None:
    frame = {"v": "1", "type": "TASK", "id": "evt_01M7YNP6SH9WAPTDJ963JM1VVE", **patch}
    with pytest.raises(SignalDecodeError) as info:
        decode_signal(orjson.dumps(frame))
    assert info.value.field == field


@pytest.mark.parametrize("data", [b"", b"{", b"\xff\xfe", b"[]", b"null", b'"TASK"', b"42"])
def test_non_signals_name_no_field(data: bytes) -> None:
    with pytest.raises(SignalDecodeError) as info:
        decode_signal(data)
    assert info.value.field is None


# -- leniency ----------------------------------------------------------------


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lenient_frames())
def test_lenient_frames_are_accepted(case: tuple[bytes, frozenset[str]]) -> None:
    data, filled = case
    raw = orjson.loads(data)
    sig = decode_signal(data)
    assert set(sig.filled) == filled
    assert len(sig.filled) == len(set(sig.filled))
    assert sig.id.startswith("evt_") and sig.trace_id.startswith("trc_")
    if "id" in filled:
        assert is_ulid(sig.id[4:])
    else:
        assert sig.id == raw["id"]
    if "trace_id" in filled:
        assert is_ulid(sig.trace_id[4:])
    else:
        assert sig.trace_id == raw["trace_id"]
    assert sig.type is SignalType(raw["type"])
    assert sig.payload == (raw.get("payload") or {})
    assert sig.meta == (raw.get("meta") or {})
    assert sig.v == raw.get("v", "1")
    sig.timestamp  # noqa: B018 - every accepted ts parses
    # Re-encoded, the frame is complete and strict-valid.
    again = decode_signal(encode_signal(sig), strict=True)
    assert again == sig and again.filled == ()
    if filled:
        with pytest.raises(SignalDecodeError) as info:
            decode_signal(data, strict=True)
        assert info.value.field in filled


def test_filling_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="cosmonapse.codec"):
        sig = decode_signal(b'{"type":"HEARTBEAT","payload":{"status":"ok"}}')
    assert sig.filled == ("id", "trace_id", "ts")
    assert any("id,trace_id,ts" in r.getMessage() for r in caplog.records)


def test_filled_is_not_part_of_equality() -> None:
    sig = Signal(type=SignalType.FINAL, payload={"result": 1})
    assert sig.evolve(filled=("ts",)) == sig


def test_numeric_ts_becomes_iso_utc() -> None:
    sig = decode_signal(b'{"type":"TASK","id":"evt_1","trace_id":"trc_1","ts":0}')
    assert sig.ts == "1970-01-01T00:00:00Z"
    sig = decode_signal(b'{"type":"TASK","id":"evt_1","trace_id":"trc_1","ts":1767225600.25}')
    assert sig.ts == "2026-01-01T00:00:00.250000Z"


def test_naive_ts_is_kept_naive_and_read_as_utc() -> None:
    sig = decode_signal(b'{"type":"TASK","id":"evt_1","trace_id":"trc_1","ts":"2026-01-01T10:00:00"}')
    assert sig.ts == "2026-01-01T10:00:00"
    assert sig.timestamp.utcoffset() is not None and sig.timestamp.hour == 10
    assert orjson.loads(encode_signal(sig))["ts"] == "2026-01-01T10:00:00"


def test_legacy_and_new_types_decode() -> None:
    for name, payload in (("THOUGHT_DELTA", {"delta": "Hel", "seq": 0}), ("AUDIT", {"kind": "GUARDED"})):
        frame = {"v": "1", "id": "evt_1", "trace_id": "trc_1", "type": name, "payload": payload}
        sig = decode_signal(orjson.dumps(frame))
        assert sig.type.value == name and sig.payload == payload


def test_legacy_neuron_key_and_directed_extras_are_dropped() -> None:
    frame = {
        "v": "1",
        "id": "evt_1",
        "trace_id": "trc_1",
        "type": "TASK",
        "neuron": "summarizer",
        "directed": {"id": "summarizer", "weight": 3},
        "ts": "2026-01-01T00:00:00Z",
    }
    sig = decode_signal(orjson.dumps(frame))
    assert sig.directed == Directed(id="summarizer")
    wire = orjson.loads(encode_signal(sig))
    assert "neuron" not in wire
    assert wire["directed"] == {"id": "summarizer", "type": None, "capabilities": []}
    assert wire["payload"] == {} and wire["meta"] == {} and wire["parent_id"] is None


def test_dumps_and_loads_go_through_the_converter() -> None:
    sig = Signal(type=SignalType.TASK, payload={"input": {"a": [1, 2]}}, directed=Directed(id="n"))
    assert loads(dumps(sig), Signal) == sig
    assert loads(dumps(sig.directed), Directed) == sig.directed


def test_non_string_keys_are_written_as_the_reference_writes_them() -> None:
    payload = {"result": {7: "x", 1.5: "y", True: "z", None: "w"}}
    sig = Signal(type=SignalType.FINAL, payload=payload)
    wire = orjson.loads(encode_signal(sig))
    assert wire["payload"] == json.loads(json.dumps(payload))
    assert wire["payload"] == {"result": {"7": "x", "1.5": "y", "true": "z", "null": "w"}}


def test_json_limits_we_document() -> None:
    """Known differences from Python's json module (docs/protocol.md, "Numbers")."""
    base = b'{"type":"FINAL","id":"evt_1","trace_id":"trc_1","ts":0,"payload":{"n":%s}}'
    # Integers beyond 64 bits are read as floats...
    assert decode_signal(base % b"123456789012345678901234567890").payload["n"] == 1.2345678901234568e29
    # ...and cannot be written.
    with pytest.raises(TypeError):
        encode_signal(Signal(type=SignalType.FINAL, payload={"n": 2**64}))
    # NaN and Infinity are not JSON: such a frame is rejected as a whole.
    for token in (b"NaN", b"Infinity", b"-Infinity"):
        with pytest.raises(SignalDecodeError) as info:
            decode_signal(base % token)
        assert info.value.field is None
