"""Errors of the Engram layer (§14.4)."""

from __future__ import annotations

from ..errors import CosmonapseError

__all__ = ["EngramCancelled", "EngramError", "EngramNotBound", "EngramOverloaded", "EngramTimeout"]


class EngramError(CosmonapseError):
    """Base of every Engram failure; also raised when every engram that answered reported an error."""


class EngramTimeout(EngramError, TimeoutError):
    """No engram answered before the deadline (every recall/imprint-with-ack has one)."""


class EngramCancelled(EngramError):
    """The trace ended (FINAL/ERROR), was STOPped, or the Dendrite stopped while waiting."""


class EngramNotBound(EngramError, ValueError):
    """The call names no engram: give ``engram_id=`` or ``engram_kind=``."""


class EngramOverloaded(EngramError):
    """An engram refused the request because it is saturated."""
