"""The neuron registry: records, stores (memory, SQLite), the presence mirror and liveness sweep (§21)."""

from .memory import MemoryRegistryStore
from .mirror import RegistryMixin, is_neuron_register
from .record import STATUSES, NeuronRecord
from .sqlite import SqliteRegistryStore
from .store import RegistryStore

__all__ = [
    "STATUSES",
    "MemoryRegistryStore",
    "NeuronRecord",
    "RegistryMixin",
    "RegistryStore",
    "SqliteRegistryStore",
    "is_neuron_register",
]
