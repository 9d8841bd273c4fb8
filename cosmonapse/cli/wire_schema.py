"""The wire rules as data: the envelope and each type's payload (protocol §1 and §4).

One table feeds both ``cosmo schema`` (printed as JSON Schema, draft 2020-12) and
``cosmo validate`` (checked by ``payload_problems``), so the two cannot disagree.
Payload rules say what a reference builder always writes (required) and what it may
write (optional); unknown keys are allowed, as receivers must ignore them.
"""

from __future__ import annotations

from typing import Any

from ..signal import SignalType

__all__ = ["PAYLOADS", "envelope_schema", "payload_problems", "payload_schema", "schema_document"]

DRAFT = "https://json-schema.org/draft/2020-12/schema"
ANY: None = None
OBJ, STR, ARR, BOOL, NUM, INT = "object", "string", "array", "boolean", "number", "integer"
Spec = tuple[dict[str, Any], dict[str, Any]]  # (required, optional): key -> JSON type(s) or None

T = SignalType
PAYLOADS: dict[SignalType, Spec] = {
    T.TASK: ({"input": OBJ}, {"context_ref": STR, "capabilities": ARR, "finalize": BOOL}),
    T.AGENT_OUTPUT: ({"output": OBJ}, {}),
    T.FINAL: ({"result": ANY}, {"cost": ANY}),
    T.ERROR: ({"code": STR, "message": STR, "recoverable": BOOL}, {}),
    T.TASK_OFFER: ({"input": OBJ}, {"capabilities": ARR, "deadline_ms": INT}),
    T.BID: ({"cost": NUM}, {"eta_ms": INT, "confidence": NUM}),
    T.TASK_AWARDED: ({"input": OBJ}, {"winning_bid": OBJ, "context_ref": STR, "finalize": BOOL}),
    T.TASK_DECLINED: ({}, {"reason": STR}),
    T.AUDIT: (
        {"kind": STR, "domain": STR, "outcome": STR, "attempt": INT},
        {
            "component": STR,
            "direction": STR,
            "signal": STR,
            "policy_id": STR,
            "policy_version": STR,
            "card_id": STR,
            "reason": STR,
            "hash": STR,
            "took_ms": NUM,
        },
    ),
    T.PLAN: ({"steps": ARR}, {"rationale": STR}),
    T.TOOL_CALL: ({"tool": STR, "args": OBJ}, {"call_id": STR, "tool_name": STR}),
    T.TOOL_RESULT: ({"tool": STR}, {"result": ANY, "error": STR, "call_id": STR, "tool_name": STR}),
    T.MEMORY_APPEND: ({"key": STR, "value": ANY}, {}),
    T.ESCALATION: ({"reason": STR}, {"target": STR, "context": OBJ}),
    T.CONSENSUS: ({"members": ARR, "verdict": STR}, {"votes": OBJ}),
    T.CONTEXT_SYNC: ({"snapshot": OBJ}, {"version": STR}),
    T.CRITIQUE: ({"target_event_id": STR, "issues": ARR, "verdict": STR}, {}),
    T.CLARIFICATION: ({"question": STR}, {"context": OBJ}),
    T.PERMISSION: ({"action": STR}, {"scope": ANY, "reason": STR, "context": OBJ}),
    T.CLARIFICATION_ANSWER: ({"answer": ANY}, {}),
    T.PERMISSION_DECISION: ({"granted": BOOL}, {"reason": STR, "ttl_ms": INT}),
    T.RECALL: (
        {"query": OBJ, "recall_mode": STR},
        {"filters": OBJ, "context_ref": STR, "deadline_ms": INT, "min_confidence": NUM},
    ),
    T.RECALLED: ({"engram_id": STR, "hits": ARR, "truncated": BOOL}, {"took_ms": NUM, "error": STR}),
    T.IMPRINT: ({"op": STR, "entry": OBJ}, {"merge_key": STR}),
    T.IMPRINTED: ({"engram_id": STR, "op": STR}, {"id": STR, "version": INT, "took_ms": NUM, "error": STR}),
    T.REGISTER: ({"role": STR, "capabilities": ARR}, {"version": STR, "engram": BOOL}),
    T.DEREGISTER: ({}, {"reason": STR}),
    T.HEARTBEAT: ({"status": STR}, {}),
    T.DISCOVER: ({}, {"neuron": STR, "capabilities": ARR}),
    T.STOP: ({"rollback": BOOL}, {"reason": STR}),
    T.STOPPED: ({"rolled_back": BOOL, "cancelled": INT, "compensated": INT}, {"node": STR}),
    T.THOUGHT_DELTA: ({"delta": STR}, {"seq": INT}),
}
#: Values a key must take, where the protocol fixes them.
ENUMS: dict[tuple[SignalType, str], tuple[str, ...]] = {
    (T.RECALL, "recall_mode"): ("first", "merge", "all"),
    (T.IMPRINT, "op"): ("add", "append", "merge", "upsert", "delete"),
    (T.REGISTER, "role"): ("neuron", "engram", "effector"),
}


