"""The shared shape of Neuron sources, and the request/stream loop of the HTTP LLM sources.

Every source is an object with ``async __call__(input, context) -> dict``
(the Neuron contract), ``async aclose()`` (the hosting Dendrite calls it on
stop) and ``async with`` support.  HTTP LLM sources differ only in how they
build one HTTP exchange and read its answer; :class:`LLMNeuron` runs the
rest: the request, streaming into THOUGHT_DELTA Signals, tool calls, the
``{"response", "meta"}`` output.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any, Literal, Protocol, cast

import attrs
import orjson

from ..telemetry import llm_call
from .errors import NeuronResponseError, NeuronStreamError
from .httpclient import HttpClient
from .intents import TEACH_INTENTS, apply_intents
from .prompt import Prompt, read_input
from .secrets import Secrets
from .streaming import iter_ndjson, iter_sse
from .tools import Emitter, ToolCall, ToolExecutor, run_tool_calls

__all__ = [
    "Exchange",
    "LLMNeuron",
    "NeuronSource",
    "Reply",
    "ShapeError",
    "StreamState",
    "join_url",
    "scrubbed",
]


class ShapeError(ValueError):
    """The provider's answer lacks what its protocol promises (message says what)."""


def join_url(endpoint: str, path: str) -> str:
    """``endpoint`` + ``path`` without doubling ``/v1`` or a path the endpoint already ends with."""
    base = endpoint.rstrip("/")
    if base.endswith(path):
        return base
    if base.endswith("/v1") and path.startswith("/v1/"):
        path = path[3:]
    return base + path


class NeuronSource:
    """Base of every source: the Neuron contract plus a life cycle."""

    source: str = "?"

    async def __call__(self, input: dict[str, Any], context: Any) -> dict[str, Any]:
        raise NotImplementedError

    def scrub_secrets(self, value: Any) -> Any:
        """*value* without this Neuron's credentials (the Axon applies it to replies and errors)."""
        return value

    async def aclose(self) -> None:
        """Release what the Neuron holds; calling it again, or using the Neuron after, is fine."""

    async def __aenter__(self) -> NeuronSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<Neuron source={self.source!r}>"


