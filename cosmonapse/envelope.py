"""Envelope builders: one function per Signal type, building the payloads of protocol §4.

Code written for the reference SDK builds Signals with these (``task_signal``,
``final_signal``, … ``stopped_signal``); they have the reference's names,
keywords and payload rules — optional keys are left out when unset.  They are
also how this package builds every cognition Signal itself (the ``emit_*``
methods of a Dendrite and of a ``NeuronContext``), so there is one place that
says what a payload looks like.

Addressing: every builder takes ``directed=`` (a ``Directed``) and, as a
shorthand, ``neuron=`` for ``Directed(neuron)``.  Two of our own rules on top
of the reference's: TOOL_CALL and TOOL_RESULT carry ``tool_name`` beside
``tool`` (seed 000 reads ``tool_name``; reference peers read ``tool``), and
``thought_delta_signal`` builds the legacy THOUGHT_DELTA the seeds stream.
"""

from __future__ import annotations

from typing import Any

from .ids import new_event_id, new_trace_id
from .signal import Directed, Signal, SignalType

__all__ = [
    "Directed",
    "Signal",
    "SignalType",
    "agent_output_signal",
    "audit_signal",
    "bid_signal",
    "clarification_answer_signal",
    "clarification_signal",
    "consensus_signal",
    "context_sync_signal",
    "critique_signal",
    "deregister_signal",
    "directed_to",
    "discover_signal",
    "error_signal",
    "escalation_signal",
    "final_signal",
    "heartbeat_signal",
    "imprint_signal",
    "imprinted_signal",
    "memory_append_signal",
    "new_event_id",
    "new_trace_id",
    "permission_decision_signal",
    "permission_signal",
    "plan_signal",
    "recall_signal",
    "recalled_signal",
    "register_signal",
    "stop_signal",
    "stopped_signal",
    "task_awarded_signal",
    "task_declined_signal",
    "task_offer_signal",
    "task_signal",
    "thought_delta_signal",
    "tool_call_signal",
    "tool_result_signal",
]

T = SignalType
RECALL_MODES = ("first", "merge", "all")
IMPRINT_OPS = ("add", "append", "merge", "upsert", "delete")


def directed_to(
    id: str | None = None, *, type: str | None = None, capabilities: list[str] | None = None
) -> Directed:
    """A ``Directed`` (target or attribution), as the reference spells it."""
    return Directed(id, type, tuple(capabilities or ()))


def _to(directed: Directed | None, neuron: str | None) -> Directed | None:
    if directed is not None:
        return directed
    return Directed(neuron) if neuron else None


