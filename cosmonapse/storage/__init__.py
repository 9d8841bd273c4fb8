"""``cosmonapse.storage``: the reference's name for the registry stores (``cosmonapse.registry``).

Code ported from the reference imports ``from cosmonapse.storage import ...``;
the stores and the record are the same objects as in ``cosmonapse.registry``.
"""

from ..registry import (
    MemoryRegistryStore,
    NeuronRecord,
    PostgresRegistryStore,
    RegistryStore,
    SqliteRegistryStore,
)

__all__ = [
    "MemoryRegistryStore",
    "NeuronRecord",
    "PostgresRegistryStore",
    "RegistryStore",
    "SqliteRegistryStore",
]
