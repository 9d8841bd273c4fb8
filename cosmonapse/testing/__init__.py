"""Test kit for cosmonapse users (see docs/testing.md).

* :mod:`.plugin` — the pytest plugin (``cosmo_*`` fixtures, ``--cosmo-backends``,
  ``--cosmo-conformance``), registered by the package's ``pytest11`` entry point;
* :mod:`.bus` — ``TestSynapse``: ``connect_synapse(any URL)`` meets on an in-process bus;
  :mod:`.faults` — drop, duplicate, delay, reorder;
* :mod:`.fakellm` — ``FakeLLM``: a scripted LLM endpoint as an httpx transport;
* :mod:`.machine` — ``ProtocolMachine``, a Hypothesis state machine over your agents,
  on :mod:`.bridge` (virtual-time event loops) and :mod:`.ledger` (the invariants);
* :mod:`.conformance` — probe agents on a live bus and judge them per rule (:mod:`.taps`);
* :mod:`.assertions`, :mod:`.harness`, :mod:`.leaks` — trace shapes, clusters,
  recorders, leak checks;
* :mod:`.strategies` — Hypothesis strategies; :mod:`.vectors` — the reference's golden frames.

Everything but the vectors is imported on first use, so ``import cosmonapse.testing``
stays cheap and works without Hypothesis or pytest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .vectors import Vector, invalid_vectors, lenient_vectors, valid_frames, vector_text

if TYPE_CHECKING:
    from .assertions import assert_one_terminal, assert_reply, assert_trace, format_trace
    from .bridge import LoopBridge, StepTimeout, VirtualClockLoop
    from .bus import InProcessSynapse, Published, TestSynapse, TestSynapseHub
    from .conformance import ConformanceOptions, Report, Transcript, judge, record, run_conformance
    from .fakellm import FakeLLM, LLMError, LLMRaw, LLMReply, LLMRequest, LLMTimeout, LLMToolCall
    from .faults import Fault, FaultInjector, FaultKind
    from .harness import (
        Cluster,
        SignalRecorder,
        assert_no_leaked_tasks,
        memory_cluster,
        record_namespace,
        running_task_names,
    )
    from .leaks import assert_no_leaked_threads, no_leaks
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

#: submodule -> the names it provides, imported on first use (PEP 562).
_MODULES: dict[str, tuple[str, ...]] = {
    ".assertions": ("assert_one_terminal", "assert_reply", "assert_trace", "format_trace"),
    ".bridge": ("LoopBridge", "StepTimeout", "VirtualClockLoop"),
    ".bus": ("InProcessSynapse", "Published", "TestSynapse", "TestSynapseHub"),
    ".conformance": ("ConformanceOptions", "Report", "Transcript", "judge", "record", "run_conformance"),
    ".fakellm": ("FakeLLM", "LLMError", "LLMRaw", "LLMReply", "LLMRequest", "LLMTimeout", "LLMToolCall"),
    ".faults": ("Fault", "FaultInjector", "FaultKind"),
    ".harness": (
        "Cluster",
        "SignalRecorder",
        "assert_no_leaked_tasks",
        "memory_cluster",
        "record_namespace",
        "running_task_names",
    ),
    ".leaks": ("assert_no_leaked_threads", "no_leaks"),
    ".ledger": ("Labels", "ProtocolLedger", "Violation"),
    ".machine": ("Call", "ProtocolMachine"),
    ".strategies": (
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
}
_LAZY = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [  # noqa: RUF022 - grouped by module, as in _MODULES
    "Vector",
    "invalid_vectors",
    "lenient_vectors",
    "valid_frames",
    "vector_text",
    "assert_one_terminal",
    "assert_reply",
    "assert_trace",
    "format_trace",
    "LoopBridge",
    "StepTimeout",
    "VirtualClockLoop",
    "InProcessSynapse",
    "Published",
    "TestSynapse",
    "TestSynapseHub",
    "ConformanceOptions",
    "Report",
    "Transcript",
    "judge",
    "record",
    "run_conformance",
    "FakeLLM",
    "LLMError",
    "LLMRaw",
    "LLMReply",
    "LLMRequest",
    "LLMTimeout",
    "LLMToolCall",
    "Fault",
    "FaultInjector",
    "FaultKind",
    "Cluster",
    "SignalRecorder",
    "assert_no_leaked_tasks",
    "memory_cluster",
    "record_namespace",
    "running_task_names",
    "assert_no_leaked_threads",
    "no_leaks",
    "Labels",
    "ProtocolLedger",
    "Violation",
    "Call",
    "ProtocolMachine",
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
]


def __getattr__(name: str) -> Any:
    """Import the kit's submodules on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


def __dir__() -> list[str]:
    return sorted(__all__)
