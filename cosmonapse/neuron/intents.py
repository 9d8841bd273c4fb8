"""The intent convention: how an LLM asks for clarification or permission in plain text (§8).

A model answers with a JSON object whose ``cosmo`` key is a string — the
whole reply, or inside a ```` ```json ```` fence::

    {"cosmo": "clarification", "question": "Which city?"}
    {"cosmo": "permission", "action": "send the email", "reason": "..."}
    {"cosmo": "error", "code": "...", "message": "..."}
    {"cosmo": "output", "output": {...}}

:func:`apply_intents` turns such a reply into the Axon's output markers
(``__clarification__`` …), so any Axon replies with CLARIFICATION /
PERMISSION / ERROR.  Sources built with ``apply_intents=True`` do this
themselves; ``Axon.from_source`` can call the same function.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

__all__ = ["TEACH_INTENTS", "apply_intents", "find_intent"]

TEACH_INTENTS = (
    "When you cannot finish the task without help, reply with only a JSON object instead of prose: "
    '{"cosmo": "clarification", "question": "<what you need to know>"} to ask a question; '
    '{"cosmo": "permission", "action": "<what you want to do>", "reason": "<why>"} before an action '
    "that needs approval; "
    '{"cosmo": "error", "message": "<what went wrong>"} when the task is impossible. '
    "Otherwise answer normally."
)

_FENCE = re.compile(r"```json\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def _intent(candidate: str) -> dict[str, Any] | None:
    try:
        value = orjson.loads(candidate)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, dict) and isinstance(value.get("cosmo"), str):
        return value
    return None


def find_intent(text: str) -> dict[str, Any] | None:
    """The intent object in *text* (the whole trimmed text, else the first fenced json block)."""
    if not isinstance(text, str):
        return None
    found = _intent(text.strip())
    if found is not None:
        return found
    for block in _FENCE.findall(text):
        found = _intent(block.strip())
        if found is not None:
            return found
    return None


def _marker(intent: dict[str, Any]) -> dict[str, Any] | None:
    kind = intent["cosmo"].lower()
    if kind == "clarification":
        out: dict[str, Any] = {"__clarification__": True, "question": str(intent.get("question") or "")}
        if intent.get("context"):
            out["context"] = intent["context"]
        return out
    if kind == "permission":
        out = {"__permission__": True, "action": str(intent.get("action") or "")}
        for key in ("scope", "reason", "context"):
            if intent.get(key) is not None:
                out[key] = intent[key]
        return out
    if kind == "error":
        return {
            "__error__": True,
            "code": str(intent.get("code") or "NEURON_ERROR"),
            "message": str(intent.get("message") or ""),
            "recoverable": bool(intent.get("recoverable", False)),
        }
    if kind == "output":
        value = intent.get("output")
        return value if isinstance(value, dict) else {"value": value}
    return None


def apply_intents(output: Any) -> Any:
    """Map a source's output to the Axon's reply markers when it carries an intent.

    MCP results with ``is_error`` become ERROR ``MCP_TOOL_ERROR``; otherwise the
    ``response`` text is scanned.  Anything else is returned unchanged.
    """
    if not isinstance(output, dict):
        return output
    if output.get("is_error") is True:
        return {
            "__error__": True,
            "code": "MCP_TOOL_ERROR",
            "message": str(output.get("response") or "MCP tool reported an error"),
            "recoverable": False,
        }
    intent = find_intent(output.get("response"))  # type: ignore[arg-type]
    if intent is None:
        return output
    marker = _marker(intent)
    return output if marker is None else marker
