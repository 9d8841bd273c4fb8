"""One cattrs converter for every model, and the JSON wire codec for Signals (§1).

Signals get hand-written hooks registered on the converter: decoding applies the
reference decoder's rules field by field so a bad frame fails with the name of
the offending key, and encoding writes the nine keys in the reference's order.
Every other attrs model (registry records, engram receipts, ...) uses the
converter's generated hooks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from cattrs.preconf.orjson import OrjsonConverter, make_converter

from .errors import SignalDecodeError
from .ids import new_event_id, new_trace_id
from .signal import Directed, Signal, SignalType, checked_signal, directed_to, install_codec, utc_now_iso

__all__ = [
    "MAX_JSON_DEPTH",
    "converter",
    "decode_signal",
    "dumps",
    "encode_signal",
    "json_problem",
    "loads",
    "signal_from_dict",
    "signal_to_dict",
]

log: logging.Logger = logging.getLogger("cosmonapse.codec")

converter: OrjsonConverter = make_converter()

_TYPES: dict[str, SignalType] = {t.value: t for t in SignalType}
#: Each type's wire name as a plain str (``.value`` is a property call on an enum).
_TYPE_NAMES: dict[SignalType, str] = {t: t.value for t in SignalType}


def _directed_to_dict(d: Directed) -> dict[str, Any]:
    return {"id": d.id, "type": d.type, "capabilities": list(d.capabilities)}


def signal_to_dict(sig: Signal) -> dict[str, Any]:
    """The JSON-ready dict of *sig*, keys in the reference's order."""
    d = sig.directed
    return {
        "v": sig.v,
        "id": sig.id,
        "trace_id": sig.trace_id,
        "parent_id": sig.parent_id,
        "type": _TYPE_NAMES[sig.type],
        "directed": None if d is None else _directed_to_dict(d),
        "ts": sig.ts,
        "payload": sig.payload,
        "meta": sig.meta,
    }


def _directed_from(raw: Any) -> Directed | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise SignalDecodeError("directed", f"must be an object or null, got {type(raw).__name__}")
    did = raw.get("id")
    dtype = raw.get("type")
    caps = raw.get("capabilities")
    if did is not None and not isinstance(did, str):
        raise SignalDecodeError("directed.id", "must be a string or null")
    if dtype is not None and not isinstance(dtype, str):
        raise SignalDecodeError("directed.type", "must be a string or null")
    if caps is None or caps == []:
        caps = ()
    elif not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        raise SignalDecodeError("directed.capabilities", "must be an array of strings")
    if dtype is None and not caps and did is not None:
        return directed_to(did)  # a reply's attribution: one shared (frozen) object per id
    return Directed(did, dtype, caps)


def _ts_from(raw: Any) -> str:
    if type(raw) is str:  # the usual case first
        try:
            datetime.fromisoformat(raw)
        except ValueError as exc:
            raise SignalDecodeError("ts", f"not an ISO-8601 date-time: {raw!r}") from exc
        return raw
    if isinstance(raw, bool):
        raise SignalDecodeError("ts", "must be an ISO-8601 string or a number")
    if isinstance(raw, int | float):
        try:
            moment = datetime.fromtimestamp(raw, UTC).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError) as exc:
            raise SignalDecodeError("ts", f"number out of range: {raw!r}") from exc
        return moment.isoformat() + "Z"
    if not isinstance(raw, str):
        raise SignalDecodeError("ts", f"must be an ISO-8601 string or a number, got {type(raw).__name__}")
    try:
        datetime.fromisoformat(raw)
    except ValueError as exc:
        raise SignalDecodeError("ts", f"not an ISO-8601 date-time: {raw!r}") from exc
    return raw


def signal_from_dict(raw: Any, *, strict: bool = False) -> Signal:
    """Validate *raw* (a decoded JSON value) and build a Signal.

    Rules follow the reference decoder (§1.2).  A missing ``id``, ``trace_id``
    or ``ts`` is filled with a fresh value and named in ``Signal.filled`` (and
    logged at DEBUG); with ``strict=True`` it is an error instead.  Unknown
    top-level keys are ignored.
    """
    if not isinstance(raw, dict):
        raise SignalDecodeError(None, f"a Signal must be a JSON object, got {type(raw).__name__}")
    filled: list[str] = []

    v = raw.get("v", "1")
    if not isinstance(v, str):
        raise SignalDecodeError("v", f"must be a string, got {type(v).__name__}")
    if v != "1" and v.split(".", 1)[0] != "1":
        raise SignalDecodeError("v", f"unsupported protocol version {v!r} (need 1.x)")

    type_name = raw.get("type")
    if type_name is None:
        raise SignalDecodeError("type", "is required")
    stype = _TYPES.get(type_name) if isinstance(type_name, str) else None
    if stype is None:
        raise SignalDecodeError("type", f"unknown Signal type {type_name!r}")

    sid = raw.get("id")
    if sid is None:
        if strict:
            raise SignalDecodeError("id", "is required")
        sid = new_event_id()
        filled.append("id")
    elif not isinstance(sid, str) or not sid.startswith("evt_"):
        raise SignalDecodeError("id", f"must be a string starting with 'evt_', got {sid!r}")

    trace_id = raw.get("trace_id")
    if trace_id is None:
        if strict:
            raise SignalDecodeError("trace_id", "is required")
        trace_id = new_trace_id()
        filled.append("trace_id")
    elif not isinstance(trace_id, str) or not trace_id.startswith("trc_"):
        raise SignalDecodeError("trace_id", f"must be a string starting with 'trc_', got {trace_id!r}")

    parent_id = raw.get("parent_id")
    if parent_id is not None and (not isinstance(parent_id, str) or not parent_id.startswith("evt_")):
        raise SignalDecodeError("parent_id", f"must be null or start with 'evt_', got {parent_id!r}")

    directed = _directed_from(raw.get("directed"))

    ts = raw.get("ts")
    if ts is not None:
        ts = _ts_from(ts)
    else:
        if strict:
            raise SignalDecodeError("ts", "is required")
        ts = utc_now_iso()
        filled.append("ts")

    payload = raw.get("payload")
    if payload is None:
        payload = {}
    elif not isinstance(payload, dict):
        raise SignalDecodeError("payload", f"must be an object, got {type(payload).__name__}")

    meta = raw.get("meta")
    if meta is None:
        meta = {}
    elif not isinstance(meta, dict):
        raise SignalDecodeError("meta", f"must be an object, got {type(meta).__name__}")

    if filled and log.isEnabledFor(logging.DEBUG):
        extra = {"trace_id": trace_id, "event_id": sid, "neuron": directed.id if directed else None}
        log.debug("filled missing %s of a %s frame", ",".join(filled), stype.value, extra=extra)
    gaps = tuple(filled) if filled else ()
    return checked_signal(stype, trace_id, payload, parent_id, directed, meta, sid, ts, v, gaps)


