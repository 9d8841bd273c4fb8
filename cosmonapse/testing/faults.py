"""Bus faults for the test bus: drop, duplicate, delay or reorder the next matching Signal.

A :class:`FaultInjector` holds *armed* faults.  Each publish on the test bus
asks it for a verdict; the first armed fault whose filter matches the Signal
fires once (and is recorded in ``fired``).  Disconnects are not armed here:
they are a state of one connection (``TestSynapse.disconnect``/``reconnect``).

Faults act on delivery only: the publish itself is recorded as it was made, so
invariants judge what participants *said*, while they *hear* the faulty bus.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs

from ..signal import Signal, SignalType

__all__ = ["Fault", "FaultInjector", "FaultKind"]


class FaultKind(enum.Enum):
    """What happens to one Signal on its way to its subscribers."""

    DROP = "drop"  #: nobody receives it
    DUPLICATE = "duplicate"  #: every subscriber receives it twice
    DELAY = "delay"  #: delivered ``delay_s`` seconds later (bus time)
    REORDER = "reorder"  #: held back and delivered right after the next Signal


def _types(value: Iterable[SignalType | str] | SignalType | str | None) -> frozenset[SignalType] | None:
    if value is None:
        return None
    if isinstance(value, SignalType | str):
        return frozenset({SignalType(value)})
    return frozenset(SignalType(v) for v in value)


@attrs.frozen
class Fault:
    """One fault, aimed at the next Signal of ``types`` (any type when None)."""

    kind: FaultKind
    types: frozenset[SignalType] | None = attrs.field(default=None, converter=_types)
    delay_s: float = 0.0

    def matches(self, signal: Signal) -> bool:
        return self.types is None or signal.type in self.types

    def __str__(self) -> str:
        on = "any" if self.types is None else "|".join(sorted(t.value for t in self.types))
        extra = f" {self.delay_s:g}s" if self.kind is FaultKind.DELAY else ""
        return f"{self.kind.value}{extra} next {on}"

    # -- readable constructors ---------------------------------------------------
    @classmethod
    def drop(cls, types: Iterable[SignalType | str] | SignalType | str | None = None) -> Fault:
        return cls(FaultKind.DROP, types)

    @classmethod
    def duplicate(cls, types: Iterable[SignalType | str] | SignalType | str | None = None) -> Fault:
        return cls(FaultKind.DUPLICATE, types)

    @classmethod
    def delay(
        cls, delay_s: float, types: Iterable[SignalType | str] | SignalType | str | None = None
    ) -> Fault:
        return cls(FaultKind.DELAY, types, delay_s)

    @classmethod
    def reorder(cls, types: Iterable[SignalType | str] | SignalType | str | None = None) -> Fault:
        return cls(FaultKind.REORDER, types)


class FaultInjector:
    """Armed faults, each applied once to the next publish it matches (oldest armed first)."""

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        self.armed: list[Fault] = list(faults)
        #: (fault, the Signal it hit), in the order they fired.
        self.fired: list[tuple[Fault, Signal]] = []

    def arm(self, fault: Fault) -> None:
        self.armed.append(fault)

    def clear(self) -> None:
        self.armed.clear()

    def verdict(self, signal: Signal) -> Fault | None:
        """The fault that hits *signal* (now disarmed), or None to deliver it normally."""
        for i, fault in enumerate(self.armed):
            if fault.matches(signal):
                del self.armed[i]
                self.fired.append((fault, signal))
                return fault
        return None
