"""Test kit for cosmonapse users: Hypothesis strategies and the golden Signal vectors.

The strategies need ``hypothesis`` (a test dependency, not a runtime one), so
they are imported on first use: ``from cosmonapse.testing import signals``
works when Hypothesis is installed, and the vectors load without it.
See docs/testing.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .vectors import Vector, invalid_vectors, lenient_vectors, valid_frames, vector_text

if TYPE_CHECKING:
    from .strategies import (
        ENVELOPE_KEYS,
        directed,
        engram_ids,
        event_ids,
        json_objects,
        json_values,
        lenient_frames,
        malformed_frames,
        metas,
        payloads,
        signal_dicts,
        signal_types,
        signals,
        timestamps,
        trace_ids,
        ulids,
    )

_STRATEGIES = frozenset(
    {
        "ENVELOPE_KEYS",
        "directed",
        "engram_ids",
        "event_ids",
        "json_objects",
        "json_values",
        "lenient_frames",
        "malformed_frames",
        "metas",
        "payloads",
        "signal_dicts",
        "signal_types",
        "signals",
        "timestamps",
        "trace_ids",
        "ulids",
    }
)

__all__ = [
    "ENVELOPE_KEYS",
    "Vector",
    "directed",
    "engram_ids",
    "event_ids",
    "invalid_vectors",
    "json_objects",
    "json_values",
    "lenient_frames",
    "lenient_vectors",
    "malformed_frames",
    "metas",
    "payloads",
    "signal_dicts",
    "signal_types",
    "signals",
    "timestamps",
    "trace_ids",
    "ulids",
    "valid_frames",
    "vector_text",
]


def __getattr__(name: str) -> Any:
    """Import the Hypothesis strategies lazily (PEP 562)."""
    if name in _STRATEGIES:
        module = importlib.import_module(".strategies", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
