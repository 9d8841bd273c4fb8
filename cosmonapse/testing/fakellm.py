"""``FakeLLM``: a scripted LLM endpoint served through an httpx transport (no network).

    fake = FakeLLM("Hello!", LLMReply(chunks=["Hel", "lo"], chunk_delay_s=0.01), LLMError(429))
    neuron = Neuron("openai", model="m", api_key="k", transport=fake)

Every HTTP Neuron source takes ``transport=``; the fake answers each request
in the protocol of the path it was sent to:

| path | protocol |
|---|---|
| ``/v1/chat/completions`` | OpenAI-compatible chat (huggingface, openai and the hosted presets) |
| ``/v1/completions`` | OpenAI-compatible completions (huggingface ``use_completions_api``) |
| ``/generate``, ``/generate_stream`` | TGI (huggingface on a plain prompt) |
| ``/v1/messages`` | Anthropic Messages |
| ``/api/generate``, ``/api/chat`` | Ollama |
| anything else | only an :class:`LLMRaw` step answers it (the ``http`` source); else 404 |

Each request takes the next scripted step (then ``default`` forever); a step is
text (a ``str``), :class:`LLMReply` (text, tool calls, streamed pieces with
their timing, a stream cut mid-way), :class:`LLMError` (429/500…, with
``Retry-After``), :class:`LLMTimeout` or :class:`LLMRaw`.  ``respond=`` may
instead compute the step from the request.  Streams are sent when the request
asks (``"stream": true``) in the provider's format: SSE for OpenAI, TGI and
Anthropic, NDJSON for Ollama.

Timing honours the client's own limits as a real server would be felt: a
delay longer than the request's read timeout ends in ``httpx.ReadTimeout``
after that timeout.  Every request is kept in ``requests`` (parsed JSON,
headers, protocol, the prompt) to assert on.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import anyio
import attrs
import httpx
import orjson

__all__ = ["FakeLLM", "LLMError", "LLMRaw", "LLMReply", "LLMRequest", "LLMTimeout", "LLMToolCall"]


@attrs.frozen
class LLMToolCall:
    """A tool call the model asks for."""

    name: str
    arguments: dict[str, Any] = attrs.Factory(dict)
    id: str | None = None


@attrs.frozen
class LLMReply:
    """One answer: text and/or tool calls; streamed as ``chunks`` (default: word by word).

    ``delay_s`` passes before the answer starts, ``chunk_delay_s`` between
    streamed pieces; ``drop_after`` cuts a stream after that many pieces (the
    connection breaks, no end marker).
    """

    text: str = ""
    tool_calls: tuple[LLMToolCall, ...] = attrs.field(default=(), converter=tuple)
    chunks: tuple[str, ...] | None = attrs.field(default=None, converter=attrs.converters.optional(tuple))
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    drop_after: int | None = None
    finish_reason: str = "stop"
    usage: dict[str, int] = attrs.Factory(lambda: {"prompt_tokens": 1, "completion_tokens": 1})

    def pieces(self) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        words = self.text.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)] if self.text else []


@attrs.frozen
class LLMError:
    """An HTTP error answer (429 rate limit, 500, 503 …), with an optional ``Retry-After``."""

    status: int = 500
    message: str = "fake server error"
    retry_after: float | str | None = None
    delay_s: float = 0.0


@attrs.frozen
class LLMTimeout:
    """No answer: ``httpx.ReadTimeout`` (or ``ConnectTimeout``) after ``after_s`` (default at once)."""

    connect: bool = False
    after_s: float = 0.0


@attrs.frozen
class LLMRaw:
    """Any JSON body, for any path (the ``http`` source, or a malformed provider answer)."""

    body: Any
    status: int = 200
    headers: dict[str, str] = attrs.Factory(dict)


Step = str | LLMReply | LLMError | LLMTimeout | LLMRaw

_PROTOCOLS = {
    "/v1/chat/completions": "openai-chat",
    "/v1/completions": "openai-completions",
    "/generate": "tgi",
    "/generate_stream": "tgi",
    "/v1/messages": "anthropic",
    "/api/generate": "ollama-generate",
    "/api/chat": "ollama-chat",
}


def _protocol(path: str) -> str | None:
    for suffix, name in sorted(_PROTOCOLS.items(), key=lambda kv: -len(kv[0])):  # /api/generate first
        if path.endswith(suffix):
            return name
    return None


@attrs.frozen
class LLMRequest:
    """One request the fake received."""

    method: str
    url: str
    path: str
    headers: dict[str, str]
    body: bytes
    protocol: str | None

    @property
    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None

    @property
    def stream(self) -> bool:
        data = self.json
        return self.path.endswith("/generate_stream") or (isinstance(data, dict) and bool(data.get("stream")))

    @property
    def messages(self) -> list[dict[str, Any]]:
        data = self.json
        return list(data.get("messages") or []) if isinstance(data, dict) else []

    @property
    def system(self) -> str | None:
        """The system prompt, wherever the protocol puts it."""
        data = self.json if isinstance(self.json, dict) else {}
        if data.get("system"):
            return str(data["system"])
        for m in self.messages:
            if m.get("role") == "system":
                return str(m.get("content"))
        return None

    @property
    def prompt(self) -> str | None:
        """The user's text: the last user message, else ``prompt``/``inputs``."""
        for m in reversed(self.messages):
            if m.get("role") == "user":
                content = m.get("content")
                if isinstance(content, list):
                    return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
                return str(content)
        data = self.json if isinstance(self.json, dict) else {}
        for key in ("prompt", "inputs"):
            if isinstance(data.get(key), str):
                return data[key]
        return None