def _with(payload: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """*payload* plus the optional keys that are set (not None)."""
    for key, value in optional.items():
        if value is not None:
            payload[key] = value
    return payload


def _signal(
    stype: SignalType,
    trace_id: str | None,
    parent_id: str | None,
    directed: Directed | None,
    payload: dict[str, Any],
    meta: dict[str, Any] | None,
) -> Signal:
    return Signal(
        type=stype,
        trace_id=trace_id or new_trace_id(),
        parent_id=parent_id,
        directed=directed,
        payload=payload,
        meta=dict(meta or {}),
    )


# -- starting and ending work ----------------------------------------------------------------------
def task_signal(
    *, trace_id: str | None = None, parent_id: str | None = None, directed: Directed | None = None,
    neuron: str | None = None, input: dict[str, Any], context_ref: str | None = None,
    capabilities: list[str] | None = None, finalize: bool = False, meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """TASK ``{input, context_ref?, capabilities?, finalize?}`` on a new trace unless given."""
    payload = {"input": input, **task_payload(context_ref, capabilities, finalize)}
    return _signal(T.TASK, trace_id, parent_id, _to(directed, neuron), payload, meta)


def task_payload(context_ref: str | None, capabilities: list[str] | None, finalize: bool) -> dict[str, Any]:
    """The optional keys of a TASK (or an award) payload, left out when unset."""
    payload: dict[str, Any] = {}
    if context_ref:
        payload["context_ref"] = context_ref
    if capabilities:
        payload["capabilities"] = list(capabilities)
    if finalize:
        payload["finalize"] = True
    return payload


def agent_output_signal(
    *, trace_id: str, parent_id: str | None, directed: Directed | None = None, neuron: str | None = None,
    output: Any, meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """AGENT_OUTPUT ``{output}`` (a non-dict output becomes ``{"value": output}``, as an Axon does)."""
    body = output if isinstance(output, dict) else {"value": output}
    return _signal(T.AGENT_OUTPUT, trace_id, parent_id, _to(directed, neuron), {"output": body}, meta)


def final_signal(
    *, trace_id: str, parent_id: str | None, directed: Directed | None = None, neuron: str | None = None,
    result: Any, cost: Any = None, meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """FINAL ``{result, cost?}``: the workflow's conclusion."""
    payload: dict[str, Any] = {"result": result}
    if cost:
        payload["cost"] = cost
    return _signal(T.FINAL, trace_id, parent_id, _to(directed, neuron), payload, meta)


def error_signal(
    *, trace_id: str, parent_id: str | None = None, directed: Directed | None = None,
    neuron: str | None = None, code: str, message: str, recoverable: bool = False,
    meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """ERROR ``{code, message, recoverable}`` (``recoverable`` is always present)."""
    payload = {"code": code, "message": message, "recoverable": bool(recoverable)}
    return _signal(T.ERROR, trace_id, parent_id, _to(directed, neuron), payload, meta)


# -- human in the loop -------------------------------------------------------------------------------
def clarification_signal(
    *, trace_id: str, parent_id: str | None, directed: Directed | None = None, neuron: str | None = None,
    question: str, context: dict[str, Any] | None = None, meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """CLARIFICATION ``{question, context?}``: the Neuron needs more to go on."""
    payload: dict[str, Any] = {"question": question}
    if context:
        payload["context"] = context
    return _signal(T.CLARIFICATION, trace_id, parent_id, _to(directed, neuron), payload, meta)


def permission_signal(
    *, trace_id: str, parent_id: str | None, directed: Directed | None = None, neuron: str | None = None,
    action: str, scope: Any = None, reason: str | None = None, context: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """PERMISSION ``{action, scope?, reason?, context?}``: the Neuron asks before it acts."""
    payload: dict[str, Any] = {"action": action}
    if scope:
        payload["scope"] = scope
    if reason is not None:
        payload["reason"] = reason
    if context:
        payload["context"] = context
    return _signal(T.PERMISSION, trace_id, parent_id, _to(directed, neuron), payload, meta)


def clarification_answer_signal(
    *, trace_id: str, parent_id: str, answer: Any, directed: Directed | None = None,
    neuron: str | None = None, meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """CLARIFICATION_ANSWER ``{answer}``; ``parent_id`` is the CLARIFICATION's id."""
    return _signal(
        T.CLARIFICATION_ANSWER, trace_id, parent_id, _to(directed, neuron), {"answer": answer}, meta
    )


def permission_decision_signal(
    *, trace_id: str, parent_id: str, granted: bool, directed: Directed | None = None,
    neuron: str | None = None, reason: str | None = None, ttl_ms: int | None = None,
    meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """PERMISSION_DECISION ``{granted, reason?, ttl_ms?}``; ``parent_id`` is the PERMISSION's id."""
    payload = _with({"granted": bool(granted)}, reason=reason, ttl_ms=None if ttl_ms is None else int(ttl_ms))
    return _signal(T.PERMISSION_DECISION, trace_id, parent_id, _to(directed, neuron), payload, meta)


# -- the cognition stream ----------------------------------------------------------------------------
def plan_signal(
    *, trace_id: str, parent_id: str | None, directed: Directed | None = None, neuron: str | None = None,
    steps: list[Any], rationale: str | None = None, meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """PLAN ``{steps, rationale?}``."""
    payload = _with({"steps": list(steps)}, rationale=rationale)
    return _signal(T.PLAN, trace_id, parent_id, _to(directed, neuron), payload, meta)


def thought_delta_signal(
    *, trace_id: str, parent_id: str | None, directed: Directed | None = None, neuron: str | None = None,
    delta: str, seq: int | None = None, meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """THOUGHT_DELTA ``{delta, seq?}``: a piece of streamed text."""
    payload = _with({"delta": delta}, seq=seq)
    return _signal(T.THOUGHT_DELTA, trace_id, parent_id, _to(directed, neuron), payload, meta)


def tool_call_signal(
    *, trace_id: str, parent_id: str | None, directed: Directed | None = None, neuron: str | None = None,
    tool: str, args: dict[str, Any], call_id: str | None = None, meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """TOOL_CALL ``{tool, tool_name, args, call_id?}`` (``tool_name`` = ``tool``, for seed 000)."""
    payload = _with({"tool": tool, "tool_name": tool, "args": args}, call_id=call_id)
    return _signal(T.TOOL_CALL, trace_id, parent_id, _to(directed, neuron), payload, meta)


def tool_result_signal(
    *, trace_id: str, parent_id: str | None, directed: Directed | None = None, neuron: str | None = None,
    tool: str, result: Any = None, error: str | None = None, call_id: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """TOOL_RESULT ``{tool, tool_name, result?, error?, call_id?}``; ``parent_id`` is the TOOL_CALL."""
    payload = _with({"tool": tool, "tool_name": tool}, result=result, error=error, call_id=call_id)
    return _signal(T.TOOL_RESULT, trace_id, parent_id, _to(directed, neuron), payload, meta)


def memory_append_signal(
    *, trace_id: str, parent_id: str | None, directed: Directed | None = None, neuron: str | None = None,
    key: str, value: Any, meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """MEMORY_APPEND ``{key, value}``."""
    return _signal(
        T.MEMORY_APPEND, trace_id, parent_id, _to(directed, neuron), {"key": key, "value": value}, meta
    )


def critique_signal(
    *, trace_id: str, parent_id: str | None, directed: Directed | None = None, neuron: str | None = None,
    target_event_id: str, issues: list[Any], verdict: str, meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """CRITIQUE ``{target_event_id, issues, verdict}``."""
    payload = {"target_event_id": target_event_id, "issues": list(issues), "verdict": verdict}
    return _signal(T.CRITIQUE, trace_id, parent_id, _to(directed, neuron), payload, meta)


def escalation_signal(
    *, trace_id: str, parent_id: str | None, directed: Directed | None = None, neuron: str | None = None,
    reason: str, target: str | None = None, context: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """ESCALATION ``{reason, target?, context?}``."""
    payload = _with({"reason": reason}, target=target, context=context)
    return _signal(T.ESCALATION, trace_id, parent_id, _to(directed, neuron), payload, meta)


def consensus_signal(
    *, trace_id: str, parent_id: str | None, directed: Directed | None = None, neuron: str | None = None,
    members: list[str], verdict: str, votes: dict[str, Any] | None = None, meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """CONSENSUS ``{members, verdict, votes?}``."""
    payload = _with({"members": list(members), "verdict": verdict}, votes=votes)
    return _signal(T.CONSENSUS, trace_id, parent_id, _to(directed, neuron), payload, meta)


def context_sync_signal(
    *, trace_id: str, parent_id: str | None, directed: Directed | None = None, neuron: str | None = None,
    snapshot: dict[str, Any], version: str | None = None, meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """CONTEXT_SYNC ``{snapshot, version?}``."""
    payload = _with({"snapshot": snapshot}, version=version)
    return _signal(T.CONTEXT_SYNC, trace_id, parent_id, _to(directed, neuron), payload, meta)


def audit_signal(
    *, trace_id: str, parent_id: str | None, directed: Directed | None = None, neuron: str | None = None,
    kind: str, domain: str, outcome: str, attempt: int = 1, component: str | None = None,
    direction: str | None = None, signal: str | None = None, policy_id: str | None = None,
    policy_version: str | None = None, card_id: str | None = None, reason: str | None = None,
    hash: str | None = None, took_ms: int | None = None, meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """AUDIT ``{kind, domain, outcome, attempt, ...}`` (the optional keys only when set)."""
    payload = _with(
        {"kind": kind, "domain": domain, "outcome": outcome, "attempt": attempt},
        component=component, direction=direction, signal=signal, policy_id=policy_id,
        policy_version=policy_version, card_id=card_id, reason=reason, hash=hash, took_ms=took_ms,
    )  # fmt: skip
    return _signal(T.AUDIT, trace_id, parent_id, _to(directed, neuron), payload, meta)


# -- bidding -----------------------------------------------------------------------------------------
def task_offer_signal(
    *, trace_id: str | None = None, parent_id: str | None = None, input: dict[str, Any],
    capabilities: list[str] | None = None, deadline_ms: int | None = None, meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """TASK_OFFER ``{input, capabilities?, deadline_ms?}`` (``directed`` is null)."""
    payload: dict[str, Any] = {"input": input}
    if capabilities:
        payload["capabilities"] = list(capabilities)
    if deadline_ms:
        payload["deadline_ms"] = int(deadline_ms)
    return _signal(T.TASK_OFFER, trace_id, parent_id, None, payload, meta)


def bid_signal(
    *, trace_id: str, parent_id: str, directed: Directed | None = None, neuron: str | None = None,
    cost: float, eta_ms: int | None = None, confidence: float | None = None,
    meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """BID ``{cost, eta_ms?, confidence?}``; ``parent_id`` is the offer, ``directed.id`` the bidder."""
    payload = _with({"cost": float(cost)}, eta_ms=eta_ms, confidence=confidence)
    return _signal(T.BID, trace_id, parent_id, _to(directed, neuron), payload, meta)


def task_awarded_signal(
    *, trace_id: str, parent_id: str, directed: Directed | None = None, neuron: str | None = None,
    input: dict[str, Any], winning_bid: dict[str, Any] | None = None, context_ref: str | None = None,
    finalize: bool = False, meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """TASK_AWARDED ``{input, winning_bid?, context_ref?, finalize?}``; ``parent_id`` is the winning BID."""
    payload = _with({"input": input}, winning_bid=winning_bid, context_ref=context_ref)
    if finalize:
        payload["finalize"] = True
    return _signal(T.TASK_AWARDED, trace_id, parent_id, _to(directed, neuron), payload, meta)


def task_declined_signal(
    *, trace_id: str, parent_id: str, directed: Directed | None = None, neuron: str | None = None,
    reason: str | None = None, meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """TASK_DECLINED ``{reason?}``; ``parent_id`` is the losing BID."""
    return _signal(
        T.TASK_DECLINED, trace_id, parent_id, _to(directed, neuron), _with({}, reason=reason), meta
    )


# -- presence ----------------------------------------------------------------------------------------
def _participant(directed: Directed | None, neuron: str | None, what: str) -> Directed:
    target = _to(directed, neuron)
    if target is None or not target.id:
        raise ValueError(f"{what} needs the participant: directed=Directed(id, ...) or neuron=")
    return target


def register_signal(
    *, directed: Directed | None = None, neuron: str | None = None, capabilities: list[str] | None = None,
    version: str | None = None, engram: bool = False, role: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """REGISTER ``{role, capabilities, version?, engram?}`` on a trace of its own."""
    target = _participant(directed, neuron, "register_signal()")
    caps = list(capabilities) if capabilities is not None else list(target.capabilities)
    kind = role if role is not None else ("engram" if engram else "neuron")
    payload: dict[str, Any] = {"role": kind, "capabilities": caps}
    if version:
        payload["version"] = version
    if engram or kind == "engram":
        payload["engram"] = True
    return _signal(T.REGISTER, None, None, target, payload, meta)


def deregister_signal(
    *, directed: Directed | None = None, neuron: str | None = None, reason: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """DEREGISTER ``{reason?}`` on a trace of its own."""
    payload: dict[str, Any] = {"reason": reason} if reason else {}
    return _signal(
        T.DEREGISTER, None, None, _participant(directed, neuron, "deregister_signal()"), payload, meta
    )


def heartbeat_signal(
    *, directed: Directed | None = None, neuron: str | None = None, status: str = "ok",
    meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """HEARTBEAT ``{status}`` on a trace of its own."""
    target = _participant(directed, neuron, "heartbeat_signal()")
    return _signal(T.HEARTBEAT, None, None, target, {"status": status}, meta)


def discover_signal(
    *, neuron: str | None = None, capabilities: list[str] | None = None, trace_id: str | None = None,
    parent_id: str | None = None, meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """DISCOVER ``{neuron?, capabilities?}``: filters, not an address (``directed`` is null)."""
    payload = _with({}, neuron=neuron, capabilities=None if capabilities is None else list(capabilities))
    return _signal(T.DISCOVER, trace_id, parent_id, None, payload, meta)


# -- Engram --------------------------------------------------------------------------------------------
def _engram_target(
    directed: Directed | None, engram_id: str | None, engram_kind: str | None, what: str
) -> Directed:
    target = directed if directed is not None else Directed(engram_id, engram_kind)
    if not target.id and not target.type:
        raise ValueError(f"{what} needs directed.id (engram_id) or directed.type (engram_kind)")
    return target


def recall_signal(
    *, trace_id: str, parent_id: str | None, directed: Directed | None = None, engram_id: str | None = None,
    engram_kind: str | None = None, query: dict[str, Any], filters: dict[str, Any] | None = None,
    context_ref: str | None = None, deadline_ms: int | None = None, min_confidence: float | None = None,
    recall_mode: str = "first", meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """RECALL ``{query, recall_mode, filters?, context_ref?, deadline_ms?, min_confidence?}``."""
    target = _engram_target(directed, engram_id, engram_kind, "recall_signal()")
    if recall_mode not in RECALL_MODES:
        raise ValueError(f"recall_mode must be one of {list(RECALL_MODES)}, got {recall_mode!r}")
    payload = _with(
        {"query": query, "recall_mode": recall_mode},
        filters=filters, context_ref=context_ref, deadline_ms=deadline_ms, min_confidence=min_confidence,
    )  # fmt: skip
    return _signal(T.RECALL, trace_id, parent_id, target, payload, meta)


def recalled_signal(
    *, trace_id: str, parent_id: str, engram_id: str, hits: list[dict[str, Any]], truncated: bool = False,
    took_ms: float | None = None, error: str | None = None, directed: Directed | None = None,
    meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """RECALLED ``{engram_id, hits, truncated, took_ms?, error?}``; ``parent_id`` is the RECALL."""
    payload = _with(
        {"engram_id": engram_id, "hits": list(hits), "truncated": bool(truncated)},
        took_ms=took_ms,
        error=error,
    )
    return _signal(T.RECALLED, trace_id, parent_id, directed, payload, meta)


def imprint_signal(
    *, trace_id: str, parent_id: str | None, directed: Directed | None = None, engram_id: str | None = None,
    engram_kind: str | None = None, op: str, entry: dict[str, Any], merge_key: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """IMPRINT ``{op, entry, merge_key?}`` (``merge``/``upsert`` need a ``merge_key``)."""
    if op not in IMPRINT_OPS:
        raise ValueError(f"imprint op must be one of {list(IMPRINT_OPS)}, got {op!r}")
    target = _engram_target(directed, engram_id, engram_kind, "imprint_signal()")
    if op in ("merge", "upsert") and not merge_key:
        raise ValueError(f"imprint op={op!r} requires merge_key=")
    payload = _with({"op": op, "entry": entry}, merge_key=merge_key)
    return _signal(T.IMPRINT, trace_id, parent_id, target, payload, meta)


def imprinted_signal(
    *, trace_id: str, parent_id: str, engram_id: str, op: str, id: str | None = None,
    version: int | None = None, took_ms: float | None = None, error: str | None = None,
    directed: Directed | None = None, meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """IMPRINTED ``{engram_id, op, id?, version?, took_ms?, error?}``; ``parent_id`` is the IMPRINT."""
    payload = _with({"engram_id": engram_id, "op": op}, id=id, version=version, took_ms=took_ms, error=error)
    return _signal(T.IMPRINTED, trace_id, parent_id, directed, payload, meta)


# -- workflow control ------------------------------------------------------------------------------
def stop_signal(
    *, trace_id: str, parent_id: str | None = None, rollback: bool = False, reason: str | None = None,
    directed: Directed | None = None, meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """STOP ``{rollback, reason?}`` for the whole trace."""
    payload = _with({"rollback": bool(rollback)}, reason=reason)
    return _signal(T.STOP, trace_id, parent_id, directed, payload, meta)


def stopped_signal(
    *, trace_id: str, parent_id: str | None = None, node: str | None = None, rolled_back: bool = False,
    cancelled: int = 0, compensated: int = 0, directed: Directed | None = None,
    meta: dict[str, Any] | None = None,
) -> Signal:  # fmt: skip
    """STOPPED ``{rolled_back, cancelled, compensated, node?}``; ``parent_id`` is the STOP."""
    payload = _with(
        {"rolled_back": bool(rolled_back), "cancelled": int(cancelled), "compensated": int(compensated)},
        node=node,
    )
    return _signal(T.STOPPED, trace_id, parent_id, directed, payload, meta)