def _prop(kind: Any, enum: tuple[str, ...] | None = None) -> dict[str, Any]:
    prop: dict[str, Any] = {} if kind is None else {"type": kind}
    if kind == ARR and kind is not None:
        prop["items"] = {}
    if enum:
        prop["enum"] = list(enum)
    return prop


def payload_schema(stype: SignalType) -> dict[str, Any]:
    """JSON Schema of one type's payload."""
    required, optional = PAYLOADS[stype]
    props = {k: _prop(v, ENUMS.get((stype, k))) for k, v in {**required, **optional}.items()}
    for key in ("capabilities", "members"):
        if key in props:
            props[key]["items"] = {"type": "string"}
    return {
        "$schema": DRAFT,
        "title": f"{stype.value} payload",
        "type": "object",
        "required": sorted(required),
        "properties": props,
        "additionalProperties": True,
    }


def envelope_schema() -> dict[str, Any]:
    """JSON Schema of the envelope (§1.2), payload left to the per-type schemas."""
    return {
        "$schema": DRAFT,
        "title": "Cosmonapse Signal envelope",
        "type": "object",
        "required": ["type"],
        "properties": {
            "v": {"type": "string", "pattern": r"^1(\..*)?$", "default": "1"},
            "id": {"type": "string", "pattern": "^evt_"},
            "trace_id": {"type": "string", "pattern": "^trc_"},
            "parent_id": {"type": ["string", "null"], "pattern": "^evt_"},
            "type": {"enum": [t.value for t in SignalType]},
            "directed": {
                "type": ["object", "null"],
                "properties": {
                    "id": {"type": ["string", "null"]},
                    "type": {"type": ["string", "null"]},
                    "capabilities": {"type": "array", "items": {"type": "string"}},
                },
            },
            "ts": {"type": ["string", "number"], "description": "ISO-8601 date-time, or Unix seconds"},
            "payload": {"type": "object"},
            "meta": {"type": "object"},
        },
        "additionalProperties": True,
        "description": "All nine keys are written by reference peers; id, trace_id and ts are filled in "
        "by lenient receivers when missing.",
    }


def schema_document() -> dict[str, Any]:
    """Everything: the envelope plus one payload schema per type, in ``$defs``."""
    env = envelope_schema()
    defs = {t.value: payload_schema(t) for t in SignalType}
    for d in defs.values():
        d.pop("$schema", None)
    env["$defs"] = defs
    env["allOf"] = [_when(t) for t in SignalType]
    return env


def _when(stype: SignalType) -> dict[str, Any]:
    payload = {"$ref": f"#/$defs/{stype.value}"}
    return {
        "if": {"properties": {"type": {"const": stype.value}}},
        "then": {"properties": {"payload": payload}},
    }


_PY_TYPES: dict[str, tuple[type, ...]] = {
    OBJ: (dict,), STR: (str,), ARR: (list,), BOOL: (bool,), NUM: (int, float), INT: (int,),
}  # fmt: skip


def _type_ok(value: Any, kind: str) -> bool:
    if kind in (NUM, INT) and isinstance(value, bool):
        return False
    return isinstance(value, _PY_TYPES[kind])


def payload_problems(stype: SignalType, payload: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, what) for each rule *payload* breaks; empty when it is fine."""
    required, optional = PAYLOADS[stype]
    problems: list[tuple[str, str]] = []
    for key, kind in required.items():
        if key not in payload:
            problems.append((f"payload.{key}", f"is required in a {stype.value}"))
        elif kind is not None and not _type_ok(payload[key], kind):
            problems.append((f"payload.{key}", f"must be {kind}, got {_json_type(payload[key])}"))
    for key, kind in optional.items():
        if (
            key in payload
            and payload[key] is not None
            and kind is not None
            and not _type_ok(payload[key], kind)
        ):
            problems.append(
                (f"payload.{key}", f"must be {kind} when present, got {_json_type(payload[key])}")
            )
    for (etype, key), allowed in ENUMS.items():
        if etype is stype and isinstance(payload.get(key), str) and payload[key] not in allowed:
            problems.append((f"payload.{key}", f"must be one of {', '.join(allowed)}, got {payload[key]!r}"))
    for key in ("capabilities", "members"):
        value = payload.get(key)
        if isinstance(value, list) and not all(isinstance(c, str) for c in value):
            problems.append((f"payload.{key}", "must be an array of strings"))
    return problems


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__
