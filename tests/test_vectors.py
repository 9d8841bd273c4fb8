"""The golden vectors (reference 0.1.14 frames) against our codec."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import orjson
import pytest

from cosmonapse import SignalDecodeError, SignalType
from cosmonapse.codec import decode_signal, encode_signal, signal_from_dict, signal_to_dict
from cosmonapse.ids import is_ulid
from cosmonapse.testing import Vector, invalid_vectors, lenient_vectors, valid_frames, vector_text

#: Each ``why`` of invalid.jsonl -> the field our SignalDecodeError must name (None: the frame as a whole).
INVALID_FIELD = {
    "unknown type": "type",
    "lower-case type": "type",
    "version 2": "v",
    "version as number": "v",
    "id without evt_ prefix": "id",
    "trace_id without trc_ prefix": "trace_id",
    "parent_id without evt_ prefix": "parent_id",
    "payload is an array": "payload",
    "meta is a string": "meta",
    "directed is a string": "directed",
    "missing type": "type",
    "not an object": None,
}

#: Each ``why`` of lenient.jsonl -> the fields the decoder must fill in.
LENIENT_FILLED = {
    "missing id": {"id"},
    "missing trace_id": {"trace_id"},
    "missing ts": {"ts"},
    "numeric ts": set(),
    "ts with offset": set(),
    "extra top-level key": set(),
    "version 1.7": set(),
}

VALID = valid_frames()
INVALID = invalid_vectors()
LENIENT = lenient_vectors()


def _ids(vectors: tuple[Vector, ...]) -> list[str]:
    return [v.why for v in vectors]


def test_loader_reads_every_file() -> None:
    assert len(VALID) == 45
    assert len(INVALID) == len(INVALID_FIELD) == 12
    assert len(LENIENT) == len(LENIENT_FILLED) == 7
    assert {v.why for v in INVALID} == set(INVALID_FIELD)
    assert {v.why for v in LENIENT} == set(LENIENT_FILLED)
    assert INVALID[0].data == INVALID[0].frame.encode()
    assert vector_text("valid.jsonl").splitlines()[0] == VALID[0]


def test_loader_refuses_unknown_file() -> None:
    with pytest.raises(ValueError, match="unknown vector file"):
        vector_text("../../codec.py")


def test_valid_covers_all_reference_types() -> None:
    seen = {orjson.loads(line)["type"] for line in VALID}
    assert seen == {t.value for t in SignalType} - {"THOUGHT_DELTA"}
    assert len(seen) == 31


@pytest.mark.parametrize("line", VALID, ids=[f"{i}-{orjson.loads(x)['type']}" for i, x in enumerate(VALID)])
def test_valid_round_trips(line: str) -> None:
    sig = decode_signal(line)
    assert sig.filled == ()
    assert orjson.loads(encode_signal(sig)) == orjson.loads(line)
    # Byte-for-byte too: the reference writes the nine keys in our order, compactly.
    assert encode_signal(sig) == line.encode()
    assert decode_signal(line, strict=True) == sig
    assert signal_from_dict(orjson.loads(line)) == sig
    assert signal_to_dict(sig) == orjson.loads(line)


@pytest.mark.parametrize("vector", INVALID, ids=_ids(INVALID))
def test_invalid_is_rejected_naming_the_field(vector: Vector) -> None:
    with pytest.raises(SignalDecodeError) as info:
        decode_signal(vector.data)
    assert info.value.field == INVALID_FIELD[vector.why]
    if info.value.field is not None:
        assert repr(info.value.field) in str(info.value)


@pytest.mark.parametrize("vector", LENIENT, ids=_ids(LENIENT))
def test_lenient_is_accepted(vector: Vector) -> None:
    raw = orjson.loads(vector.frame)
    sig = decode_signal(vector.data)
    assert set(sig.filled) == LENIENT_FILLED[vector.why]
    for key, prefix in (("id", "evt_"), ("trace_id", "trc_")):
        value = getattr(sig, key)
        if key in sig.filled:
            assert value.startswith(prefix) and is_ulid(value[4:])
        else:
            assert value == raw[key]
    assert sig.type is SignalType(raw["type"])
    assert sig.payload == raw["payload"]
    # What we re-encode is a strict, complete frame.
    again = decode_signal(encode_signal(sig), strict=True)
    assert again == sig and again.filled == ()


@pytest.mark.parametrize("vector", [v for v in LENIENT if LENIENT_FILLED[v.why]], ids=lambda v: v.why)
def test_lenient_missing_fields_are_errors_when_strict(vector: Vector) -> None:
    with pytest.raises(SignalDecodeError) as info:
        decode_signal(vector.data, strict=True)
    assert {info.value.field} == LENIENT_FILLED[vector.why]


def test_lenient_details() -> None:
    by_why = {v.why: decode_signal(v.data) for v in LENIENT}
    assert by_why["numeric ts"].ts == "2026-01-01T00:00:00.500000Z"
    assert by_why["numeric ts"].timestamp == datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    assert by_why["ts with offset"].ts == "2026-01-01T00:00:00+02:00"
    assert by_why["ts with offset"].timestamp == datetime(2025, 12, 31, 22, 0, tzinfo=UTC)
    assert by_why["version 1.7"].v == "1.7"
    assert "extra" not in orjson.loads(encode_signal(by_why["extra top-level key"]))
    filled_ts = by_why["missing ts"]
    assert filled_ts.ts.endswith("Z")
    assert abs((datetime.now(UTC) - filled_ts.timestamp).total_seconds()) < 60


def test_test_kit_exports_resolve() -> None:
    import cosmonapse.testing as kit

    for name in kit.__all__:
        assert getattr(kit, name) is not None, name
    with pytest.raises(AttributeError):
        kit.no_such_helper  # noqa: B018


def test_vectors_load_without_hypothesis() -> None:
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "import cosmonapse.testing as kit\n"
        "assert len(kit.valid_frames()) == 45\n"
        "try:\n    kit.signals\nexcept ImportError:\n    print('lazy')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "lazy"
