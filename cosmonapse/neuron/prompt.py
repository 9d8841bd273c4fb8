"""What an LLM source sends: the prompt or chat messages taken from a TASK input (§22, §11).

The first truthy of ``prompt``, ``text``, ``query``, ``content`` is the
prompt; ``messages`` (an OpenAI-style list) is the chat history.  A TASK
re-dispatched after a CLARIFICATION or PERMISSION carries none of those keys
but ``{"clarification": {...}}`` / ``{"permission": {...}}``; it is rendered
as a plain-text continuation prompt so the model can pick the work up again.
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson

from .errors import NeuronInputError

__all__ = ["PROMPT_KEYS", "Prompt", "read_input", "render_followup"]

PROMPT_KEYS = ("prompt", "text", "query", "content")


@attrs.frozen
class Prompt:
    """The provider-neutral request: text and/or messages, a system prompt, native tools."""

    text: str | None
    messages: list[dict[str, Any]] | None
    system: str | None = None
    tools: list[Any] | None = None

    def chat_messages(self) -> list[dict[str, Any]]:
        """Messages for a chat endpoint: the system prompt first, then history or the prompt."""
        out: list[dict[str, Any]] = []
        if self.system:
            out.append({"role": "system", "content": self.system})
        if self.messages:
            out.extend(self.messages)
        elif self.text is not None:
            out.append({"role": "user", "content": self.text})
        return out


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _extras(block: dict[str, Any], known: tuple[str, ...]) -> str:
    extra = {k: v for k, v in block.items() if k not in known}
    return f"\nAdditional details: {orjson.dumps(extra, default=str).decode()}" if extra else ""


def render_followup(input: dict[str, Any]) -> str | None:
    """The continuation prompt for a clarification/permission/escalation follow-up, else None."""
    clar = input.get("clarification")
    if isinstance(clar, dict):
        question = _as_text(clar.get("question", ""))
        answer = _as_text(clar.get("answer", ""))
        return (
            f"Earlier in this task you asked for a clarification: {question}\n"
            f"The answer is: {answer}"
            f"{_extras(clar, ('question', 'answer'))}\n"
            "Continue the original task using this answer."
        )
    perm = input.get("permission")
    if isinstance(perm, dict):
        action = _as_text(perm.get("action", ""))
        granted = bool(perm.get("granted"))
        details = []
        if perm.get("reason"):
            details.append(f"reason: {_as_text(perm['reason'])}")
        if perm.get("ttl_ms") is not None:
            details.append(f"valid for {perm['ttl_ms']} ms")
        detail = f" ({'; '.join(details)})" if details else ""
        verdict = "GRANTED" if granted else "DENIED"
        then = (
            "Proceed with the action and finish the task."
            if granted
            else "Do not perform the action; finish the task without it or explain what you cannot do."
        )
        extras = _extras(perm, ("action", "granted", "reason", "ttl_ms"))
        return (
            f"Earlier in this task you asked for permission to: {action}\n"
            f"Decision: {verdict}{detail}{extras}\n{then}"
        )
    esc = input.get("escalation")
    if isinstance(esc, dict):
        reason = _as_text(esc.get("reason", ""))
        origin = esc.get("from")
        frm = f" from {origin}" if origin else ""
        ctx = esc.get("context")
        ctx_text = f"\nContext: {_as_text(ctx)}" if ctx else ""
        return f"A task was escalated to you{frm}. Reason: {reason}{ctx_text}\nHandle it."
    return None


def _messages(input: dict[str, Any]) -> list[dict[str, Any]] | None:
    messages = input.get("messages")
    if not messages:
        return None
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise NeuronInputError("input.messages must be a list of {'role': ..., 'content': ...} objects")
    return list(messages)


def read_input(input: dict[str, Any], *, system: str | None = None) -> Prompt:
    """Extract the prompt, messages, system prompt and native tools from a TASK input.

    ``input.system`` overrides the Neuron's configured system prompt; a
    non-empty ``input.tools`` list is passed to the provider verbatim.
    """
    text: str | None = None
    for key in PROMPT_KEYS:
        value = input.get(key)
        if value:
            text = _as_text(value)
            break
    if text is None:
        text = render_followup(input)
    messages = _messages(input)
    if text is None and messages is None:
        keys = ", ".join(sorted(input)) or "none"
        raise NeuronInputError(
            "the TASK input has no prompt: give one of prompt/text/query/content, a 'messages' list, "
            f"or a clarification/permission follow-up (input keys: {keys})"
        )
    tools = input.get("tools")
    sys_prompt = input.get("system") or system
    return Prompt(
        text=text,
        messages=messages,
        system=_as_text(sys_prompt) if sys_prompt else None,
        tools=list(tools) if isinstance(tools, list) and tools else None,
    )
