"""cosmonapse: a structured-concurrency Cosmonapse agent runtime on anyio."""

from typing import TYPE_CHECKING

from .__about__ import __version__ as __version__
from .axon import Axon, ContextFetcher, NeuronFn
from .bidding import BiddingTimeout
from .codec import converter, decode_signal, encode_signal
from .context import NeuronContext, current_task
from .core import DendriteStats
from .decisions import DecisionTimeout
from .dendrite import Dendrite
from .engram import (
    Engram,
    EngramCancelled,
    EngramError,
    EngramNotBound,
    EngramOverloaded,
    EngramTimeout,
    Hit,
    ImprintReceipt,
    InMemoryEngram,
    PostgresEngram,
    RecallResult,
    SqliteEngram,
)
from .envelope import (
    agent_output_signal,
    audit_signal,
    bid_signal,
    clarification_answer_signal,
    clarification_signal,
    consensus_signal,
    context_sync_signal,
    critique_signal,
    deregister_signal,
    directed_to,
    discover_signal,
    error_signal,
    escalation_signal,
    final_signal,
    heartbeat_signal,
    imprint_signal,
    imprinted_signal,
    memory_append_signal,
    permission_decision_signal,
    permission_signal,
    plan_signal,
    recall_signal,
    recalled_signal,
    register_signal,
    stop_signal,
    stopped_signal,
    task_awarded_signal,
    task_declined_signal,
    task_offer_signal,
    task_signal,
    thought_delta_signal,
    tool_call_signal,
    tool_result_signal,
)
from .errors import (
    CosmonapseError,
    DendriteProtocolError,
    DispatchTimeout,
    PathwayBusyError,
    PathwayClosedError,
    PathwayTimeout,
    SignalDecodeError,
    SynapseClosedError,
    SynapseError,
    SynapseFailedError,
)
from .handlers import HandlerSpec
from .hosting import TaskLoad
from .ids import new_event_id, new_trace_id
from .lifecycle import LifecycleHooks
from .ops import OpCancelled
from .pathway import Pathway
from .registry import (
    MemoryRegistryStore,
    NeuronRecord,
    PostgresRegistryStore,
    RegistryStore,
    SqliteRegistryStore,
)
from .retry import RetryStrategy, default_retry_on, run_with_retry
from .signal import (
    AXON_TYPES,
    ORCHESTRATION_TYPES,
    PATHWAY_TYPES,
    SYNAPSE_TYPES,
    TERMINAL_SCOPE_TYPES,
    TERMINAL_TYPES,
    WAIT_TYPES,
    Directed,
    Signal,
    SignalType,
)
from .stops import StopTombstones, TraceStoppedError
from .synapse import DevSynapse, MemorySynapse, Subscription, Synapse, connect_synapse
from .synapse.nats import NatsAuthError, NatsSynapse, NatsTLSError

if TYPE_CHECKING:  # loaded on first use at run time (it pulls in httpx); typed like any import
    from .neuron import Neuron

__all__ = [
    "AXON_TYPES",
    "ORCHESTRATION_TYPES",
    "PATHWAY_TYPES",
    "SYNAPSE_TYPES",
    "TERMINAL_SCOPE_TYPES",
    "TERMINAL_TYPES",
    "WAIT_TYPES",
    "Axon",
    "BiddingTimeout",
    "ContextFetcher",
    "CosmonapseError",
    "DecisionTimeout",
    "Dendrite",
    "DendriteProtocolError",
    "DendriteStats",
    "DevSynapse",
    "Directed",
    "DispatchTimeout",
    "Engram",
    "EngramCancelled",
    "EngramError",
    "EngramNotBound",
    "EngramOverloaded",
    "EngramTimeout",
    "HandlerSpec",
    "Hit",
    "ImprintReceipt",
    "InMemoryEngram",
    "LifecycleHooks",
    "MemoryRegistryStore",
    "MemorySynapse",
    "NatsAuthError",
    "NatsSynapse",
    "NatsTLSError",
    "Neuron",
    "NeuronContext",
    "NeuronFn",
    "NeuronRecord",
    "OpCancelled",
    "Pathway",
    "PathwayBusyError",
    "PathwayClosedError",
    "PathwayTimeout",
    "PostgresEngram",
    "PostgresRegistryStore",
    "RecallResult",
    "RegistryStore",
    "RetryStrategy",
    "Signal",
    "SignalDecodeError",
    "SignalType",
    "SqliteEngram",
    "SqliteRegistryStore",
    "StopTombstones",
    "Subscription",
    "Synapse",
    "SynapseClosedError",
    "SynapseError",
    "SynapseFailedError",
    "TaskLoad",
    "TraceStoppedError",
    "agent_output_signal",
    "audit_signal",
    "bid_signal",
    "clarification_answer_signal",
    "clarification_signal",
    "connect_synapse",
    "consensus_signal",
    "context_sync_signal",
    "converter",
    "critique_signal",
    "current_task",
    "decode_signal",
    "default_retry_on",
    "deregister_signal",
    "directed_to",
    "discover_signal",
    "encode_signal",
    "error_signal",
    "escalation_signal",
    "final_signal",
    "heartbeat_signal",
    "imprint_signal",
    "imprinted_signal",
    "memory_append_signal",
    "new_event_id",
    "new_trace_id",
    "permission_decision_signal",
    "permission_signal",
    "plan_signal",
    "recall_signal",
    "recalled_signal",
    "register_signal",
    "run_with_retry",
    "stop_signal",
    "stopped_signal",
    "task_awarded_signal",
    "task_declined_signal",
    "task_offer_signal",
    "task_signal",
    "thought_delta_signal",
    "tool_call_signal",
    "tool_result_signal",
]


def __getattr__(name: str) -> object:
    """``Neuron`` (the source factory, ``cosmonapse.neuron``) is imported on first use."""
    if name == "Neuron":
        from .neuron import Neuron

        return Neuron
    raise AttributeError(f"module 'cosmonapse' has no attribute {name!r}")
