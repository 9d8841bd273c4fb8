"""Ollama's native API: ``/api/generate`` for a bare prompt, ``/api/chat`` for messages or tools.

Streaming is newline-delimited JSON: one object per token, the last one
with ``done: true`` (and the timing statistics).
"""

from __future__ import annotations

from typing import Any

from .base import Exchange, LLMNeuron, Reply, ShapeError, join_url
from .prompt import Prompt
from .tools import ToolCall, parse_arguments

__all__ = ["OllamaNeuron", "OllamaStream", "decode_chat", "decode_generate"]


def _check(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ShapeError("the answer is not a JSON object")
    if raw.get("error"):
        raise ShapeError(f"ollama reported an error: {raw['error']}")
    return raw


def _calls(message: dict[str, Any]) -> list[ToolCall]:
    out = []
    for raw in message.get("tool_calls") or []:
        fn = raw.get("function") or {}
        args, problem = parse_arguments(fn.get("arguments"))
        out.append(ToolCall(str(fn.get("name")), args, raw.get("id"), problem))
    return out


def decode_generate(raw: Any) -> Reply:
    text = _check(raw).get("response")
    if not isinstance(text, str):
        raise ShapeError("the answer has no 'response' text")
    return Reply(text=text, raw=raw)


def decode_chat(raw: Any) -> Reply:
    message = _check(raw).get("message")
    if not isinstance(message, dict):
        raise ShapeError("the answer has no 'message'")
    return Reply(text=str(message.get("content") or ""), raw=raw, tool_calls=_calls(message))


class OllamaStream:
    """Folds NDJSON chunks of either endpoint."""

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.finished = False
        self._text: list[str] = []
        self._tool_calls: list[Any] = []
        self._last: dict[str, Any] = {}

    def feed(self, item: Any) -> str:
        item = _check(item)
        self._last = item
        if item.get("done"):
            self.finished: bool = True
        if self.chat:
            message = item.get("message") or {}
            self._tool_calls.extend(message.get("tool_calls") or [])
            text = str(message.get("content") or "")
        else:
            text = str(item.get("response") or "")
        self._text.append(text)
        return text

    def reply(self) -> Reply:
        text = "".join(self._text)
        raw = {**self._last, "streamed": True}
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if self._tool_calls:
                message["tool_calls"] = self._tool_calls
            raw["message"] = message
            return Reply(text=text, raw=raw, tool_calls=_calls(message))
        raw["response"] = text
        return Reply(text=text, raw=raw)


class OllamaNeuron(LLMNeuron):
    def __init__(
        self,
        source: str,
        http: Any,
        *,
        endpoint: str,
        model: str,
        temperature: float | None = None,
        max_tokens: int | None = None,
        options: dict[str, Any] | None = None,
        **common: Any,
    ) -> None:
        super().__init__(source, http, **common)
        self.endpoint = endpoint
        self.model = model
        self.options: dict[str, Any] = dict(options or {})
        if temperature is not None:
            self.options["temperature"] = temperature
        if max_tokens is not None:
            self.options["num_predict"] = max_tokens

    def build(self, prompt: Prompt, stream: bool) -> Exchange:
        body: dict[str, Any] = {"model": self.model, "stream": stream}
        chat = bool(prompt.messages or prompt.tools)
        if chat:
            body["messages"] = prompt.chat_messages()
            if prompt.tools:
                body["tools"] = prompt.tools
        else:
            body["prompt"] = prompt.text or ""
            if prompt.system:
                body["system"] = prompt.system
        if self.options:
            body["options"] = self.options
        return Exchange(
            url=join_url(self.endpoint, "/api/chat" if chat else "/api/generate"),
            body=body,
            decode=decode_chat if chat else decode_generate,
            stream="ndjson" if stream else None,
            state=(lambda: OllamaStream(chat=True)) if chat else (lambda: OllamaStream(chat=False)),
        )
