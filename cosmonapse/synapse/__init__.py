"""Buses: the Synapse interface and its adapters."""

from .base import DEFAULT_SUBSCRIPTION_BUFFER, Handler, Subscription, Synapse
from .memory import MemorySynapse

__all__ = ["DEFAULT_SUBSCRIPTION_BUFFER", "Handler", "MemorySynapse", "Subscription", "Synapse"]
