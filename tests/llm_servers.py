"""Real loopback HTTP servers for the Neuron tests, speaking each provider's protocol.

``serve(handler)`` runs a small HTTP/1.1 server on an anyio TCP listener
inside the caller's task group (so it works on asyncio and trio alike) and
records every request.  Handlers return a :class:`Reply`: a fixed body, a
chunked stream (optionally dropped mid-way, the socket closed without the
final chunk), or ``hang`` (never answer — for timeouts).

:class:`FakeLLM` is one handler answering every protocol the Neuron
sources speak: OpenAI-compatible chat and completions (plain and SSE), TGI
``/generate`` and ``/generate_stream``, Anthropic ``/v1/messages`` (plain and
SSE) and Ollama ``/api/generate`` / ``/api/chat`` (plain and NDJSON).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import attrs
import orjson
from anyio.abc import SocketAttribute, SocketStream, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}


@attrs.define
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


@attrs.define
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = attrs.Factory(dict)
    chunks: list[bytes] | None = None  # a chunked (streamed) body
    drop_after: int | None = None  # close the socket after this many chunks, without the last chunk
    hang: bool = False

    @classmethod
    def json(cls, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, orjson.dumps(obj), {"content-type": "application/json", **(headers or {})})

    @classmethod
    def sse(cls, events: list[Any], *, done: bool = True, drop_after: int | None = None) -> Reply:
        chunks = []
        for ev in events:
            if isinstance(ev, tuple):  # (event name, data)
                chunks.append(f"event: {ev[0]}\ndata: {orjson.dumps(ev[1]).decode()}\n\n".encode())
            else:
                chunks.append(b"data: " + orjson.dumps(ev) + b"\n\n")
        if done:
            chunks.append(b"data: [DONE]\n\n")
        return cls(200, headers={"content-type": "text/event-stream"}, chunks=chunks, drop_after=drop_after)

    @classmethod
    def ndjson(cls, objs: list[Any], *, drop_after: int | None = None) -> Reply:
        chunks = [orjson.dumps(o) + b"\n" for o in objs]
        return cls(
            200, headers={"content-type": "application/x-ndjson"}, chunks=chunks, drop_after=drop_after
        )


Handler = Callable[[Request], Awaitable[Reply]]


class LocalServer:
    """One listening socket on 127.0.0.1 and the requests it has seen."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.connections = 0
        self.connection_tasks: set[int] = set()  # ids of the tasks serving connections
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.listeners[0].extra(SocketAttribute.local_port)
        async with listener:
            task_status.started()
            await listener.serve(self._connection)

    async def _connection(self, stream: SocketStream) -> None:
        self.connections += 1
        self.connection_tasks.add(anyio.get_current_task().id)
        async with stream:
            reader = BufferedByteReceiveStream(stream)
            try:
                while True:
                    request = await _read_request(reader)
                    if request is None:
                        return
                    self.requests.append(request)
                    reply = await self.handler(request)
                    if not await _write_reply(stream, reply):
                        return
            except (
                anyio.EndOfStream,
                anyio.IncompleteRead,
                anyio.BrokenResourceError,
                anyio.ClosedResourceError,
            ):
                return


async def _read_request(reader: BufferedByteReceiveStream) -> Request | None:
    try:
        head = await reader.receive_until(b"\r\n\r\n", 65536)
    except (anyio.IncompleteRead, anyio.EndOfStream):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.receive_exactly(length) if length else b""
    parts = urlsplit(target)
    return Request(method, parts.path, dict(parse_qsl(parts.query)), headers, body)


async def _write_reply(stream: SocketStream, reply: Reply) -> bool:
    """Send *reply*; return False when the connection must be closed."""
    if reply.hang:
        await anyio.sleep_forever()
    status = f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}\r\n"
    headers = dict(reply.headers)
    if reply.chunks is None:
        headers["content-length"] = str(len(reply.body))
    else:
        headers["transfer-encoding"] = "chunked"
    head = status + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    if reply.chunks is None:
        await stream.send(head.encode("latin-1") + reply.body)
        return True
    await stream.send(head.encode("latin-1"))
    for i, chunk in enumerate(reply.chunks):
        if reply.drop_after is not None and i >= reply.drop_after:
            return False
        await stream.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    if reply.drop_after is not None:
        return False
    await stream.send(b"0\r\n\r\n")
    return True


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[LocalServer]:
    """Run a server for *handler* for the duration of the block."""
    server = LocalServer(handler)
    async with anyio.create_task_group() as tg:
        await tg.start(server.run)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()


def words(text: str) -> list[str]:
    """Split *text* into stream tokens that join back to it."""
    parts = text.split(" ")
    return [p if i == 0 else " " + p for i, p in enumerate(parts)]


