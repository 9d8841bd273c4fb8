"""Neuron sources: ``Neuron(source=...)`` wraps an LLM provider, an HTTP/WSGI app or an MCP server.

Every source returns an async callable with the Neuron contract
``async (input, context) -> dict``, plus ``aclose()`` (a Dendrite calls it on
stop) and ``async with``.  See ``docs/neurons/`` for one page per source.
"""

from .base import NeuronSource
from .demo import default_demo_neuron
from .errors import (
    NeuronAuthError,
    NeuronConfigError,
    NeuronConnectionError,
    NeuronError,
    NeuronHTTPError,
    NeuronInputError,
    NeuronResponseError,
    NeuronStreamError,
    NeuronTimeout,
)
from .factory import SOURCES, Neuron
from .httpclient import HttpPolicy
from .intents import TEACH_INTENTS, apply_intents, find_intent
from .mcp_source import McpNeuron
from .prompt import read_input, render_followup

__all__ = [
    "SOURCES",
    "TEACH_INTENTS",
    "HttpPolicy",
    "McpNeuron",
    "Neuron",
    "NeuronAuthError",
    "NeuronConfigError",
    "NeuronConnectionError",
    "NeuronError",
    "NeuronHTTPError",
    "NeuronInputError",
    "NeuronResponseError",
    "NeuronSource",
    "NeuronStreamError",
    "NeuronTimeout",
    "apply_intents",
    "default_demo_neuron",
    "find_intent",
    "read_input",
    "render_followup",
]
