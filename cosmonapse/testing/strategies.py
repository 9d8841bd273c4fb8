"""Hypothesis strategies for Signals, their wire form, and frames a decoder must reject or accept.

Everything here is bounded (short strings, small containers) so property tests
stay fast.  Values are restricted to what survives a JSON round trip: no NaN or
infinities, no lone surrogates, integers within 64 bits, lists rather than
tuples, string keys.

* :func:`signals` — valid :class:`~cosmonapse.Signal` objects of every type,
  payloads shaped as the reference builders shape them (protocol §4),
  ``directed`` as the reference fills it (§2).
* :func:`signal_dicts` — the same, as wire dicts (all nine keys).
* :func:`malformed_frames` — ``(frame_bytes, field)`` pairs: frames that must be
  rejected, and the field the :class:`~cosmonapse.SignalDecodeError` must name
  (``None`` for frames that are not JSON objects at all).
* :func:`lenient_frames` — ``(frame_bytes, filled)`` pairs: frames that must be
  accepted, and the set of fields the decoder has to fill in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from ..ids import CROCKFORD
from ..signal import Directed, Signal, SignalType

__all__ = [
    "ENVELOPE_KEYS",
    "directed",
    "engram_ids",
    "event_ids",
    "json_objects",
    "json_values",
    "lenient_frames",
    "malformed_frames",
    "metas",
    "payloads",
    "signal_dicts",
    "signal_types",
    "signals",
    "timestamps",
    "trace_ids",
    "ulids",
]

T = SignalType

#: The nine top-level keys of a Signal, in the order the reference writes them.
ENVELOPE_KEYS = ("v", "id", "trace_id", "parent_id", "type", "directed", "ts", "payload", "meta")

_TYPE_NAMES = frozenset(t.value for t in SignalType)

# -- building blocks ---------------------------------------------------------

#: Any text JSON can carry (lone surrogates cannot be encoded as UTF-8).
_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=10)
_nonempty_text = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=10)
#: Neuron ids, capabilities, engram and tool names: short tokens.
_names = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=10)
_capabilities = st.lists(_names, max_size=3)
_nonempty_capabilities = st.lists(_names, min_size=1, max_size=3)
_ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_counts = st.integers(min_value=0, max_value=10_000)
_positive_ints = st.integers(min_value=1, max_value=600_000)
_floats = st.floats(allow_nan=False, allow_infinity=False)
_unit = st.floats(min_value=0.0, max_value=1.0)
_costs = st.floats(min_value=0.0, max_value=1e6, allow_nan=False) | st.integers(min_value=0, max_value=10**6)
_json_scalars = st.none() | st.booleans() | _ints | _floats | _text


@functools.cache
def json_values(max_leaves: int = 8) -> SearchStrategy[Any]:
    """Small JSON values that survive an orjson round trip unchanged."""
    return st.recursive(
        _json_scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
        max_leaves=max_leaves,
    )


@functools.cache
def json_objects(*, min_size: int = 0, max_size: int = 3) -> SearchStrategy[dict[str, Any]]:
    """Small JSON objects (string keys, :func:`json_values` values)."""
    return st.dictionaries(_text, json_values(4), min_size=min_size, max_size=max_size)


def _encode_ulid(ms: int, rand: int) -> str:
    value = (ms << 80) | rand
    return "".join(CROCKFORD[(value >> shift) & 31] for shift in range(125, -5, -5))


def ulids() -> SearchStrategy[str]:
    """Canonical ULIDs: 48-bit milliseconds + 80 random bits, 26 Crockford characters."""
    return st.builds(_encode_ulid, st.integers(min_value=0, max_value=2**48 - 1), st.integers(0, 2**80 - 1))


def event_ids() -> SearchStrategy[str]:
    """Signal ids: ``evt_`` + ULID."""
    return ulids().map("evt_".__add__)


def trace_ids() -> SearchStrategy[str]:
    """Trace ids: ``trc_`` + ULID."""
    return ulids().map("trc_".__add__)


def engram_ids() -> SearchStrategy[str]:
    """Engram entry ids: ``eng_`` + ULID."""
    return ulids().map("eng_".__add__)


_moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2199, 12, 31))


@functools.cache
def timestamps() -> SearchStrategy[str]:
    """``ts`` as reference peers write it: UTC with ``Z``; microseconds (Python, fraction
    dropped when zero) or milliseconds (TypeScript ``toISOString``)."""
    python_style = _moments.map(lambda m: m.isoformat() + "Z")
    ts_style = _moments.map(lambda m: m.isoformat(timespec="milliseconds") + "Z")
    return python_style | ts_style


def signal_types() -> SearchStrategy[SignalType]:
    """Every SignalType, the legacy ``THOUGHT_DELTA`` included."""
    return st.sampled_from(tuple(SignalType))


@functools.cache
def metas() -> SearchStrategy[dict[str, Any]]:
    """``meta`` dicts: the keys the reference reads or writes (§1.4), plus free ones."""
    known = st.fixed_dictionaries(
        {},
        optional={
            "attempt": st.integers(min_value=0, max_value=10),
            "auto_bid": st.just(True),
            "catch_all": st.just(True),
            "receptor": _names,
        },
    )
    free = st.dictionaries(_names.map("x_".__add__), json_values(4), max_size=2)
    return st.builds(lambda a, b: {**a, **b}, known, free)


# -- directed (§2) -----------------------------------------------------------

_just_id = st.builds(Directed, id=_names)
_id_and_type = st.builds(Directed, id=_names, type=_names)
_engram_target = st.one_of(
    st.builds(Directed, id=_names),
    st.builds(Directed, type=_names),
    st.builds(Directed, id=_names, type=_names),
)
_DIRECTED_NULL = frozenset({T.TASK_OFFER, T.DISCOVER, T.STOP, T.STOPPED})
_DIRECTED_ID = frozenset(
    {T.HEARTBEAT, T.DEREGISTER, T.BID, T.TASK_AWARDED, T.TASK_DECLINED, T.PERMISSION_DECISION}
    | {T.CLARIFICATION_ANSWER}
)


@functools.cache
def directed(signal_type: SignalType | str | None = None) -> SearchStrategy[Directed | None]:
    """``directed`` values.

    Without a type: any :class:`~cosmonapse.Directed` (every combination of
    facets, never ``None``).  With a type: what the reference puts there for it
    (§2) — e.g. always ``None`` for TASK_OFFER, the full participant for REGISTER,
    an id and/or kind for RECALL and IMPRINT.
    """
    if signal_type is None:
        return st.builds(Directed, id=st.none() | _names, type=st.none() | _names, capabilities=_capabilities)
    t = SignalType(signal_type)
    if t in _DIRECTED_NULL:
        return st.none()
    if t in _DIRECTED_ID:
        return _just_id
    if t is T.REGISTER:
        return st.builds(Directed, id=_names, type=_names, capabilities=_capabilities)
    if t in (T.RECALL, T.IMPRINT):
        return _engram_target
    if t in (T.RECALLED, T.IMPRINTED, T.TOOL_RESULT, T.TOOL_CALL):
        return st.none() | _just_id | _id_and_type
    return st.none() | _just_id


def _directed_dict(d: Directed | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {"id": d.id, "type": d.type, "capabilities": list(d.capabilities)}


# -- payloads (§4) -----------------------------------------------------------


def _shape(
    required: dict[str, SearchStrategy[Any]], optional: dict[str, SearchStrategy[Any]] | None = None
) -> SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(required, optional=optional or {})


_AUDIT_KINDS = (
    "GUARD_RETRY", "GUARDED", "EVAL_RETRY", "TOOL_RETRY", "TRANSIENT_RETRY", "LIMIT_REFUSED",
    "DEADLINE_ABANDONED",
)  # fmt: skip
_AUDIT_DOMAINS = ("security", "eval", "tool", "reliability", "governance")
_AUDIT_OUTCOMES = (
    "re_asked", "resent", "recovered", "exhausted", "uncorrectable", "refused", "redacted",
    "escalated", "would_block",
)  # fmt: skip
_ERROR_CODES = ("NEURON_EXCEPTION", "AXON_EXCEPTION", "NEURON_ERROR", "MCP_TOOL_ERROR", "REPAIR_EXHAUSTED")


def _imprint(op: str) -> SearchStrategy[dict[str, Any]]:
    required: dict[str, SearchStrategy[Any]] = {"op": st.just(op), "entry": json_objects()}
    if op in ("merge", "upsert"):
        required["merge_key"] = _names
    return _shape(required)


def _register(role: str) -> SearchStrategy[dict[str, Any]]:
    optional: dict[str, SearchStrategy[Any]] = {"version": _nonempty_text}
    if role == "engram":
        optional["engram"] = st.just(True)
    return _shape({"role": st.just(role), "capabilities": _capabilities}, optional)


_bid_fields = {"eta_ms": _counts, "confidence": _unit}
_truthy = json_values(4).filter(bool)

_PAYLOADS: dict[SignalType, Callable[[], SearchStrategy[dict[str, Any]]]] = {
    T.TASK: lambda: _shape(
        {"input": json_objects()},
        {"context_ref": _nonempty_text, "capabilities": _nonempty_capabilities, "finalize": st.just(True)},
    ),
    T.AGENT_OUTPUT: lambda: _shape({"output": json_objects()}),
    T.FINAL: lambda: _shape(
        {"result": json_objects() | json_values(4)},
        {"cost": st.floats(min_value=1e-6, max_value=1e3) | json_objects(min_size=1)},
    ),
    T.ERROR: lambda: _shape(
        {"code": st.sampled_from(_ERROR_CODES) | _names, "message": _text, "recoverable": st.booleans()}
    ),
    T.TASK_OFFER: lambda: _shape(
        {"input": json_objects()}, {"capabilities": _nonempty_capabilities, "deadline_ms": _positive_ints}
    ),
    T.BID: lambda: _shape({"cost": _costs}, _bid_fields),
    T.TASK_AWARDED: lambda: _shape(
        {"input": json_objects()},
        {
            "winning_bid": _shape({"cost": _costs}, _bid_fields),
            "context_ref": _text,
            "finalize": st.just(True),
        },
    ),
    T.TASK_DECLINED: lambda: _shape({}, {"reason": st.just("not selected") | _text}),
    T.AUDIT: lambda: _shape(
        {
            "kind": st.sampled_from(_AUDIT_KINDS),
            "domain": st.sampled_from(_AUDIT_DOMAINS),
            "outcome": st.sampled_from(_AUDIT_OUTCOMES),
            "attempt": st.integers(min_value=1, max_value=10),
        },
        {
            "component": _names,
            "direction": st.sampled_from(("inbound", "outbound")),
            "signal": st.sampled_from(sorted(_TYPE_NAMES)),
            "policy_id": _names,
            "policy_version": _names,
            "card_id": _names,
            "reason": _text,
            "hash": _names,
            "took_ms": _counts,
        },
    ),
    T.PLAN: lambda: _shape({"steps": st.lists(json_values(4), max_size=3)}, {"rationale": _text}),
    T.TOOL_CALL: lambda: _shape({"tool": _names, "args": json_objects()}, {"call_id": _names}),
    T.TOOL_RESULT: lambda: (
        _shape(
            {"tool": _names, "result": json_values(4).filter(lambda v: v is not None)}, {"call_id": _names}
        )
        | _shape({"tool": _names, "error": _text}, {"call_id": _names})
    ),
    T.MEMORY_APPEND: lambda: _shape({"key": _text, "value": json_values()}),
    T.ESCALATION: lambda: _shape({"reason": _text}, {"target": _names, "context": json_objects()}),
    T.CONSENSUS: lambda: _shape(
        {"members": _capabilities, "verdict": _text}, {"votes": st.dictionaries(_names, _text, max_size=3)}
    ),
    T.CONTEXT_SYNC: lambda: _shape({"snapshot": json_objects()}, {"version": _text}),
    T.CRITIQUE: lambda: _shape(
        {"target_event_id": event_ids(), "issues": st.lists(json_values(4), max_size=3), "verdict": _text}
    ),
    T.CLARIFICATION: lambda: _shape({"question": _text}, {"context": json_objects(min_size=1)}),
    T.PERMISSION: lambda: _shape(
        {"action": _text}, {"scope": _truthy, "reason": _text, "context": json_objects(min_size=1)}
    ),
    T.CLARIFICATION_ANSWER: lambda: _shape({"answer": json_values()}),
    T.PERMISSION_DECISION: lambda: _shape({"granted": st.booleans()}, {"reason": _text, "ttl_ms": _counts}),
    T.RECALL: lambda: _shape(
        {"query": json_objects(), "recall_mode": st.sampled_from(("first", "merge", "all"))},
        {
            "filters": json_objects(),
            "context_ref": _names,
            "deadline_ms": _positive_ints,
            "min_confidence": _unit,
        },
    ),
    T.RECALLED: lambda: _shape(
        {
            "engram_id": _names,
            "hits": st.lists(
                _shape({"id": engram_ids(), "entry": json_objects(), "score": _unit}),
                max_size=3,
            ),
            "truncated": st.booleans(),
        },
        {"took_ms": _counts, "error": _text},
    ),
    T.IMPRINT: lambda: st.sampled_from(("add", "append", "merge", "upsert", "delete")).flatmap(_imprint),
    T.IMPRINTED: lambda: _shape(
        {"engram_id": _names, "op": st.sampled_from(("add", "append", "merge", "upsert", "delete"))},
        {
            "id": engram_ids(),
            "version": _counts,
            "took_ms": _counts,
            "error": _text,
        },
    ),
    T.REGISTER: lambda: st.sampled_from(("neuron", "engram", "effector")).flatmap(_register),
    T.DEREGISTER: lambda: _shape({}, {"reason": _nonempty_text}),
    T.HEARTBEAT: lambda: _shape({"status": st.just("ok")}),
    T.DISCOVER: lambda: _shape({}, {"neuron": _names, "capabilities": _capabilities}),
    T.STOP: lambda: _shape({"rollback": st.booleans()}, {"reason": _text}),
    T.STOPPED: lambda: _shape(
        {"rolled_back": st.booleans(), "cancelled": _counts, "compensated": _counts}, {"node": _names}
    ),
    T.THOUGHT_DELTA: lambda: _shape({"delta": _text}, {"seq": _counts}),
}

_payload_cache: dict[SignalType, SearchStrategy[dict[str, Any]]] = {}


def payloads(signal_type: SignalType | str) -> SearchStrategy[dict[str, Any]]:
    """Payloads shaped as the reference builders shape them for *signal_type* (§4).

    Optional keys come and go; "omit-if-falsy" keys are only ever present with a
    truthy value, exactly as the reference writes them.
    """
    t = SignalType(signal_type)
    strategy = _payload_cache.get(t)
    if strategy is None:
        strategy = _payload_cache[t] = _PAYLOADS[t]()
    return strategy


# -- whole Signals -----------------------------------------------------------


def _type_list(types: Iterable[SignalType | str] | None) -> tuple[SignalType, ...]:
    if types is None:
        return tuple(SignalType)
    chosen = tuple(SignalType(t) for t in types)
    if not chosen:
        raise ValueError("types must name at least one SignalType")
    return chosen


@functools.cache
def _signal_of(t: SignalType) -> SearchStrategy[Signal]:
    return st.builds(
        Signal,
        type=st.just(t),
        trace_id=trace_ids(),
        payload=payloads(t),
        parent_id=st.none() | event_ids(),
        directed=directed(t),
        meta=metas(),
        id=event_ids(),
        ts=timestamps(),
    )


def signals(types: Iterable[SignalType | str] | None = None) -> SearchStrategy[Signal]:
    """Valid Signals of every type (or only of *types*), as a reference peer would send them."""
    return st.one_of([_signal_of(t) for t in _type_list(types)])


@functools.cache
def _dict_of(t: SignalType) -> SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "v": st.just("1"),
            "id": event_ids(),
            "trace_id": trace_ids(),
            "parent_id": st.none() | event_ids(),
            "type": st.just(t.value),
            "directed": (directed(t) | st.none() | directed()).map(_directed_dict),
            "ts": timestamps(),
            "payload": payloads(t),
            "meta": metas(),
        }
    )


def signal_dicts(types: Iterable[SignalType | str] | None = None) -> SearchStrategy[dict[str, Any]]:
    """Wire dicts of valid Signals: all nine keys, ``directed`` with all three facets or null.

    ``directed`` is sometimes shaped per type and sometimes any combination of
    facets, since the decoder must accept both.
    """
    return st.one_of([_dict_of(t) for t in _type_list(types)])


# -- frames that must be rejected -------------------------------------------

_non_strings = st.one_of(
    _ints, _floats, st.booleans(), st.lists(_ints, max_size=2), st.dictionaries(_names, _ints, max_size=2)
)
_non_objects = st.one_of(_ints, _floats, st.booleans(), _text, st.lists(_ints, max_size=2))


def _without_prefix(prefix: str) -> SearchStrategy[str]:
    other = "trc_" if prefix == "evt_" else "evt_"
    return st.one_of(
        _text.filter(lambda s: not s.startswith(prefix)),
        ulids(),
        ulids().map(other.__add__),
        ulids().map(prefix.upper().__add__),
        ulids().map(lambda u: " " + prefix + u),
    )


_bad_versions = st.one_of(
    _text.filter(lambda s: s.split(".", 1)[0] != "1"),
    st.sampled_from(("2", "2.0", "0.9", "", "v1", "11", "1x", " 1")),
)
_bad_type_names = st.one_of(
    _text.filter(lambda s: s not in _TYPE_NAMES),
    st.sampled_from(sorted(_TYPE_NAMES)).map(str.lower),
    st.sampled_from(sorted(_TYPE_NAMES)).map(lambda n: n + " "),
)
_bad_timestamps = st.one_of(
    st.booleans(),
    st.lists(_ints, max_size=2),
    st.dictionaries(_names, _ints, max_size=2),
    st.sampled_from(("", "yesterday", "now", "2026-13-01T00:00:00Z", "2026-11-21T25:00:00", "21/11/2026")),
    _text.map("not a date: ".__add__),
    st.sampled_from((1e20, -1e20, 2**63 - 1, -(2**63))),
)

_MISSING = object()

#: field named by the error -> values that must make the decoder reject the frame.
_BAD_VALUES: dict[str, SearchStrategy[Any]] = {
    "v": _non_strings | _bad_versions,
    "id": _non_strings | _without_prefix("evt_"),
    "trace_id": _non_strings | _without_prefix("trc_"),
    "parent_id": _non_strings | _without_prefix("evt_"),
    "type": _non_strings | _bad_type_names | st.none() | st.just(_MISSING),
    "directed": _non_objects,
    "directed.id": _non_strings,
    "directed.type": _non_strings,
    "directed.capabilities": st.one_of(
        _text, _ints, st.booleans(), st.dictionaries(_names, _names, max_size=2),
        st.lists(_names, max_size=2).flatmap(
            lambda names: st.lists(_non_strings, min_size=1, max_size=2).map(lambda bad: names + bad)
        ),
    ),
    "ts": _bad_timestamps,
    "payload": _non_objects,
    "meta": _non_objects,
}  # fmt: skip


def _corrupt(base: dict[str, Any], field: str, bad: Any) -> tuple[bytes, str | None]:
    frame = dict(base)
    if field.startswith("directed."):
        facet = field.split(".", 1)[1]
        inner = dict(frame["directed"] or {"id": None, "type": None, "capabilities": []})
        inner[facet] = bad
        frame["directed"] = inner
    elif bad is _MISSING:
        del frame[field]
    else:
        frame[field] = bad
    return orjson.dumps(frame), field


def _not_json() -> SearchStrategy[bytes]:
    truncated = signal_dicts().flatmap(
        lambda d: st.integers(0, len(orjson.dumps(d)) - 1).map(lambda k: orjson.dumps(d)[:k])
    )
    return st.one_of(
        st.sampled_from((b"", b"{", b"}", b"nul", b"NaN", b'{"v":"1",}', b"{'v': '1'}", b'{"type":"TASK"')),
        st.binary(max_size=20).map(lambda b: b"\xff" + b),
        truncated,
        signal_dicts().map(lambda d: orjson.dumps(d) + b"}"),
    )


def malformed_frames() -> SearchStrategy[tuple[bytes, str | None]]:
    """``(frame_bytes, field)``: frames that must raise ``SignalDecodeError`` naming *field*.

    Each frame is a valid Signal with exactly one thing wrong — a wrong JSON type
    for a field, an id without its prefix, an unsupported version, an unknown or
    missing type, a bad timestamp, a bad ``directed`` facet — or not a Signal at
    all (a JSON non-object, or bytes that are not JSON), for which *field* is
    ``None``.
    """
    corrupted = [
        st.builds(_corrupt, signal_dicts(), st.just(field), bad) for field, bad in _BAD_VALUES.items()
    ]
    whole: list[SearchStrategy[tuple[bytes, str | None]]] = [
        (_non_objects | st.none()).map(lambda value: (orjson.dumps(value), None)),
        _not_json().map(lambda data: (data, None)),
    ]
    return st.one_of(*corrupted, *whole)


# -- frames that must be accepted -------------------------------------------

_offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@functools.cache
def _lenient_ts() -> SearchStrategy[Any]:
    """Timestamps a reference peer still accepts: numbers, offsets, naive ISO text."""
    return st.one_of(
        st.integers(min_value=0, max_value=7_000_000_000),
        st.floats(min_value=0, max_value=7e9),
        st.builds(lambda m, tz: m.replace(tzinfo=tz).isoformat(), _moments, _offsets),
        _moments.map(datetime.isoformat),
        _moments.map(lambda m: m.replace(tzinfo=UTC).isoformat()),
    )


_keep_drop_null = st.sampled_from(("keep", "keep", "drop", "null"))
_version_change = st.sampled_from(("keep", "keep", "drop", "minor"))
_minor_versions = st.text("0123456789", min_size=1, max_size=3).map("1.".__add__)
_one_in_four = st.integers(0, 3).map(lambda n: n == 0)
_extra_keys = st.dictionaries(
    st.sampled_from(("neuron", "extra", "seq", "x")) | _names.filter(lambda k: k not in ENVELOPE_KEYS),
    json_values(2),
    max_size=2,
)


@functools.cache
def _any_signal_dict() -> SearchStrategy[dict[str, Any]]:
    return signal_dicts()


@st.composite
def _lenient(draw: st.DrawFn) -> tuple[bytes, frozenset[str]]:
    frame = dict(draw(_any_signal_dict()))
    filled: set[str] = set()
    # id, trace_id and ts may be left out (or null): the decoder fills them in.
    for key in ("id", "trace_id", "ts"):
        how = draw(_keep_drop_null)
        if how == "drop":
            del frame[key]
            filled.add(key)
        elif how == "null":
            frame[key] = None
            filled.add(key)
    if "ts" not in filled and draw(st.booleans()):
        frame["ts"] = draw(_lenient_ts())
    # v: left out, or any 1.x.
    how = draw(_version_change)
    if how == "drop":
        del frame["v"]
    elif how == "minor":
        frame["v"] = draw(_minor_versions)
    # Optional keys left out or null; unknown top-level keys ignored.
    for key in ("parent_id", "directed", "payload", "meta"):
        how = draw(_keep_drop_null)
        if how == "drop":
            del frame[key]
        elif how == "null":
            frame[key] = None
    if isinstance(frame.get("directed"), dict):
        inner = dict(frame["directed"])
        for facet in ("id", "type", "capabilities"):
            if draw(_one_in_four):
                del inner[facet]
        if draw(_one_in_four):
            inner["capabilities"] = None
        if draw(_one_in_four):
            inner["extra"] = draw(json_values(2))
        frame["directed"] = inner
    frame.update(draw(_extra_keys))
    return orjson.dumps(frame), frozenset(filled)


def lenient_frames() -> SearchStrategy[tuple[bytes, frozenset[str]]]:
    """``(frame_bytes, filled)``: frames that must be accepted, and what the decoder fills in.

    Starting from a valid Signal, any of: ``id``/``trace_id``/``ts`` left out or
    null (named in *filled*), ``ts`` as Unix seconds, with an offset or naive,
    ``v`` left out or ``"1.x"``, ``parent_id``/``directed``/``payload``/``meta``
    left out or null, ``directed`` with facets missing or extra, and unknown
    top-level keys (such as the legacy ``neuron``).
    """
    return _lenient()