def encode_signal(sig: Signal) -> bytes:
    """Compact UTF-8 JSON of *sig* (what goes on every bus)."""
    d = signal_to_dict(sig)
    try:
        return orjson.dumps(d)
    except orjson.JSONEncodeError:
        # int/float/bool/None dict keys become strings, as the reference's json.dumps does.
        return orjson.dumps(d, option=orjson.OPT_NON_STR_KEYS)


def decode_signal(data: bytes | bytearray | memoryview | str, *, strict: bool = False) -> Signal:
    """Parse one JSON frame into a Signal; raises SignalDecodeError naming the problem."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SignalDecodeError(None, f"not JSON: {exc}") from exc
    return signal_from_dict(raw, strict=strict)


#: Deepest nesting a value inside a payload may have: orjson encodes 254 levels and a
#: Signal puts a few of its own around it (the payload, ``output``, a list...).
MAX_JSON_DEPTH = 240
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson encodes


class _NotJson(Exception):
    def __init__(self, why: str) -> None:
        self.why = why
        self.path: list[str] = []


_PLAIN = frozenset({str, bool, type(None)})  # always JSON, nothing to look into


def _check(value: Any, depth: int) -> None:
    t = type(value)
    if t in _PLAIN:
        return
    if t is dict or t is list or t is tuple:
        if depth <= 0:
            raise _NotJson(f"is nested deeper than {MAX_JSON_DEPTH} levels")
        if t is dict:
            for key in value:
                if type(key) is not str and not (key is None or isinstance(key, int | float)):
                    raise _NotJson(f"has a key of type {type(key).__name__} ({key!r}); JSON keys are strings")
            entries: Iterable[tuple[object, Any]] = value.items()
        else:
            entries = enumerate(value)
        for key, item in entries:
            if type(item) in _PLAIN:
                continue  # the common case, checked without a call
            try:
                _check(item, depth - 1)
            except _NotJson as exc:
                exc.path.append(f"[{key!r}]")
                raise
        return
    if isinstance(value, int):  # bool was handled above; int subclasses (IntEnum) encode as ints
        if not _INT_MIN <= value <= _INT_MAX:
            raise _NotJson(f"is an integer out of JSON's 64-bit range ({value})")
        return
    if isinstance(value, float):
        if value != value or value in (math.inf, -math.inf):
            raise _NotJson(f"is {value!r}, which JSON cannot carry (it would become null)")
        return
    if isinstance(value, str):
        return
    if isinstance(value, dict | list | tuple):  # subclasses: checked like their base
        _check(dict(value) if isinstance(value, dict) else list(value), depth)
        return
    kind = t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    raise _NotJson(f"is of type {kind}, which is not JSON")


def json_problem(value: Any, *, name: str = "output") -> str | None:
    """Why *value* cannot go on the wire as JSON (naming where and what), or None if it can.

    Plain JSON only: dicts (string keys, or the int/float/bool/None keys the
    reference turns into strings), lists and tuples, strings, finite floats,
    64-bit integers, booleans and None — so every bus, in-process included,
    carries the same value.  NaN and the infinities are refused, not turned into null.
    """
    try:
        _check(value, MAX_JSON_DEPTH)
    except _NotJson as exc:
        path = exc.path[::-1]
        where = "".join(path) if len(path) <= 8 else "".join(path[:8]) + "[…]"
        return f"{name}{where} {exc.why}"
    return None


def dumps(obj: Any) -> bytes:
    """Compact JSON of any attrs model or plain value, through the one converter."""
    return orjson.dumps(converter.unstructure(obj))


def loads(data: bytes | str, cls: type[Any]) -> Any:
    """Parse JSON into *cls* through the one converter."""
    return converter.structure(orjson.loads(data), cls)


converter.register_unstructure_hook(Signal, signal_to_dict)
converter.register_structure_hook(Signal, lambda raw, _cls: signal_from_dict(raw))
converter.register_unstructure_hook(Directed, _directed_to_dict)
converter.register_structure_hook(Directed, lambda raw, _cls: _directed_from(raw))


class _JsonCodec:
    """``Signal.encode``/``Signal.decode`` go through here."""

    def encode(self, sig: Signal) -> bytes:
        return encode_signal(sig)

    def decode(self, data: bytes | str) -> Signal:
        return decode_signal(data)


install_codec(_JsonCodec())
