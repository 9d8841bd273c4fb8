"""``ProtocolLedger``: what every participant published and heard, and the protocol's invariants over it.

The ledger is fed by the test bus (every publish, and every Signal a
subscriber has handled) and checks, as Signals arrive:

* **one terminal**: at most one FINAL/ERROR per trace (distinct Signal ids);
* **reply parent**: AGENT_OUTPUT, CLARIFICATION and PERMISSION are parented to
  a TASK of their own trace that was published before them and addressed to
  (or routed to) the neuron replying; FINAL and a neuron's ERROR are parented
  to an earlier Signal of their own trace;
* **after STOP**: once a participant has handled a trace's STOP (or was on the
  bus, not listening to STOP, when it went out) and the bus has settled (the end
  of the step it arrived in), it publishes nothing more on that trace but STOPPED.

Deadlines, abandoned calls and Engram rollback need to know about calls and
engrams; the state machine reports those with :meth:`violation`.  Messages
name Signals by short labels (``TASK#3``, ``trace t2``) so a shrunk failing
example reads as a story.
"""

from __future__ import annotations

from collections import defaultdict

import attrs

from ..signal import Signal, SignalType
from .bus import InProcessSynapse, Published

__all__ = ["Labels", "ProtocolLedger", "Violation"]

T = SignalType
TERMINAL = frozenset({T.FINAL, T.ERROR})
#: Replies an Axon gives to its TASK (§8).
REPLIES = frozenset({T.AGENT_OUTPUT, T.CLARIFICATION, T.PERMISSION})
#: What a participant may still publish on a trace after its STOP took effect there.
AFTER_STOP_OK = frozenset({T.STOP, T.STOPPED})


@attrs.frozen
class Violation:
    """One broken promise: which invariant, and what happened."""

    invariant: str
    message: str

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.message}"


class Labels:
    """Short, stable names for ids, in order of first appearance (``t1``, ``TASK#2``)."""

    def __init__(self) -> None:
        self._traces: dict[str, str] = {}
        self._signals: dict[str, str] = {}

    def trace(self, trace_id: str) -> str:
        if trace_id not in self._traces:
            self._traces[trace_id] = f"t{len(self._traces) + 1}"
        return self._traces[trace_id]

    def signal(self, sig: Signal) -> str:
        if sig.id not in self._signals:
            self._signals[sig.id] = f"{sig.type.value}#{len(self._signals) + 1}"
        return self._signals[sig.id]

    def ref(self, signal_id: str | None) -> str:
        if signal_id is None:
            return "none"
        return self._signals.get(signal_id, f"unknown {signal_id}")


