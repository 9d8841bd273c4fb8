"""The neuron registry: records and stores (memory, SQLite, Postgres), §21; the Dendrite side: ``mirror``."""

from .memory import MemoryRegistryStore
from .postgres import PostgresRegistryStore
from .record import STATUSES, NeuronRecord
from .sqlite import SqliteRegistryStore
from .store import RegistryStore

__all__ = [
    "STATUSES",
    "MemoryRegistryStore",
    "NeuronRecord",
    "PostgresRegistryStore",
    "RegistryStore",
    "SqliteRegistryStore",
]
