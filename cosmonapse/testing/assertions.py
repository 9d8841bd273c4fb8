"""Assertions on recorded Signals: the shape of a trace, one terminal, a reply to its TASK.

    assert_trace(signals, trace_id, "TASK", "AGENT_OUTPUT<TASK", "FINAL<AGENT_OUTPUT", terminals=1)

A pattern is a list of steps, each a Signal type name, optionally followed by
``<PARENT`` to require that the Signal is parented to the one matched for the
latest earlier ``PARENT`` step.  Steps must appear in this order on the trace
(other Signals may come in between unless ``only=True``).  Failures print the
whole trace, one Signal per line, with short labels instead of ids.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..signal import TERMINAL_TYPES, Signal, SignalType

__all__ = ["assert_one_terminal", "assert_reply", "assert_trace", "format_trace"]


def _on_trace(signals: Iterable[Signal], trace_id: str) -> list[Signal]:
    return [s for s in signals if s.trace_id == trace_id]


def format_trace(signals: Iterable[Signal], trace_id: str | None = None) -> str:
    """One line per Signal (of *trace_id*, or all): ``#2 AGENT_OUTPUT <- #1 from 'echo'``."""
    sigs = list(signals) if trace_id is None else _on_trace(signals, trace_id)
    index = {s.id: i + 1 for i, s in enumerate(sigs)}
    lines = []
    for i, s in enumerate(sigs, start=1):
        parent = (
            "" if s.parent_id is None else f" <- #{index[s.parent_id]}" if s.parent_id in index else " <- ?"
        )
        who = f" from {s.neuron!r}" if s.neuron else ""
        lines.append(f"  #{i} {s.type.value}{parent}{who}")
    return "\n".join(lines) or "  (no Signals)"


def _parse(step: str) -> tuple[SignalType, SignalType | None]:
    name, _, parent = step.partition("<")
    try:
        return SignalType(name.strip()), SignalType(parent.strip()) if parent else None
    except ValueError:
        raise ValueError(f"bad trace pattern step {step!r}: expected 'TYPE' or 'TYPE<PARENT_TYPE'") from None


def assert_trace(
    signals: Iterable[Signal],
    trace_id: str,
    *pattern: str,
    terminals: int | None = None,
    only: bool = False,
) -> list[Signal]:
    """Check the Signals of *trace_id* against *pattern*; returns the Signals matched, in order.

    ``terminals=n`` also requires exactly n FINAL/ERROR on the trace; ``only=True``
    allows no Signal types on the trace other than those named in the pattern.
    """
    sigs = _on_trace(signals, trace_id)
    steps = [_parse(p) for p in pattern]

    def fail(why: str) -> AssertionError:
        return AssertionError(f"trace {trace_id}: {why}\n{format_trace(sigs)}")

    matched: list[Signal] = []
    last_of: dict[SignalType, Signal] = {}
    pos = 0
    for (stype, parent_type), text in zip(steps, pattern, strict=True):
        want_parent = None
        if parent_type is not None:
            want_parent = last_of.get(parent_type)
            if want_parent is None:
                raise ValueError(f"pattern step {text!r} names a parent type that no earlier step matched")
        while pos < len(sigs):
            s = sigs[pos]
            pos += 1
            if s.type is stype and (want_parent is None or s.parent_id == want_parent.id):
                matched.append(s)
                last_of[stype] = s
                break
        else:
            raise fail(f"no {text} where the pattern {' → '.join(pattern)} expects it")
    if terminals is not None:
        n = sum(s.type in TERMINAL_TYPES for s in sigs)
        if n != terminals:
            raise fail(f"{n} terminal Signals (FINAL/ERROR), expected {terminals}")
    if only:
        allowed = {t for t, _ in steps}
        extra = sorted({s.type.value for s in sigs if s.type not in allowed})
        if extra:
            raise fail(f"Signals the pattern does not allow: {', '.join(extra)}")
    return matched


def assert_one_terminal(signals: Iterable[Signal], trace_id: str) -> Signal:
    """Exactly one FINAL or ERROR on *trace_id*; returns it."""
    sigs = _on_trace(signals, trace_id)
    ends = [s for s in sigs if s.type in TERMINAL_TYPES]
    if len(ends) != 1:
        raise AssertionError(
            f"trace {trace_id}: {len(ends)} terminal Signals, expected 1\n{format_trace(sigs)}"
        )
    return ends[0]


#: What an Axon answers a TASK with (§8).
_REPLIES = frozenset(
    {SignalType.AGENT_OUTPUT, SignalType.CLARIFICATION, SignalType.PERMISSION, SignalType.ERROR}
)


def assert_reply(signals: Iterable[Signal], task: Signal) -> Signal:
    """Exactly one reply (AGENT_OUTPUT, CLARIFICATION, PERMISSION or ERROR) parented to *task*; returns it."""
    sigs = list(signals)
    replies = [s for s in sigs if s.type in _REPLIES and s.parent_id == task.id]
    if len(replies) != 1:
        raise AssertionError(
            f"{len(replies)} replies to TASK {task.id}, expected 1\n{format_trace(sigs, task.trace_id)}"
        )
    reply = replies[0]
    if reply.trace_id != task.trace_id:
        raise AssertionError(f"the reply to TASK {task.id} is on trace {reply.trace_id}, not {task.trace_id}")
    return reply