class FakeLLM:
    """A handler speaking every provider protocol; answers ``text`` (or ``tool_calls``)."""

    def __init__(
        self, text: str = "Hello from the fake model", tool_call: dict[str, Any] | None = None
    ) -> None:
        self.text = text
        self.tool_call = tool_call  # {"name": ..., "arguments": {...}, "id": ...}

    async def __call__(self, req: Request) -> Reply:
        body = req.json() or {}
        stream = bool(body.get("stream"))
        route = {
            "/v1/chat/completions": self._chat,
            "/v1/completions": self._completions,
            "/generate": self._tgi,
            "/generate_stream": self._tgi,
            "/v1/messages": self._anthropic,
            "/api/generate": self._ollama_generate,
            "/api/chat": self._ollama_chat,
        }.get(req.path)
        if route is None:
            return Reply.json({"error": f"no route {req.path}"}, status=404)
        return route(req, body, stream)

    def _chat(self, req: Request, body: dict[str, Any], stream: bool) -> Reply:
        tc = self.tool_call
        calls = (
            [
                {
                    "id": tc.get("id", "call_1"),
                    "type": "function",
                    "function": {"name": tc["name"], "arguments": orjson.dumps(tc["arguments"]).decode()},
                }
            ]
            if tc
            else None
        )
        if not stream:
            message: dict[str, Any] = {"role": "assistant", "content": None if calls else self.text}
            if calls:
                message["tool_calls"] = calls
            return Reply.json(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "model": body.get("model", "fake"),
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 5},
                }
            )
        events: list[Any] = [{"id": "c1", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
        if calls:
            args = calls[0]["function"]["arguments"]
            half = len(args) // 2
            first = {
                "index": 0,
                "id": calls[0]["id"],
                "function": {"name": tc["name"], "arguments": args[:half]},
            }
            second = {"index": 0, "function": {"arguments": args[half:]}}
            events.append({"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [first]}}]})
            events.append({"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [second]}}]})
        else:
            for w in words(self.text):
                events.append({"id": "c1", "choices": [{"index": 0, "delta": {"content": w}}]})
        events.append({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        return Reply.sse(events)

    def _completions(self, req: Request, body: dict[str, Any], stream: bool) -> Reply:
        if not stream:
            return Reply.json(
                {"id": "cmpl-1", "choices": [{"index": 0, "text": self.text, "finish_reason": "stop"}]}
            )
        events = [{"id": "x", "choices": [{"index": 0, "text": w}]} for w in words(self.text)]
        events.append({"id": "x", "choices": [{"index": 0, "text": "", "finish_reason": "length"}]})
        return Reply.sse(events)

    def _tgi(self, req: Request, body: dict[str, Any], stream: bool) -> Reply:
        if req.path == "/generate":
            return Reply.json([{"generated_text": self.text}])
        events: list[Any] = [{"token": {"id": 0, "text": "<s>", "special": True}, "generated_text": None}]
        toks = words(self.text)
        for i, w in enumerate(toks):
            last = i == len(toks) - 1
            events.append(
                {
                    "token": {"id": i + 1, "text": w, "special": False},
                    "generated_text": self.text if last else None,
                }
            )
        return Reply.sse(events, done=False)

    def _anthropic(self, req: Request, body: dict[str, Any], stream: bool) -> Reply:
        tc = self.tool_call
        if not stream:
            content: list[Any] = [{"type": "text", "text": self.text}]
            if tc:
                content.append(
                    {
                        "type": "tool_use",
                        "id": tc.get("id", "toolu_1"),
                        "name": tc["name"],
                        "input": tc["arguments"],
                    }
                )
            return Reply.json(
                {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "content": content,
                    "stop_reason": "end_turn",
                }
            )
        events: list[Any] = [
            (
                "message_start",
                {"type": "message_start", "message": {"id": "msg_1", "role": "assistant", "content": []}},
            ),
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
        ]
        for w in words(self.text):
            events.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}},
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        if tc:
            args = orjson.dumps(tc["arguments"]).decode()
            block = {"type": "tool_use", "id": tc.get("id", "toolu_1"), "name": tc["name"], "input": {}}
            events.append(
                ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": block})
            )
            for part in (args[:3], args[3:]):
                delta = {"type": "input_json_delta", "partial_json": part}
                events.append(
                    ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": delta})
                )
            events.append(("content_block_stop", {"type": "content_block_stop", "index": 1}))
        events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}))
        events.append(("message_stop", {"type": "message_stop"}))
        return Reply.sse(events, done=False)

    def _ollama_generate(self, req: Request, body: dict[str, Any], stream: bool) -> Reply:
        if not stream:
            return Reply.json({"model": body.get("model"), "response": self.text, "done": True})
        objs: list[Any] = [
            {"model": body.get("model"), "response": w, "done": False} for w in words(self.text)
        ]
        objs.append({"model": body.get("model"), "response": "", "done": True, "eval_count": len(objs)})
        return Reply.ndjson(objs)

    def _ollama_chat(self, req: Request, body: dict[str, Any], stream: bool) -> Reply:
        tc = self.tool_call
        calls = [{"function": {"name": tc["name"], "arguments": tc["arguments"]}}] if tc else None
        if not stream:
            message: dict[str, Any] = {"role": "assistant", "content": "" if calls else self.text}
            if calls:
                message["tool_calls"] = calls
            return Reply.json({"model": body.get("model"), "message": message, "done": True})
        objs: list[Any] = [
            {"model": body.get("model"), "message": {"role": "assistant", "content": w}, "done": False}
            for w in words(self.text)
        ]
        if calls:
            objs.append({"message": {"role": "assistant", "content": "", "tool_calls": calls}, "done": False})
        objs.append(
            {"model": body.get("model"), "message": {"role": "assistant", "content": ""}, "done": True}
        )
        return Reply.ndjson(objs)