async def scrubbed(secrets: Secrets, answer: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Await *answer*; its output, or the error it raises, without *secrets*."""
    try:
        output = await answer
    except Exception as exc:
        clean = secrets.scrub_error(exc)
        if clean is exc:
            raise
        raise clean from None
    return secrets.scrub(output)


@attrs.define
class Reply:
    """What the provider answered, provider-neutral."""

    text: str
    raw: Any
    tool_calls: list[ToolCall] = attrs.Factory(list)
    #: Pieces of text the answer was streamed in (0: not streamed).
    chunks: int = 0


class StreamState(Protocol):
    """Folds a provider's stream items into text deltas and, at the end, one :class:`Reply`."""

    finished: bool

    def feed(self, item: Any) -> str:
        """Take one decoded item; return the new text (may be empty)."""
        ...

    def reply(self) -> Reply: ...


@attrs.frozen
class Exchange:
    """One HTTP exchange: where, what, and how to read the answer."""

    url: str
    body: dict[str, Any]
    decode: Callable[[Any], Reply]
    stream: Literal["sse", "ndjson"] | None = None
    state: Callable[[], StreamState] | None = None
    sse_events: bool = False  # feed ``(event, data)`` pairs instead of bare data (Anthropic)


class LLMNeuron(NeuronSource):
    """An HTTP LLM source: builds an :class:`Exchange` per TASK and runs it."""

    def __init__(
        self,
        source: str,
        http: HttpClient,
        *,
        stream: bool = False,
        system: str | None = None,
        tools: Mapping[str, ToolExecutor] | None = None,
        tool_schemas: list[Any] | None = None,
        apply_intents: bool = False,
        teach_intents: bool = False,
    ) -> None:
        self.source = source
        self.http = http
        self.stream = stream
        self.system = system
        self.tools: dict[str, ToolExecutor] = dict(tools or {})
        self.tool_schemas: list[Any] | None = list(tool_schemas) if tool_schemas else None
        self.apply_intents = apply_intents
        self.teach_intents = teach_intents

    def build(self, prompt: Prompt, stream: bool) -> Exchange:
        raise NotImplementedError

    def read(self, input: dict[str, Any]) -> Prompt:
        prompt = read_input(input, system=self.system)
        system = prompt.system
        if self.teach_intents:
            system = f"{system}\n\n{TEACH_INTENTS}" if system else TEACH_INTENTS
        tools = prompt.tools or self.tool_schemas
        return attrs.evolve(prompt, system=system, tools=tools)

    async def __call__(self, input: dict[str, Any], context: Any) -> dict[str, Any]:
        """One TASK; the output, the deltas it streams and any error it raises carry no credential."""
        return await scrubbed(self.http.secrets, self._answer(input, context))

    async def _answer(self, input: dict[str, Any], context: Any) -> dict[str, Any]:
        prompt = self.read(input)
        stream = bool(input.get("stream", self.stream))
        exchange = self.build(prompt, stream)
        emitter = Emitter(context, self.http.secrets)
        streamed = exchange.stream is not None and exchange.state is not None
        operation = "chat" if "messages" in exchange.body else "text_completion"
        model = exchange.body.get("model") or getattr(self, "model", None)
        # OpenTelemetry: a GenAI CLIENT span (no-op when off); its context goes in the request headers.
        with llm_call(self.source, operation, model, exchange.url, streamed) as call:
            if streamed:
                reply = await self._run_stream(exchange, emitter, call.headers())
            else:
                raw = await self.http.post_json(exchange.url, exchange.body, headers=call.headers())
                reply = self._decode(exchange, raw)
            call.note(raw=reply.raw, chunks=reply.chunks if streamed else None)
        output: dict[str, Any] = {"response": reply.text, "meta": reply.raw}
        if reply.tool_calls:
            output["tool_calls"] = await run_tool_calls(reply.tool_calls, emitter, self.tools)
        return apply_intents(output) if self.apply_intents else output

    def scrub_secrets(self, value: Any) -> Any:
        return self.http.secrets.scrub(value)

    async def aclose(self) -> None:
        await self.http.aclose()

    def __repr__(self) -> str:
        return f"<Neuron source={self.source!r} stream={self.stream}>"

    # -- reading answers ---------------------------------------------------------------------------

    def _shape_error(self, url: str, problem: str, raw: Any) -> NeuronResponseError:
        try:
            excerpt = orjson.dumps(raw).decode()
        except TypeError:
            excerpt = repr(raw)
        excerpt = self.http.redact(excerpt)  # before cutting: a cut must not leave half a key
        if len(excerpt) > 300:
            excerpt = excerpt[:300] + "…"
        got = f"; got {excerpt}" if raw is not None else ""
        problem = self.http.redact(problem)
        return NeuronResponseError(f"{self.source} at {self.http.safe_url(url)}: {problem}{got}")

    def _decode(self, exchange: Exchange, raw: Any) -> Reply:
        try:
            return exchange.decode(raw)
        except (ShapeError, KeyError, IndexError, TypeError, AttributeError) as exc:
            problem = (
                str(exc) if isinstance(exc, ShapeError) else "the answer does not have the expected shape"
            )
            raise self._shape_error(exchange.url, problem, raw) from None

    def _items(self, exchange: Exchange, lines: AsyncIterable[str]) -> AsyncGenerator[Any, None]:
        return iter_sse(lines) if exchange.stream == "sse" else iter_ndjson(lines)

    async def _run_stream(
        self, exchange: Exchange, emitter: Emitter, headers: dict[str, str] | None = None
    ) -> Reply:
        assert exchange.state is not None
        state = exchange.state()
        pieces = 0
        url = exchange.url
        async with self.http.open("POST", url, json=exchange.body, headers=headers) as resp:
            ctype = resp.headers.get("content-type", "")
            if "application/json" in ctype and exchange.stream == "sse":
                # The server ignored "stream": answer as one piece.
                with self.http.reading(url):
                    content = await resp.aread()
                reply = self._decode(exchange, self.http.decode_json(url, resp, content))
                await emitter.delta(reply.text)
                await emitter.finish()
                reply.chunks = 1
                return reply
            try:
                with self.http.reading(url, what="the stream"):
                    # aclosing: leaving early (an error) closes our generators here and now.
                    async with (
                        # httpx types it an AsyncIterator; it is an async generator (it has aclose)
                        aclosing(cast(AsyncGenerator[str, None], resp.aiter_lines())) as lines,
                        aclosing(self._items(exchange, lines)) as items,
                    ):
                        async for item in items:
                            if exchange.stream == "sse":
                                if item.data.strip() == "[DONE]":
                                    # Read on to the end of the body rather than break: httpx's own
                                    # nested generators then finish here, not in the garbage collector.
                                    state.finished = True
                                    continue
                                data = orjson.loads(item.data)
                                item = (item.event, data) if exchange.sse_events else data
                            delta = state.feed(item)
                            if delta:
                                pieces += 1
                                await emitter.delta(delta)
            except NeuronStreamError as exc:
                raise NeuronStreamError(f"{exc} (after {pieces} piece(s) of text)") from None
            except ShapeError as exc:
                raise self._shape_error(url, str(exc), None) from None
            except (orjson.JSONDecodeError, ValueError) as exc:
                where = self.http.safe_url(url)
                raise NeuronResponseError(
                    f"{self.source} at {where}: malformed stream data: {self.http.redact(str(exc))}"
                ) from None
        await emitter.finish()
        if not state.finished:
            raise NeuronStreamError(
                f"{self.source}: the stream from {self.http.safe_url(url)} ended before its end marker "
                f"after {pieces} piece(s) of text (connection dropped?)"
            )
        reply = state.reply()
        reply.chunks = pieces
        return reply
