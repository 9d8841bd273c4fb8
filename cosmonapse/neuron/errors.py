"""Exceptions raised by Neuron sources.

A Neuron reports failure by raising; the Axon turns the exception into ERROR
``NEURON_EXCEPTION`` with ``"<ExceptionName>: <message>"`` as the text, so
every message here says which source, which endpoint and what to do — and
never carries a credential.
"""

from __future__ import annotations

from ..errors import CosmonapseError

__all__ = [
    "NeuronAuthError",
    "NeuronConfigError",
    "NeuronConnectionError",
    "NeuronError",
    "NeuronHTTPError",
    "NeuronInputError",
    "NeuronResponseError",
    "NeuronStreamError",
    "NeuronTimeout",
]


class NeuronError(CosmonapseError):
    """Base class of every error a Neuron source raises."""


class NeuronConfigError(NeuronError, ValueError):
    """The Neuron was built with missing or contradictory options."""


class NeuronInputError(NeuronError, ValueError):
    """The TASK input has nothing the source can send (no prompt, no messages, ...)."""


class NeuronAuthError(NeuronError):
    """The provider rejected the credential (HTTP 401/403)."""


class NeuronHTTPError(NeuronError):
    """The provider answered with a non-success status (after retries, where they apply)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class NeuronResponseError(NeuronError):
    """The provider answered 2xx but the body is not what its protocol promises."""


class NeuronConnectionError(NeuronError, ConnectionError):
    """The endpoint could not be reached (after retries)."""


class NeuronStreamError(NeuronError, ConnectionError):
    """A streamed answer broke off before its end marker."""


class NeuronTimeout(NeuronError, TimeoutError):
    """A configured limit ran out; the message names the endpoint and the limit."""
