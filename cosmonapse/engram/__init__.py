"""Engrams: shared memory served over RECALL / IMPRINT, with a saga journal per trace (§14)."""

from .base import Engram
from .errors import EngramCancelled, EngramError, EngramNotBound, EngramOverloaded, EngramTimeout
from .host import EngramHost
from .memory import InMemoryEngram
from .model import IMPRINT_OPS, RECALL_MODES, Hit, Hits, ImprintReceipt, RecallResult
from .postgres import PostgresEngram
from .saga import CompensationConflict, CompensationReport
from .sqlite import SqliteEngram

__all__ = [
    "IMPRINT_OPS",
    "RECALL_MODES",
    "CompensationConflict",
    "CompensationReport",
    "Engram",
    "EngramCancelled",
    "EngramError",
    "EngramHost",
    "EngramNotBound",
    "EngramOverloaded",
    "EngramTimeout",
    "Hit",
    "Hits",
    "ImprintReceipt",
    "InMemoryEngram",
    "PostgresEngram",
    "RecallResult",
    "SqliteEngram",
]