class _Body(httpx.AsyncByteStream):
    """A response body sent piece by piece, with pauses, possibly cut."""

    def __init__(
        self, parts: list[bytes], gap_s: float, read_s: float | None, drop_after: int | None
    ) -> None:
        self.parts = parts
        self.gap_s = gap_s
        self.read_s = read_s
        self.drop_after = drop_after

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, part in enumerate(self.parts):
            if self.drop_after is not None and i >= self.drop_after:
                raise httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body"
                )
            if i and self.gap_s:
                await _pause(self.gap_s, self.read_s)
            yield part
        if self.drop_after is not None and self.drop_after >= len(self.parts):
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


async def _pause(delay_s: float, read_s: float | None) -> None:
    """Wait *delay_s*, or fail as the client would after its read timeout."""
    if read_s is not None and delay_s > read_s:
        await anyio.sleep(read_s)  # allowed: the client's read timeout running out
        raise httpx.ReadTimeout(f"no data within the read timeout ({read_s:g}s)")
    await anyio.sleep(delay_s)  # allowed: the scripted latency


def _sse(events: Iterable[Any], *, done: bool) -> list[bytes]:
    out = []
    for ev in events:
        if isinstance(ev, tuple):
            out.append(f"event: {ev[0]}\ndata: {orjson.dumps(ev[1]).decode()}\n\n".encode())
        else:
            out.append(b"data: " + orjson.dumps(ev) + b"\n\n")
    if done:
        out.append(b"data: [DONE]\n\n")
    return out


