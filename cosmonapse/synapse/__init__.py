"""Buses: the Synapse interface and its adapters."""

from .base import DEFAULT_SUBSCRIPTION_BUFFER, Handler, Subscription, Synapse
from .connect import connect_synapse
from .dev import DevSynapse
from .memory import MemorySynapse

__all__ = [
    "DEFAULT_SUBSCRIPTION_BUFFER",
    "DevSynapse",
    "Handler",
    "MemorySynapse",
    "Subscription",
    "Synapse",
    "connect_synapse",
]
