"""The neuron registry: records and stores (memory, SQLite) (§21); the Dendrite's side is ``mirror``."""

from .memory import MemoryRegistryStore
from .record import STATUSES, NeuronRecord
from .sqlite import SqliteRegistryStore
from .store import RegistryStore

__all__ = [
    "STATUSES",
    "MemoryRegistryStore",
    "NeuronRecord",
    "RegistryStore",
    "SqliteRegistryStore",
]
