"""Anthropic's Messages API: ``POST /v1/messages`` with ``x-api-key`` and ``anthropic-version``.

System-role messages are not allowed in ``messages``: they are removed and
the last one becomes the top-level ``system``.  The answer's text is the
concatenation of its ``text`` blocks; ``tool_use`` blocks are tool calls.
Streaming is SSE with typed events (``content_block_delta`` …).
"""

from __future__ import annotations

from typing import Any

from .base import Exchange, LLMNeuron, Reply, ShapeError, join_url
from .prompt import Prompt
from .tools import ToolCall, parse_arguments

__all__ = ["ANTHROPIC_VERSION", "AnthropicNeuron", "AnthropicStream", "decode_messages"]

ANTHROPIC_VERSION = "2023-06-01"


def _reply_from_blocks(blocks: list[Any], raw: Any) -> Reply:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in blocks:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            args, problem = parse_arguments(block.get("input"))
            calls.append(ToolCall(str(block.get("name")), args, block.get("id"), problem))
    return Reply(text="".join(texts), raw=raw, tool_calls=calls)


def decode_messages(raw: Any) -> Reply:
    if not isinstance(raw, dict):
        raise ShapeError("the answer is not a JSON object")
    if raw.get("type") == "error" or raw.get("error"):
        raise ShapeError(f"the server reported an error: {raw.get('error')}")
    content = raw.get("content")
    if not isinstance(content, list):
        raise ShapeError("the answer has no content list")
    return _reply_from_blocks(content, raw)


class AnthropicStream:
    """Folds Messages streaming events into the final message."""

    def __init__(self) -> None:
        self.finished = False
        self._message: dict[str, Any] = {}
        self._blocks: dict[int, dict[str, Any]] = {}
        self._json: dict[int, list[str]] = {}

    def feed(self, item: Any) -> str:
        event, data = item
        kind = data.get("type", event) if isinstance(data, dict) else event
        if kind == "error":
            raise ShapeError(f"the server reported an error mid-stream: {data.get('error')}")
        if kind == "message_start":
            self._message = dict(data.get("message") or {})
        elif kind == "content_block_start":
            self._blocks[int(data["index"])] = dict(data.get("content_block") or {})
        elif kind == "content_block_delta":
            index = int(data["index"])
            delta = data.get("delta") or {}
            block = self._blocks.setdefault(index, {"type": "text", "text": ""})
            if delta.get("type") == "text_delta":
                text = str(delta.get("text") or "")
                block["text"] = str(block.get("text") or "") + text
                return text
            if delta.get("type") == "input_json_delta":
                self._json.setdefault(index, []).append(str(delta.get("partial_json") or ""))
        elif kind == "message_delta":
            self._message.update(data.get("delta") or {})
            if data.get("usage"):
                self._message["usage"] = {**(self._message.get("usage") or {}), **data["usage"]}
        elif kind == "message_stop":
            self.finished: bool = True
        return ""

    def reply(self) -> Reply:
        for index, parts in self._json.items():
            if index in self._blocks:
                self._blocks[index]["input"] = "".join(parts)
        blocks = [b for _, b in sorted(self._blocks.items())]
        raw = {**self._message, "content": blocks, "streamed": True}
        reply = _reply_from_blocks(blocks, raw)
        for block in blocks:  # show decoded tool input in meta, as the non-streamed answer has it
            if block.get("type") == "tool_use" and isinstance(block.get("input"), str):
                block["input"] = parse_arguments(block["input"])[0]
        return reply


class AnthropicNeuron(LLMNeuron):
    def __init__(
        self,
        source: str,
        http: Any,
        *,
        endpoint: str,
        model: str,
        max_tokens: int = 1024,
        temperature: float | None = None,
        stop: list[str] | str | None = None,
        **common: Any,
    ) -> None:
        super().__init__(source, http, **common)
        self.endpoint = endpoint
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.stop: list[str] | None = [stop] if isinstance(stop, str) else stop

    def build(self, prompt: Prompt, stream: bool) -> Exchange:
        system: str | None = None
        messages: list[dict[str, Any]] = []
        for message in prompt.chat_messages():
            if message.get("role") == "system":
                system = str(message.get("content") or "")
            else:
                messages.append(message)
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens}
        if system:
            body["system"] = system
        if prompt.tools:
            body["tools"] = prompt.tools
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.stop:
            body["stop_sequences"] = self.stop
        if stream:
            body["stream"] = True
        return Exchange(
            url=join_url(self.endpoint, "/v1/messages"),
            body=body,
            decode=decode_messages,
            stream="sse" if stream else None,
            state=AnthropicStream,
            sse_events=True,
        )
