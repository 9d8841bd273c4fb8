"""OpenAI-compatible servers: chat ``/v1/chat/completions`` and completions ``/v1/completions``.

One class serves the ``huggingface`` source (router, dedicated endpoints,
local TGI / vLLM / LM Studio — plus TGI's native ``/generate``, see
:mod:`.tgi`), ``openai`` and the hosted presets (groq, openrouter,
together, mistral).  Streaming uses SSE (``stream: true``, ``data:`` lines,
``[DONE]``).
"""

from __future__ import annotations

from typing import Any

from .base import Exchange, LLMNeuron, Reply, ShapeError, join_url
from .errors import NeuronInputError
from .prompt import Prompt
from .tgi import tgi_exchange
from .tools import ToolCall, parse_arguments

__all__ = ["ChatStream", "CompletionStream", "OpenAICompatNeuron", "decode_chat", "decode_completion"]


def _tool_call(raw: dict[str, Any]) -> ToolCall:
    fn = raw.get("function") or {}
    name = fn.get("name") or raw.get("name")
    if not name:
        raise ShapeError("a tool call has no function name")
    args, problem = parse_arguments(fn.get("arguments", raw.get("arguments")))
    return ToolCall(tool=str(name), args=args, call_id=raw.get("id"), bad_arguments=problem)


