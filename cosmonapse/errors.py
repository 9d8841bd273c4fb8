"""The exceptions of cosmonapse, in one place so every layer can raise them."""

from __future__ import annotations

__all__ = [
    "CosmonapseError",
    "DendriteProtocolError",
    "DispatchTimeout",
    "PathwayBusyError",
    "PathwayClosedError",
    "PathwayTimeout",
    "SignalDecodeError",
    "SynapseClosedError",
    "SynapseError",
    "SynapseFailedError",
]


class CosmonapseError(Exception):
    """Base class of every error raised by cosmonapse."""


class SignalDecodeError(CosmonapseError, ValueError):
    """A frame is not a valid Signal.  ``field`` names the offending key (or None)."""

    def __init__(self, field: str | None, message: str) -> None:
        self.field = field
        where = f"field {field!r}: " if field else ""
        super().__init__(f"invalid Signal: {where}{message}")


class DendriteProtocolError(CosmonapseError, ValueError):
    """An operation the protocol forbids here (role guard, type guard, bad state, a bad target).

    Also a ``ValueError``: code ported from the reference SDK catches one or the
    other, and both catch every misuse.
    """


class PathwayClosedError(CosmonapseError):
    """The Pathway closed before a matching Signal arrived."""


class PathwayTimeout(CosmonapseError, TimeoutError):
    """``Pathway.wait``/``wait_for`` ran out of time; the message names the trace and what it waited for."""


class PathwayBusyError(CosmonapseError):
    """This Dendrite already originates a Pathway on that trace."""


class DispatchTimeout(CosmonapseError, TimeoutError):
    """No reply arrived in time; the message says which neuron or capabilities and trace."""


class SynapseError(CosmonapseError):
    """A bus-level failure."""


class SynapseClosedError(SynapseError):
    """The Synapse is not connected (never connected, or closed)."""


class SynapseFailedError(SynapseError):
    """A background task of the Synapse (reader, writer, pump) failed; ``__cause__`` is what it raised.

    Raised by the next call and by ``close()``; close the synapse and connect again.
    """
