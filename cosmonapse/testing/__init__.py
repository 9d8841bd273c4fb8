"""Test kit for cosmonapse users: Hypothesis strategies, the golden Signal vectors, a harness.

* :mod:`.strategies` — Hypothesis strategies (needs ``hypothesis``, a test
  dependency, not a runtime one);
* :mod:`.vectors` — the golden frames of reference 0.1.14;
* :mod:`.harness` — in-memory clusters, Signal recorders, leak checks.

Strategies and harness are imported on first use, so ``import cosmonapse.testing``
stays cheap and works without Hypothesis.  See docs/testing.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .vectors import Vector, invalid_vectors, lenient_vectors, valid_frames, vector_text

if TYPE_CHECKING:
    from .bridge import LoopBridge, StepTimeout, VirtualClockLoop
    from .bus import InProcessSynapse, Published, TestSynapse, TestSynapseHub
    from .fakellm import FakeLLM, LLMError, LLMRaw, LLMReply, LLMRequest, LLMTimeout, LLMToolCall
    from .faults import Fault, FaultInjector, FaultKind
    from .harness import Cluster, SignalRecorder, assert_no_leaked_tasks, memory_cluster, running_task_names
    from .ledger import Labels, ProtocolLedger, Violation
    from .machine import Call, ProtocolMachine
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

#: name -> the submodule it is imported from on first use (PEP 562).
_LAZY = {
    **dict.fromkeys(
        (
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
        ),
        ".strategies",
    ),
    **dict.fromkeys(
        ("Cluster", "SignalRecorder", "assert_no_leaked_tasks", "memory_cluster", "running_task_names"),
        ".harness",
    ),
    **dict.fromkeys(("InProcessSynapse", "Published", "TestSynapse", "TestSynapseHub"), ".bus"),
    **dict.fromkeys(("Fault", "FaultInjector", "FaultKind"), ".faults"),
    **dict.fromkeys(("Call", "ProtocolMachine"), ".machine"),
    **dict.fromkeys(("Labels", "ProtocolLedger", "Violation"), ".ledger"),
    **dict.fromkeys(("LoopBridge", "StepTimeout", "VirtualClockLoop"), ".bridge"),
    **dict.fromkeys(
        ("FakeLLM", "LLMError", "LLMRaw", "LLMReply", "LLMRequest", "LLMTimeout", "LLMToolCall"), ".fakellm"
    ),
}

__all__ = [
    "ENVELOPE_KEYS",
    "Call",
    "Cluster",
    "FakeLLM",
    "Fault",
    "FaultInjector",
    "FaultKind",
    "InProcessSynapse",
    "LLMError",
    "LLMRaw",
    "LLMReply",
    "LLMRequest",
    "LLMTimeout",
    "LLMToolCall",
    "Labels",
    "LoopBridge",
    "ProtocolLedger",
    "ProtocolMachine",
    "Published",
    "SignalRecorder",
    "StepTimeout",
    "TestSynapse",
    "TestSynapseHub",
    "Vector",
    "Violation",
    "VirtualClockLoop",
    "assert_no_leaked_tasks",
    "directed",
    "engram_ids",
    "event_ids",
    "invalid_vectors",
    "json_objects",
    "json_values",
    "lenient_frames",
    "lenient_vectors",
    "malformed_frames",
    "memory_cluster",
    "metas",
    "payloads",
    "running_task_names",
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
    """Import strategies and harness on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


def __dir__() -> list[str]:
    return sorted(__all__)