class FakeLLM(httpx.AsyncBaseTransport):
    """A scripted LLM server behind an httpx transport: ``Neuron(..., transport=FakeLLM(...))``."""

    def __init__(
        self,
        *script: Step,
        default: Step | None = "ok",
        respond: Callable[[LLMRequest], Step] | None = None,
        model: str = "fake-model",
    ) -> None:
        self.script: list[Step] = list(script)
        self.default = default
        self.respond = respond
        self.model = model
        #: Every request received, in order.
        self.requests: list[LLMRequest] = []
        self._ids = itertools.count(1)

    def add(self, *steps: Step) -> FakeLLM:
        """Append steps to the script; returns the fake (chainable)."""
        self.script.extend(steps)
        return self

    @property
    def last(self) -> LLMRequest:
        if not self.requests:
            raise AssertionError("the FakeLLM received no request")
        return self.requests[-1]

    def _next(self, req: LLMRequest) -> Step:
        if self.respond is not None:
            return self.respond(req)
        if self.script:
            return self.script.pop(0)
        if self.default is None:
            raise AssertionError(
                f"the FakeLLM's script is used up; unexpected request {req.method} {req.url}"
            )
        return self.default

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        path = request.url.path
        req = LLMRequest(
            request.method,
            str(request.url),
            path,
            {k.lower(): v for k, v in request.headers.items()},
            body,
            _protocol(path),
        )
        self.requests.append(req)
        step = self._next(req)
        timeouts = request.extensions.get("timeout") or {}
        read_s = timeouts.get("read")
        if isinstance(step, str):
            step = LLMReply(step)
        if isinstance(step, LLMTimeout):
            await anyio.sleep(step.after_s)  # allowed: the scripted wait before the timeout
            if step.connect:
                raise httpx.ConnectTimeout("fake connect timeout", request=request)
            raise httpx.ReadTimeout("fake read timeout", request=request)
        if isinstance(step, LLMRaw):
            return httpx.Response(
                step.status,
                headers={"content-type": "application/json", **step.headers},
                content=orjson.dumps(step.body),
            )
        if isinstance(step, LLMError):
            await _pause(step.delay_s, read_s)
            headers = {"content-type": "application/json"}
            if step.retry_after is not None:
                headers["retry-after"] = str(step.retry_after)
            error = {"error": {"message": step.message, "type": "fake", "code": step.status}}
            return httpx.Response(step.status, headers=headers, content=orjson.dumps(error))
        await _pause(step.delay_s, read_s)
        if req.protocol is None:
            error = {"error": f"FakeLLM has no protocol at {path}; script an LLMRaw step for it"}
            return httpx.Response(
                404, headers={"content-type": "application/json"}, content=orjson.dumps(error)
            )
        data = req.json if isinstance(req.json, dict) else {}
        model = str(data.get("model") or self.model)
        if not req.stream:
            return httpx.Response(
                200,
                headers={"content-type": "application/json"},
                content=orjson.dumps(self._whole(req, step, model)),
            )
        parts, ctype = self._stream(req, step, model)
        return httpx.Response(
            200,
            headers={"content-type": ctype},
            stream=_Body(parts, step.chunk_delay_s, read_s, step.drop_after),
        )

    # -- answers, per protocol ----------------------------------------------------------------------
    def _call_id(self, call: LLMToolCall, prefix: str) -> str:
        return call.id or f"{prefix}_{next(self._ids)}"

    def _whole(self, req: LLMRequest, step: LLMReply, model: str) -> Any:
        proto, text = req.protocol, step.text
        if proto == "openai-chat":
            message: dict[str, Any] = {
                "role": "assistant",
                "content": text if text or not step.tool_calls else None,
            }
            if step.tool_calls:
                message["tool_calls"] = [
                    {
                        "id": self._call_id(c, "call"),
                        "type": "function",
                        "function": {"name": c.name, "arguments": orjson.dumps(c.arguments).decode()},
                    }
                    for c in step.tool_calls
                ]
            choice = {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if step.tool_calls else step.finish_reason,
            }
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "model": model,
                "choices": [choice],
                "usage": step.usage,
            }
        if proto == "openai-completions":
            choice = {"index": 0, "text": text, "finish_reason": step.finish_reason}
            return {
                "id": "cmpl-fake",
                "object": "text_completion",
                "model": model,
                "choices": [choice],
                "usage": step.usage,
            }
        if proto == "tgi":
            return [{"generated_text": text}]
        if proto == "anthropic":
            content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
            content += [
                {"type": "tool_use", "id": self._call_id(c, "toolu"), "name": c.name, "input": c.arguments}
                for c in step.tool_calls
            ]
            stop = "tool_use" if step.tool_calls else "end_turn"
            return {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop,
            }
        if proto == "ollama-generate":
            return {"model": model, "response": text, "done": True}
        message = {"role": "assistant", "content": text}
        if step.tool_calls:
            message["tool_calls"] = [
                {"function": {"name": c.name, "arguments": c.arguments}} for c in step.tool_calls
            ]
        return {"model": model, "message": message, "done": True}

    def _stream(self, req: LLMRequest, step: LLMReply, model: str) -> tuple[list[bytes], str]:
        proto, pieces = req.protocol, step.pieces()
        if proto == "openai-chat":

            def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
                return {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }

            events = [chunk({"role": "assistant"})] + [chunk({"content": p}) for p in pieces]
            for i, c in enumerate(step.tool_calls):
                args = orjson.dumps(c.arguments).decode()
                half = len(args) // 2
                head = {
                    "index": i,
                    "id": self._call_id(c, "call"),
                    "type": "function",
                    "function": {"name": c.name, "arguments": args[:half]},
                }
                events.append(chunk({"tool_calls": [head]}))
                events.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": args[half:]}}]}))
            events.append(chunk({}, "tool_calls" if step.tool_calls else step.finish_reason))
            return _sse(events, done=True), "text/event-stream"
        if proto == "openai-completions":
            events = [
                {"id": "cmpl-fake", "choices": [{"index": 0, "text": p, "finish_reason": None}]}
                for p in pieces
            ]
            events.append(
                {
                    "id": "cmpl-fake",
                    "choices": [{"index": 0, "text": "", "finish_reason": step.finish_reason}],
                }
            )
            return _sse(events, done=True), "text/event-stream"
        if proto == "tgi":
            events = [
                {
                    "token": {"id": i, "text": p, "special": False},
                    "generated_text": step.text if i == len(pieces) - 1 else None,
                }
                for i, p in enumerate(pieces)
            ] or [{"token": {"id": 0, "text": "", "special": True}, "generated_text": step.text}]
            return _sse(events, done=False), "text/event-stream"
        if proto == "anthropic":

            def ev(kind: str, **data: Any) -> tuple[str, dict[str, Any]]:
                return (kind, {"type": kind, **data})

            msg = {"id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": []}
            events: list[Any] = [
                ev("message_start", message=msg),
                ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
            ]
            events += [
                ev("content_block_delta", index=0, delta={"type": "text_delta", "text": p}) for p in pieces
            ]
            events.append(ev("content_block_stop", index=0))
            for i, c in enumerate(step.tool_calls, start=1):
                block = {"type": "tool_use", "id": self._call_id(c, "toolu"), "name": c.name, "input": {}}
                args = orjson.dumps(c.arguments).decode()
                events.append(ev("content_block_start", index=i, content_block=block))
                events.append(
                    ev(
                        "content_block_delta",
                        index=i,
                        delta={"type": "input_json_delta", "partial_json": args},
                    )
                )
                events.append(ev("content_block_stop", index=i))
            stop = "tool_use" if step.tool_calls else "end_turn"
            events.append(
                ev("message_delta", delta={"stop_reason": stop}, usage={"output_tokens": len(pieces)})
            )
            events.append(ev("message_stop"))
            return _sse(events, done=False), "text/event-stream"
        chat = proto == "ollama-chat"

        def line(text: str, done: bool, **extra: Any) -> bytes:
            body: dict[str, Any] = {"model": model, "done": done, **extra}
            if chat:
                body["message"] = {"role": "assistant", "content": text}
            else:
                body["response"] = text
            return orjson.dumps(body) + b"\n"

        lines = [line(p, False) for p in pieces]
        if chat and step.tool_calls:
            calls = [{"function": {"name": c.name, "arguments": c.arguments}} for c in step.tool_calls]
            lines.append(
                orjson.dumps(
                    {
                        "model": model,
                        "done": False,
                        "message": {"role": "assistant", "content": "", "tool_calls": calls},
                    }
                )
                + b"\n"
            )
        lines.append(line("", True, eval_count=len(pieces)))
        return lines, "application/x-ndjson"
