"""Subject names and NATS-style wildcard matching (§5.1)."""

from __future__ import annotations

from .signal import Signal, SignalType

__all__ = ["ROOT", "ROUTED", "namespace_wildcard", "signal_subject", "subject_for", "subject_matches"]

ROOT = "cosmonapse"
ROUTED = "routed"


def subject_for(namespace: str, signal_type: SignalType | str, *, routed: bool = False) -> str:
    """``cosmonapse.<ns>.<TYPE>`` (``.routed`` appended for capability-routed TASKs)."""
    name = signal_type.value if isinstance(signal_type, SignalType) else signal_type
    base = f"{ROOT}.{namespace}.{name}"
    return f"{base}.{ROUTED}" if routed else base


def signal_subject(namespace: str, sig: Signal) -> str:
    """The subject *sig* is published on: routed TASKs go to ``TASK.routed`` (§5.1)."""
    if (
        sig.type is SignalType.TASK
        and (sig.directed is None or not sig.directed.id)
        and sig.payload.get("capabilities")
    ):
        return subject_for(namespace, SignalType.TASK, routed=True)
    return subject_for(namespace, sig.type)


def namespace_wildcard(namespace: str) -> str:
    """The observer pattern for a whole namespace: ``cosmonapse.<ns>.>``."""
    return f"{ROOT}.{namespace}.>"


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard match: ``*`` is one token, a final ``>`` is one or more tokens."""
    if "*" not in pattern and ">" not in pattern:
        return pattern == subject
    ptoks = pattern.split(".")
    stoks = subject.split(".")
    for i, p in enumerate(ptoks):
        if p == ">":
            return i == len(ptoks) - 1 and len(stoks) > i
        if i >= len(stoks):
            return False
        if p != "*" and p != stoks[i]:
            return False
    return len(ptoks) == len(stoks)


def is_wildcard(pattern: str) -> bool:
    """True when *pattern* contains a wildcard token."""
    return any(tok in ("*", ">") for tok in pattern.split("."))
