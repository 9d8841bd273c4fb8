"""cosmonapse: a structured-concurrency Cosmonapse agent runtime on anyio."""

from .axon import Axon, NeuronFn
from .codec import converter, decode_signal, encode_signal
from .context import NeuronContext
from .errors import (
    CosmonapseError,
    DendriteProtocolError,
    DispatchTimeout,
    PathwayBusyError,
    PathwayClosedError,
    SignalDecodeError,
    SynapseClosedError,
    SynapseError,
)
from .ids import new_event_id, new_trace_id
from .signal import (
    AXON_TYPES,
    PATHWAY_TYPES,
    SYNAPSE_TYPES,
    TERMINAL_SCOPE_TYPES,
    TERMINAL_TYPES,
    WAIT_TYPES,
    Directed,
    Signal,
    SignalType,
)
from .synapse import MemorySynapse, Subscription, Synapse

__version__ = "0.1.0"

__all__ = [
    "AXON_TYPES",
    "PATHWAY_TYPES",
    "SYNAPSE_TYPES",
    "TERMINAL_SCOPE_TYPES",
    "TERMINAL_TYPES",
    "WAIT_TYPES",
    "Axon",
    "CosmonapseError",
    "DendriteProtocolError",
    "Directed",
    "DispatchTimeout",
    "MemorySynapse",
    "NeuronContext",
    "NeuronFn",
    "PathwayBusyError",
    "PathwayClosedError",
    "Signal",
    "SignalDecodeError",
    "SignalType",
    "Subscription",
    "Synapse",
    "SynapseClosedError",
    "SynapseError",
    "converter",
    "decode_signal",
    "encode_signal",
    "new_event_id",
    "new_trace_id",
]
