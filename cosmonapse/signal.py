"""The Signal envelope: attrs models, the Signal types and the type sets (protocol §1-§3)."""

from __future__ import annotations

import enum
import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import attrs

from .errors import SignalDecodeError
from .ids import event_id_at, new_event_id, new_trace_id

__all__ = [
    "AXON_TYPES",
    "ORCHESTRATION_TYPES",
    "PATHWAY_TYPES",
    "RECEPTOR_TERMINAL_TYPES",
    "ROLE_GATED_TYPES",
    "SYNAPSE_TYPES",
    "TERMINAL_SCOPE_TYPES",
    "TERMINAL_TYPES",
    "WAIT_TYPES",
    "Directed",
    "Signal",
    "SignalType",
    "directed_to",
    "new_signal",
    "utc_now_iso",
]


class SignalType(enum.StrEnum):
    """The 31 types of reference 0.1.14, plus the legacy ``THOUGHT_DELTA``."""

    TASK = "TASK"
    AGENT_OUTPUT = "AGENT_OUTPUT"
    FINAL = "FINAL"
    ERROR = "ERROR"
    TASK_OFFER = "TASK_OFFER"
    BID = "BID"
    TASK_AWARDED = "TASK_AWARDED"
    TASK_DECLINED = "TASK_DECLINED"
    AUDIT = "AUDIT"
    PLAN = "PLAN"
    TOOL_CALL = "TOOL_CALL"
    TOOL_RESULT = "TOOL_RESULT"
    MEMORY_APPEND = "MEMORY_APPEND"
    ESCALATION = "ESCALATION"
    RECALL = "RECALL"
    RECALLED = "RECALLED"
    IMPRINT = "IMPRINT"
    IMPRINTED = "IMPRINTED"
    CONSENSUS = "CONSENSUS"
    CONTEXT_SYNC = "CONTEXT_SYNC"
    CRITIQUE = "CRITIQUE"
    CLARIFICATION = "CLARIFICATION"
    PERMISSION = "PERMISSION"
    PERMISSION_DECISION = "PERMISSION_DECISION"
    CLARIFICATION_ANSWER = "CLARIFICATION_ANSWER"
    REGISTER = "REGISTER"
    DEREGISTER = "DEREGISTER"
    HEARTBEAT = "HEARTBEAT"
    DISCOVER = "DISCOVER"
    STOP = "STOP"
    STOPPED = "STOPPED"
    THOUGHT_DELTA = "THOUGHT_DELTA"


T = SignalType

#: What an Axon or the Dendrite life cycle may produce.
AXON_TYPES = frozenset(
    {T.AGENT_OUTPUT, T.CLARIFICATION, T.PERMISSION, T.ERROR, T.REGISTER, T.DEREGISTER, T.HEARTBEAT}
)
#: What the public ``Dendrite.emit()`` accepts.  THOUGHT_DELTA is ours (the seeds
#: have ``emit_thought_delta``); the reference's 25 are all here too.
SYNAPSE_TYPES = frozenset(
    {
        T.TASK, T.FINAL, T.ERROR, T.TASK_OFFER, T.BID, T.TASK_AWARDED, T.TASK_DECLINED,
        T.AUDIT, T.PLAN, T.TOOL_CALL, T.TOOL_RESULT, T.MEMORY_APPEND, T.ESCALATION,
        T.CONSENSUS, T.CONTEXT_SYNC, T.CRITIQUE, T.DISCOVER, T.PERMISSION_DECISION,
        T.CLARIFICATION_ANSWER, T.RECALL, T.RECALLED, T.IMPRINT, T.IMPRINTED, T.STOP,
        T.STOPPED, T.THOUGHT_DELTA,
    }
)  # fmt: skip
#: Types routed into trace Pathways: everything but TASK and the management types.
PATHWAY_TYPES = frozenset(SignalType) - {T.TASK, T.REGISTER, T.DEREGISTER, T.HEARTBEAT, T.DISCOVER}
#: Close a Pathway (after delivering it).
TERMINAL_TYPES = frozenset({T.FINAL, T.ERROR})
#: What a bare ``Pathway.wait()`` / ``dispatch_and_wait`` returns on.
WAIT_TYPES = frozenset({T.AGENT_OUTPUT, T.CLARIFICATION, T.PERMISSION, T.ERROR, T.FINAL})
#: What a ``scope="terminal"`` Pathway lets through to wait/iteration.
TERMINAL_SCOPE_TYPES = frozenset({T.FINAL, T.ERROR, T.CLARIFICATION, T.PERMISSION})
#: What HTTP/CLI edges treat as "done".
RECEPTOR_TERMINAL_TYPES = frozenset({T.AGENT_OUTPUT, T.FINAL, T.ERROR, T.CLARIFICATION, T.PERMISSION})
#: Initiating these needs role "orchestrator".
ROLE_GATED_TYPES = frozenset({T.TASK, T.STOP})
#: What a worker's ``emit()`` refuses (seeds 001 and 004: "workers can serve TASKs and
#: bid, but cannot emit orchestration signals"): starting, steering, concluding and
#: narrating a workflow.  Still open to a worker: BID (bidding), answers and decisions
#: (CLARIFICATION_ANSWER, PERMISSION_DECISION), DISCOVER, the Engram traffic (RECALL,
#: RECALLED, IMPRINT, IMPRINTED), STOPPED and AUDIT.  A Neuron's own replies and the
#: cognition it streams through its ``NeuronContext`` are the Axon's, not ``emit()``.
ORCHESTRATION_TYPES = frozenset(
    {
        T.TASK, T.STOP, T.TASK_OFFER, T.TASK_AWARDED, T.TASK_DECLINED, T.FINAL, T.ERROR,
        T.PLAN, T.THOUGHT_DELTA, T.TOOL_CALL, T.TOOL_RESULT, T.MEMORY_APPEND, T.CRITIQUE,
        T.ESCALATION, T.CONSENSUS, T.CONTEXT_SYNC,
    }
)  # fmt: skip