def _first_choice(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ShapeError("the answer is not a JSON object")
    if raw.get("error"):
        raise ShapeError(f"the server reported an error: {raw['error']}")
    choices = raw.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ShapeError("the answer has no choices[0]")
    return choices[0]


def decode_chat(raw: Any) -> Reply:
    message = _first_choice(raw).get("message")
    if not isinstance(message, dict):
        raise ShapeError("the answer has no choices[0].message")
    calls = [_tool_call(c) for c in message.get("tool_calls") or []]
    content = message.get("content")
    if content is None and not calls:
        raise ShapeError("the answer has no choices[0].message.content")
    return Reply(text=_content_text(content), raw=raw, tool_calls=calls)


def _content_text(content: Any) -> str:
    """Message content as text (a list of content parts is joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def decode_completion(raw: Any) -> Reply:
    text = _first_choice(raw).get("text")
    if not isinstance(text, str):
        raise ShapeError("the answer has no choices[0].text")
    return Reply(text=text, raw=raw)


class ChatStream:
    """Folds ``chat.completion.chunk`` events; tool-call fragments are joined by index."""

    def __init__(self) -> None:
        self.finished = False
        self._text: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self._first: dict[str, Any] = {}
        self._finish_reason: str | None = None
        self._usage: Any = None

    def feed(self, item: Any) -> str:
        if not isinstance(item, dict):
            raise ShapeError("a stream event is not a JSON object")
        if item.get("error"):
            raise ShapeError(f"the server reported an error mid-stream: {item['error']}")
        if not self._first:
            self._first = {k: item[k] for k in ("id", "created", "model") if k in item}
        if item.get("usage"):
            self._usage = item["usage"]
        choices = item.get("choices") or []
        if not choices:
            return ""
        choice = choices[0]
        if choice.get("finish_reason"):
            self._finish_reason = choice["finish_reason"]
            self.finished: bool = True
        delta = choice.get("delta") or {}
        for frag in delta.get("tool_calls") or []:
            slot = self._calls.setdefault(int(frag.get("index", len(self._calls))), {"arguments": ""})
            if frag.get("id"):
                slot["id"] = frag["id"]
            fn = frag.get("function") or {}
            if fn.get("name"):
                slot["name"] = fn["name"]
            args = fn.get("arguments")
            if isinstance(args, str):
                slot["arguments"] += args
            elif isinstance(args, dict):
                slot["arguments"] = args
        text = _content_text(delta.get("content"))
        if text:
            self._text.append(text)
        return text

    def reply(self) -> Reply:
        text = "".join(self._text)
        raw_calls = [
            {
                "id": c.get("id"),
                "type": "function",
                "function": {"name": c.get("name"), "arguments": c.get("arguments")},
            }
            for _, c in sorted(self._calls.items())
        ]
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if raw_calls:
            message["tool_calls"] = raw_calls
        raw: dict[str, Any] = {
            **self._first,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": self._finish_reason}],
            "streamed": True,
        }
        if self._usage is not None:
            raw["usage"] = self._usage
        return Reply(text=text, raw=raw, tool_calls=[_tool_call(c) for c in raw_calls])


class CompletionStream:
    """Folds ``text_completion`` stream events."""

    def __init__(self) -> None:
        self.finished = False
        self._text: list[str] = []
        self._first: dict[str, Any] = {}
        self._finish_reason: str | None = None

    def feed(self, item: Any) -> str:
        if not isinstance(item, dict):
            raise ShapeError("a stream event is not a JSON object")
        if item.get("error"):
            raise ShapeError(f"the server reported an error mid-stream: {item['error']}")
        if not self._first:
            self._first = {k: item[k] for k in ("id", "created", "model") if k in item}
        choices = item.get("choices") or []
        if not choices:
            return ""
        if choices[0].get("finish_reason"):
            self._finish_reason = choices[0]["finish_reason"]
            self.finished: bool = True
        text = choices[0].get("text") or ""
        self._text.append(text)
        return text

    def reply(self) -> Reply:
        text = "".join(self._text)
        raw = {
            **self._first,
            "object": "text_completion",
            "choices": [{"index": 0, "text": text, "finish_reason": self._finish_reason}],
            "streamed": True,
        }
        return Reply(text=text, raw=raw)


class OpenAICompatNeuron(LLMNeuron):
    """Chat/completions against an OpenAI-compatible server (and TGI ``/generate`` for HF).

    ``mode`` picks the endpoint: ``"chat"`` always chat; ``"auto"`` (HF) is
    completions when ``use_completions_api``, chat when messages or tools are
    present or ``use_chat_api``, else TGI ``/generate``.
    """

    def __init__(
        self,
        source: str,
        http: Any,
        *,
        endpoint: str,
        model: str | None,
        mode: str = "chat",
        use_chat_api: bool = False,
        use_completions_api: bool = False,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | str | None = None,
        **common: Any,
    ) -> None:
        super().__init__(source, http, **common)
        self.endpoint = endpoint
        self.model = model
        self.mode = mode
        self.use_chat_api = use_chat_api
        self.use_completions_api = use_completions_api
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.stop: list[str] | None = [stop] if isinstance(stop, str) else stop

    def _common(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.model:
            body["model"] = self.model
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.stop:
            body["stop"] = self.stop
        return body

    def build(self, prompt: Prompt, stream: bool) -> Exchange:
        if self.mode != "chat" and self.use_completions_api:
            if prompt.messages:
                raise NeuronInputError(
                    f"{self.source}: use_completions_api=True sends a plain prompt; this input has 'messages'"
                )
            text = prompt.text or ""
            if prompt.system:
                text = f"{prompt.system}\n\n{text}"
            body = self._common({"prompt": text})
            if stream:
                body["stream"] = True
            return Exchange(
                url=join_url(self.endpoint, "/v1/completions"),
                body=body,
                decode=decode_completion,
                stream="sse" if stream else None,
                state=CompletionStream,
            )
        if self.mode == "chat" or self.use_chat_api or prompt.messages or prompt.tools:
            body = self._common({"messages": prompt.chat_messages()})
            if prompt.tools:
                body["tools"] = prompt.tools
            if stream:
                body["stream"] = True
            return Exchange(
                url=join_url(self.endpoint, "/v1/chat/completions"),
                body=body,
                decode=decode_chat,
                stream="sse" if stream else None,
                state=ChatStream,
            )
        return tgi_exchange(
            self.endpoint,
            prompt,
            stream=stream,
            max_new_tokens=self.max_tokens,
            temperature=self.temperature,
            stop=self.stop,
        )
