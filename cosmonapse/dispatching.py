"""Building the Signals that start work (TASK, TASK_OFFER): one set of rules for every dispatch shape.

``dispatch_task``/``dispatch``/``dispatch_and_wait``, retry attempts and
``dispatch_offer`` all start work the same way: the input must be a dict, the
trace is the caller's or a fresh one (never a STOPped one), and a dispatch made
from inside a running TASK gets that TASK as its parent.
"""

from __future__ import annotations

from typing import Any

from .context import current_task
from .core import Core
from .envelope import task_payload
from .errors import DendriteProtocolError
from .ids import new_trace_id
from .signal import Signal, SignalType, directed_to, new_signal
from .stops import refuse_stopped

__all__ = ["describe_target", "request_signal", "require_target", "task_payload"]


def require_target(neuron: str | None, capabilities: list[str] | None, open_call: bool, what: str) -> None:
    """Seed 004: a TASK is addressed (``neuron=``) or capability-routed (``capabilities=``).

    An open call (neither; the first ``catch_all`` Axon of every host runs it) is the
    reference's third routing mode: sent only when asked for with ``open_call=True``.
    """
    if open_call:
        if neuron or capabilities:
            raise DendriteProtocolError(f"{what}: open_call=True takes neither neuron= nor capabilities=")
        return
    if not neuron and not capabilities:
        raise DendriteProtocolError(
            f"{what} needs neuron= or capabilities= (at least one is required); "
            "pass open_call=True to reach catch-all Axons instead"
        )


def request_signal(
    core: Core,
    stype: SignalType,
    *,
    input: dict[str, Any],
    payload: dict[str, Any],
    neuron: str | None,
    trace_id: str | None,
    parent_id: str | None,
    meta: dict[str, Any] | None,
    what: str,
) -> Signal:
    """A TASK or TASK_OFFER: checked input, caller's (or fresh) trace, ambient parent."""
    if not isinstance(input, dict):
        raise TypeError(f"input must be a dict, got {type(input).__name__}")
    refuse_stopped(core, trace_id, what)
    if parent_id is None:
        ambient = current_task.get()
        if ambient is not None:
            parent_id = ambient.id
    return new_signal(
        stype,
        trace_id or new_trace_id(),
        {"input": input, **payload},
        parent_id,
        directed_to(neuron) if neuron else None,
        dict(meta) if meta else {},
    )


def describe_target(neuron: str | None, capabilities: list[str] | None) -> str:
    """Who a dispatch was for, in words (timeout messages)."""
    if neuron:
        return f"neuron {neuron!r}"
    if capabilities:
        return f"any neuron with capabilities {sorted(capabilities)}"
    return "any catch-all neuron (open call)"