# (second, its text) in one tuple, so a thread never pairs one second with another's text.
_last_second: tuple[int, str] = (-1, "")


def utc_now_iso() -> str:
    """Now as the reference writes it: UTC, microseconds, trailing ``Z`` (fraction dropped if 0)."""
    return iso_at(time.time_ns())


def iso_at(now_ns: int) -> str:
    """*now_ns* (``time.time_ns()``) as ``utc_now_iso`` writes it.

    The date-and-seconds part is formatted once per second (this runs for every Signal).
    """
    global _last_second
    seconds, rest = divmod(now_ns, 1_000_000_000)
    cached, prefix = _last_second
    if seconds != cached:
        prefix = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _last_second = (seconds, prefix)
    micros = rest // 1000
    return "%s.%06dZ" % (prefix, micros) if micros else prefix + "Z"  # noqa: UP031 (faster here)


def _signal_type(value: Any) -> SignalType:
    """``Signal.type``, checked when the Signal is built (a type name is accepted too)."""
    if type(value) is SignalType:
        return value
    try:
        return SignalType(value)
    except ValueError:
        raise SignalDecodeError(
            "type", f"{value!r} is not a Signal type (one of {', '.join(t.value for t in SignalType)})"
        ) from None


class WireCodec(Protocol):
    """What ``Signal.encode``/``Signal.decode`` delegate to (``cosmonapse.codec`` installs itself)."""

    def encode(self, sig: Signal) -> bytes: ...

    def decode(self, data: bytes | str) -> Signal: ...


#: The JSON codec.  ``codec.py`` imports this module, so it registers itself here
#: instead of being imported (importing ``cosmonapse`` always loads it).
_wire_codec: WireCodec | None = None


def install_codec(codec: WireCodec) -> None:
    """Called once by ``cosmonapse.codec`` at import."""
    global _wire_codec
    _wire_codec = codec


def _codec() -> WireCodec:
    if _wire_codec is None:  # pragma: no cover - importing cosmonapse installs it
        raise RuntimeError("the Signal codec is not loaded: import cosmonapse.codec")
    return _wire_codec


@attrs.frozen(slots=True)
class Directed:
    """Addressing facets: target or producer attribution, depending on the type (§2)."""

    id: str | None = None
    type: str | None = None
    capabilities: tuple[str, ...] = attrs.field(default=(), converter=tuple)


@functools.lru_cache(maxsize=4096)
def directed_to(neuron_id: str) -> Directed:
    """``Directed(neuron_id)``, shared: built once per id (it is frozen), not once per Signal."""
    return Directed(neuron_id)


