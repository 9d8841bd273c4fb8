"""The neuron registry: records, stores (memory, SQLite, Postgres), presence mirror, liveness sweep (§21)."""

from .memory import MemoryRegistryStore
from .mirror import RegistryMixin, is_neuron_register
from .postgres import PostgresRegistryStore
from .record import STATUSES, NeuronRecord
from .sqlite import SqliteRegistryStore
from .store import RegistryStore

__all__ = [
    "STATUSES",
    "MemoryRegistryStore",
    "NeuronRecord",
    "PostgresRegistryStore",
    "RegistryMixin",
    "RegistryStore",
    "SqliteRegistryStore",
    "is_neuron_register",
]