class ProtocolLedger:
    """Publishes and deliveries of one test bus, checked against the protocol's invariants."""

    def __init__(self, labels: Labels | None = None) -> None:
        self.labels: Labels = labels or Labels()
        self.log: list[Published] = []
        self.by_id: dict[str, Published] = {}
        self.violations: list[Violation] = []
        self._terminals: dict[str, list[Published]] = defaultdict(list)
        #: (participant, trace) -> label of the STOP that took effect there.
        self.stopped_at: dict[tuple[str, str], str] = {}
        self._handled_stops: list[tuple[str, Signal]] = []

    # -- feeding -----------------------------------------------------------------
    def attach(self, hub: object) -> None:
        """Listen to a :class:`~.bus.TestSynapseHub` (its ``taps`` and ``after_delivery``)."""
        hub.taps.append(self.on_publish)  # type: ignore[attr-defined]
        hub.after_delivery.append(self.on_delivered)  # type: ignore[attr-defined]
        # A participant that does not even subscribe to STOP heard it as much as one that ignores it.
        hub.not_listening.append(self.on_delivered)  # type: ignore[attr-defined]

    def violation(self, invariant: str, message: str) -> None:
        self.violations.append(Violation(invariant, message))

    def on_delivered(self, client: InProcessSynapse, sig: Signal) -> None:
        if sig.type is T.STOP:
            self._handled_stops.append((client.name, sig))

    def end_step(self) -> None:
        """The bus has settled: every STOP handled so far has now taken effect where it was handled."""
        for who, stop in self._handled_stops:
            self.stopped_at.setdefault((who, stop.trace_id), self.labels.signal(stop))
        self._handled_stops.clear()

    def on_publish(self, rec: Published) -> None:
        sig = rec.signal
        name = self.labels.signal(sig)
        trace = self.labels.trace(sig.trace_id)
        self.log.append(rec)
        first = sig.id not in self.by_id
        self.by_id.setdefault(sig.id, rec)
        if not first:
            return  # the same Signal published again (a resend): judged once
        stop = self.stopped_at.get((rec.origin, sig.trace_id))
        if stop is not None and sig.type not in AFTER_STOP_OK:
            self.violation(
                "nothing after STOP",
                f"{rec.origin!r} published {name} on trace {trace} after {stop} took effect there",
            )
        if sig.type in TERMINAL:
            terminals = self._terminals[sig.trace_id]
            terminals.append(rec)
            if len(terminals) == 2:
                listed = ", ".join(f"{self.labels.signal(p.signal)} from {p.origin!r}" for p in terminals)
                self.violation("one terminal", f"trace {trace} has two terminal Signals: {listed}")
        if sig.type in REPLIES:
            self._check_reply(rec, name, trace)
        elif sig.type is T.FINAL or (sig.type is T.ERROR and sig.neuron):
            self._check_parent_on_trace(rec, name, trace)
        elif sig.type is T.STOPPED:
            parent = self.by_id.get(sig.parent_id or "")
            if parent is None or parent.signal.type is not T.STOP or parent.signal.trace_id != sig.trace_id:
                self.violation(
                    "reply parent",
                    f"{name} from {rec.origin!r} on trace {trace} is parented to "
                    f"{self.labels.ref(sig.parent_id)}, not to a STOP of its trace",
                )

    def _check_reply(self, rec: Published, name: str, trace: str) -> None:
        sig = rec.signal
        parent = self.by_id.get(sig.parent_id or "")
        where = f"{name} from {rec.origin!r} (neuron {sig.neuron!r}) on trace {trace}"
        if parent is None or parent.signal.type is not T.TASK:
            self.violation(
                "reply parent", f"{where} is parented to {self.labels.ref(sig.parent_id)}, not a TASK"
            )
            return
        task = parent.signal
        if task.trace_id != sig.trace_id:
            self.violation(
                "reply parent",
                f"{where} answers {self.labels.signal(task)} of trace {self.labels.trace(task.trace_id)}",
            )
        elif task.neuron and sig.neuron and task.neuron != sig.neuron:
            self.violation(
                "reply parent",
                f"{where} answers {self.labels.signal(task)}, which was addressed to {task.neuron!r}",
            )

    def _check_parent_on_trace(self, rec: Published, name: str, trace: str) -> None:
        sig = rec.signal
        if sig.parent_id is None:
            return
        parent = self.by_id.get(sig.parent_id)
        if parent is None or parent.signal.trace_id != sig.trace_id:
            self.violation(
                "reply parent",
                f"{name} from {rec.origin!r} on trace {trace} is parented to "
                f"{self.labels.ref(sig.parent_id)}, not to an earlier Signal of its trace",
            )

    # -- reading -----------------------------------------------------------------
    def signals_of(self, trace_id: str) -> list[Signal]:
        return [p.signal for p in self.log if p.signal.trace_id == trace_id]

    def story(self, trace_id: str) -> str:
        """The trace as one line per Signal: ``TASK#1 <- none  by 'orchestrator'``."""
        lines = []
        for p in self.log:
            s = p.signal
            if s.trace_id == trace_id:
                lines.append(f"{self.labels.signal(s)} <- {self.labels.ref(s.parent_id)}  by {p.origin!r}")
        return "\n".join(lines)