@attrs.frozen(slots=True, eq=True)
class Signal:
    """One protocol envelope.

    Immutable, because the in-memory bus hands the same object to every
    subscriber.  ``payload`` and ``meta`` are plain dicts: treat them as read-only.
    ``ts`` is kept as the ISO-8601 text that travels on the wire, so a frame
    re-encodes to the same JSON value; ``timestamp`` parses it.
    ``filled`` is not on the wire: it names the fields the decoder had to fill
    in because a lenient peer left them out (see docs/protocol.md).
    """

    type: SignalType = attrs.field(converter=_signal_type)
    trace_id: str = attrs.field(factory=new_trace_id)
    payload: dict[str, Any] = attrs.field(factory=dict)
    parent_id: str | None = None
    directed: Directed | None = None
    meta: dict[str, Any] = attrs.field(factory=dict)
    id: str = attrs.field(factory=new_event_id)
    ts: str = attrs.field(factory=utc_now_iso)
    v: str = "1"
    filled: tuple[str, ...] = attrs.field(default=(), eq=False, repr=False)

    @property
    def timestamp(self) -> datetime:
        """``ts`` parsed; naive timestamps are taken as UTC."""
        parsed = datetime.fromisoformat(self.ts)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    @property
    def neuron(self) -> str | None:
        """``directed.id``, the neuron this Signal targets or comes from."""
        return self.directed.id if self.directed is not None else None

    def evolve(self, **changes: Any) -> Signal:
        """A copy with *changes* applied (``attrs.evolve``)."""
        return attrs.evolve(self, **changes)

    def reply(
        self,
        type: SignalType,
        payload: dict[str, Any] | None = None,
        directed: Directed | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Signal:
        """A child of this Signal: same trace, ``parent_id`` = this id, this ``directed`` unless given."""
        return Signal(
            type=type,
            trace_id=self.trace_id,
            parent_id=self.id,
            payload=dict(payload or {}),
            directed=self.directed if directed is None else directed,
            meta=dict(meta or {}),
        )

    def encode(self) -> bytes:
        """The Signal's wire form: compact UTF-8 JSON (``codec.encode_signal``)."""
        return _codec().encode(self)

    @classmethod
    def decode(cls, data: bytes | str) -> Signal:
        """Parse one wire frame (``codec.decode_signal``); raises ``SignalDecodeError`` naming the field."""
        return _codec().decode(data)


def _slot_setters() -> tuple[Callable[[Signal, Any], None], ...]:
    """Each of Signal's slots' setter, in field order (frozen: ``__setattr__`` refuses)."""
    return tuple(getattr(Signal, field.name).__set__ for field in attrs.fields(Signal))


(
    _set_type,
    _set_trace,
    _set_payload,
    _set_parent,
    _set_directed,
    _set_meta,
    _set_id,
    _set_ts,
    _set_v,
    _set_filled,
) = _slot_setters()
_new_object = object.__new__


def new_signal(
    stype: SignalType,
    trace_id: str,
    payload: dict[str, Any],
    parent_id: str | None = None,
    directed: Directed | None = None,
    meta: dict[str, Any] | None = None,
) -> Signal:
    """A fresh Signal the runtime builds on a hot path: what ``Signal(...)`` gives, in 70 % of the time.

    The caller vouches for the arguments (*stype* a ``SignalType``, the rest already
    of their types), so nothing is converted; a fresh id and ``ts`` come from one
    clock read.  A test holds it equal to ``Signal(...)`` field by field.
    """
    sig = _new_object(Signal)
    now_ns = time.time_ns()
    _set_type(sig, stype)
    _set_trace(sig, trace_id)
    _set_payload(sig, payload)
    _set_parent(sig, parent_id)
    _set_directed(sig, directed)
    _set_meta(sig, {} if meta is None else meta)
    _set_id(sig, event_id_at(now_ns))
    _set_ts(sig, iso_at(now_ns))
    _set_v(sig, "1")
    _set_filled(sig, ())
    return sig


def checked_signal(
    stype: SignalType,
    trace_id: str,
    payload: dict[str, Any],
    parent_id: str | None,
    directed: Directed | None,
    meta: dict[str, Any],
    id: str,
    ts: str,
    v: str,
    filled: tuple[str, ...],
) -> Signal:
    """A Signal from fields a decoder has already checked (``codec.signal_from_dict``):
    every field set directly, as ``new_signal`` does, instead of through ``__init__``."""
    sig = _new_object(Signal)
    _set_type(sig, stype)
    _set_trace(sig, trace_id)
    _set_payload(sig, payload)
    _set_parent(sig, parent_id)
    _set_directed(sig, directed)
    _set_meta(sig, meta)
    _set_id(sig, id)
    _set_ts(sig, ts)
    _set_v(sig, v)
    _set_filled(sig, filled)
    return sig
