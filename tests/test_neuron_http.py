"""LLM Neuron sources against real loopback servers speaking each provider's protocol."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from llm_servers import FakeLLM, Reply, Request, serve

from cosmonapse import NeuronContext, Signal, SignalType
from cosmonapse.neuron import (
    Neuron,
    NeuronAuthError,
    NeuronConnectionError,
    NeuronHTTPError,
    NeuronResponseError,
    NeuronStreamError,
    NeuronTimeout,
)

pytestmark = pytest.mark.anyio

FAST = {"backoff": 0.01, "max_backoff": 0.02}


class Recorder:
    """A NeuronContext whose Signals are kept in a list."""

    def __init__(self) -> None:
        self.signals: list[Signal] = []
        task = Signal(type=SignalType.TASK, payload={"input": {}})
        self.context = NeuronContext(task, "llm", publish=self._publish)

    async def _publish(self, sig: Signal) -> None:
        self.signals.append(sig)

    def of(self, stype: SignalType) -> list[dict[str, Any]]:
        return [s.payload for s in self.signals if s.type == stype]

    def deltas(self) -> list[str]:
        return [p["delta"] for p in self.of(SignalType.THOUGHT_DELTA)]


# -- the happy paths, one per protocol ---------------------------------------------------------------


async def test_hf_chat_sends_the_seed_request_and_reuses_one_pooled_connection() -> None:
    async with serve(FakeLLM("Hello, Cosmonapse!")) as srv:
        neuron = Neuron(
            "huggingface",
            endpoint=srv.url,
            model="meta-llama/Llama-3.1-8B-Instruct",
            api_key="hf_test_key_123",
            use_chat_api=True,
            max_new_tokens=128,
            temperature=0.7,
        )
        async with neuron:
            with anyio.fail_after(10):
                out = await neuron({"prompt": "Say hello"}, [])
                again = await neuron({"messages": [{"role": "user", "content": "hi"}]}, [])
        assert out["response"] == "Hello, Cosmonapse!"
        assert out["meta"]["choices"][0]["message"]["content"] == "Hello, Cosmonapse!"
        assert again["response"] == "Hello, Cosmonapse!"
        first = srv.requests[0]
        assert first.path == "/v1/chat/completions"
        assert first.headers["authorization"] == "Bearer hf_test_key_123"
        assert first.json() == {
            "messages": [{"role": "user", "content": "Say hello"}],
            "max_tokens": 128,
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "temperature": 0.7,
        }
        assert srv.requests[1].json()["messages"] == [{"role": "user", "content": "hi"}]
        assert srv.connections == 1, "both calls should share the Neuron's pooled connection"


async def test_chat_streaming_emits_thought_deltas_and_returns_the_full_text() -> None:
    rec = Recorder()
    async with serve(FakeLLM("one two three four")) as srv:
        neuron = Neuron("openai", endpoint=srv.url + "/v1", model="gpt-x", api_key="sk-test-abc", stream=True)
        async with neuron:
            with anyio.fail_after(10):
                out = await neuron({"prompt": "count"}, rec.context)
    assert rec.deltas() == ["one", " two", " three", " four"]
    assert [p["seq"] for p in rec.of(SignalType.THOUGHT_DELTA)] == [0, 1, 2, 3]
    assert out["response"] == "one two three four"
    assert out["meta"]["streamed"] is True
    assert srv.requests[0].path == "/v1/chat/completions"
    body = srv.requests[0].json()
    assert body["stream"] is True and body["model"] == "gpt-x"
    # openai teaches the intent convention in a system message (opt-out teach_intents=False)
    assert body["messages"][0]["role"] == "system" and "cosmo" in body["messages"][0]["content"]


async def test_streaming_with_a_plain_list_context_still_returns_the_text() -> None:
    async with (
        serve(FakeLLM("quiet stream")) as srv,
        Neuron("hf", endpoint=srv.url, use_chat_api=True, stream=True) as neuron,
    ):
        with anyio.fail_after(10):
            out = await neuron({"prompt": "x"}, [])
    assert out["response"] == "quiet stream"


async def test_completions_api_plain_and_streamed() -> None:
    rec = Recorder()
    async with (
        serve(FakeLLM("complete me")) as srv,
        Neuron("hf", endpoint=srv.url, use_completions_api=True, stop=["\n"]) as neuron,
    ):
        with anyio.fail_after(10):
            plain = await neuron({"text": "Once"}, [])
            streamed = await neuron({"text": "Once", "stream": True}, rec.context)
    assert plain["response"] == streamed["response"] == "complete me"
    assert rec.deltas() == ["complete", " me"]
    assert srv.requests[0].path == "/v1/completions"
    assert srv.requests[0].json() == {"prompt": "Once", "max_tokens": 512, "stop": ["\n"]}


async def test_tgi_generate_and_generate_stream() -> None:
    rec = Recorder()
    async with (
        serve(FakeLLM("tgi says hi")) as srv,
        Neuron("huggingface", endpoint=srv.url, max_new_tokens=20) as neuron,
    ):
        with anyio.fail_after(10):
            plain = await neuron({"query": "hello"}, [])
            streamed = await neuron({"query": "hello", "stream": True}, rec.context)
    assert plain["response"] == "tgi says hi"
    assert plain["meta"] == [{"generated_text": "tgi says hi"}]
    assert streamed["response"] == "tgi says hi"
    assert rec.deltas() == ["tgi", " says", " hi"], "special tokens are not streamed"
    assert [r.path for r in srv.requests] == ["/generate", "/generate_stream"]
    assert srv.requests[0].json() == {"inputs": "hello", "parameters": {"max_new_tokens": 20}}


async def test_anthropic_messages_headers_system_and_stream() -> None:
    rec = Recorder()
    async with serve(FakeLLM("claude here")) as srv:
        neuron = Neuron(
            "anthropic", endpoint=srv.url, model="claude-x", api_key="sk-ant-secret", system="Be brief."
        )
        async with neuron:
            with anyio.fail_after(10):
                plain = await neuron(
                    {
                        "messages": [
                            {"role": "system", "content": "Be terse."},
                            {"role": "user", "content": "hi"},
                        ]
                    },
                    [],
                )
                streamed = await neuron({"prompt": "hi", "stream": True}, rec.context)
    assert plain["response"] == streamed["response"] == "claude here"
    assert rec.deltas() == ["claude", " here"]
    req = srv.requests[0]
    assert req.path == "/v1/messages"
    assert req.headers["x-api-key"] == "sk-ant-secret"
    assert req.headers["anthropic-version"] == "2023-06-01"
    body = req.json()
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["system"].startswith("Be terse."), "the last system entry becomes the top-level system"
    assert body["max_tokens"] == 1024


async def test_ollama_generate_and_chat_stream_ndjson() -> None:
    rec = Recorder()
    async with serve(FakeLLM("llama speaks")) as srv:
        neuron = Neuron("ollama", endpoint=srv.url, model="llama3", temperature=0.1, teach_intents=False)
        async with neuron:
            with anyio.fail_after(10):
                gen = await neuron({"prompt": "hi"}, [])
                chat = await neuron(
                    {"messages": [{"role": "user", "content": "hi"}], "stream": True}, rec.context
                )
                gen_stream = await neuron({"prompt": "hi", "stream": True}, rec.context)
    assert gen["response"] == chat["response"] == gen_stream["response"] == "llama speaks"
    assert rec.deltas() == ["llama", " speaks", "llama", " speaks"]
    assert [r.path for r in srv.requests] == ["/api/generate", "/api/chat", "/api/generate"]
    assert srv.requests[0].json() == {
        "model": "llama3",
        "stream": False,
        "prompt": "hi",
        "options": {"temperature": 0.1},
    }
    assert chat["meta"]["done"] is True and chat["meta"]["message"]["content"] == "llama speaks"


async def test_clarification_follow_up_is_rendered_as_the_prompt() -> None:
    async with (
        serve(FakeLLM("ok")) as srv,
        Neuron("ollama", endpoint=srv.url, model="m", teach_intents=False) as neuron,
    ):
        with anyio.fail_after(10):
            await neuron({"clarification": {"question": "Which city?", "answer": "Paris"}}, [])
    prompt = srv.requests[0].json()["prompt"]
    assert "Which city?" in prompt and "Paris" in prompt


# -- tool calls --------------------------------------------------------------------------------------

TOOL_SCHEMA = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_tool_calls_are_published_and_executed(stream: bool) -> None:
    rec = Recorder()
    calls: list[dict[str, Any]] = []

    async def add(a: int, b: int) -> int:
        calls.append({"a": a, "b": b})
        return a + b

    llm = FakeLLM(tool_call={"name": "add", "arguments": {"a": 2, "b": 3}, "id": "call_9"})
    async with serve(llm) as srv, Neuron("hf", endpoint=srv.url, stream=stream, tools={"add": add}) as neuron:
        with anyio.fail_after(10):
            out = await neuron({"prompt": "2+3?", "tools": TOOL_SCHEMA}, rec.context)
    assert srv.requests[0].json()["tools"] == TOOL_SCHEMA
    assert calls == [{"a": 2, "b": 3}]
    assert out["tool_calls"] == [{"tool": "add", "args": {"a": 2, "b": 3}, "call_id": "call_9", "result": 5}]
    assert rec.of(SignalType.TOOL_CALL) == [
        {"tool": "add", "tool_name": "add", "args": {"a": 2, "b": 3}, "call_id": "call_9"}
    ]
    assert rec.of(SignalType.TOOL_RESULT) == [
        {"tool": "add", "tool_name": "add", "result": 5, "call_id": "call_9"}
    ]


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_tool_use_without_executor_is_reported(stream: bool) -> None:
    rec = Recorder()
    llm = FakeLLM(
        "Let me look.", tool_call={"name": "weather", "arguments": {"city": "Oslo"}, "id": "toolu_7"}
    )
    async with serve(llm) as srv:
        neuron = Neuron("anthropic", endpoint=srv.url, model="c", api_key="k-123456", stream=stream)
        async with neuron:
            with anyio.fail_after(10):
                out = await neuron({"prompt": "weather in Oslo?"}, rec.context)
    assert out["response"] == "Let me look."
    assert out["tool_calls"] == [{"tool": "weather", "args": {"city": "Oslo"}, "call_id": "toolu_7"}]
    assert rec.of(SignalType.TOOL_CALL) == [
        {"tool": "weather", "tool_name": "weather", "args": {"city": "Oslo"}, "call_id": "toolu_7"}
    ]
    assert rec.of(SignalType.TOOL_RESULT) == []


async def test_ollama_tool_call_executor_error_becomes_tool_result_error() -> None:
    rec = Recorder()

    def lookup(key: str) -> str:
        raise KeyError(key)

    llm = FakeLLM(tool_call={"name": "lookup", "arguments": {"key": "x"}})
    async with serve(llm) as srv:
        neuron = Neuron("ollama", endpoint=srv.url, model="m", tools={"lookup": lookup}, stream=True)
        async with neuron:
            with anyio.fail_after(10):
                out = await neuron({"messages": [{"role": "user", "content": "find x"}]}, rec.context)
    assert out["tool_calls"][0]["error"] == "KeyError: 'x'"
    assert rec.of(SignalType.TOOL_RESULT) == [
        {"tool": "lookup", "tool_name": "lookup", "error": "KeyError: 'x'"}
    ]


# -- error paths -------------------------------------------------------------------------------------


async def test_500_then_success_is_retried() -> None:
    llm = FakeLLM("recovered")
    seen = 0

    async def flaky(req: Request) -> Reply:
        nonlocal seen
        seen += 1
        if seen == 1:
            return Reply.json({"error": "overloaded"}, status=500)
        return await llm(req)

    async with serve(flaky) as srv, Neuron("hf", endpoint=srv.url, use_chat_api=True, **FAST) as neuron:
        with anyio.fail_after(10):
            out = await neuron({"prompt": "x"}, [])
    assert out["response"] == "recovered"
    assert len(srv.requests) == 2


async def test_persistent_500_gives_up_after_max_attempts_with_the_status() -> None:
    async def broken(req: Request) -> Reply:
        return Reply.json({"error": "down"}, status=503)

    async with (
        serve(broken) as srv,
        Neuron("hf", endpoint=srv.url, use_chat_api=True, max_attempts=3, **FAST) as neuron,
    ):
        with anyio.fail_after(10), pytest.raises(NeuronHTTPError) as info:
            await neuron({"prompt": "x"}, [])
    assert len(srv.requests) == 3
    assert info.value.status == 503
    assert "HTTP 503" in str(info.value) and "after 3 attempt(s)" in str(info.value)


async def test_429_honours_retry_after() -> None:
    llm = FakeLLM("finally")
    seen = 0

    async def limited(req: Request) -> Reply:
        nonlocal seen
        seen += 1
        if seen == 1:
            return Reply.json({"error": "slow down"}, status=429, headers={"retry-after": "0.3"})
        return await llm(req)

    # backoff would be ~0.01 s: the 0.3 s wait can only come from Retry-After
    async with serve(limited) as srv, Neuron("hf", endpoint=srv.url, use_chat_api=True, **FAST) as neuron:
        started = anyio.current_time()
        with anyio.fail_after(10):
            out = await neuron({"prompt": "x"}, [])
        waited = anyio.current_time() - started
    assert out["response"] == "finally"
    assert len(srv.requests) == 2
    assert waited >= 0.3


async def test_429_with_retry_after_beyond_the_limit_fails_at_once() -> None:
    async def limited(req: Request) -> Reply:
        return Reply.json({"error": "quota"}, status=429, headers={"retry-after": "3600"})

    async with (
        serve(limited) as srv,
        Neuron("hf", endpoint=srv.url, use_chat_api=True, max_retry_after=5, **FAST) as neuron,
    ):
        with anyio.fail_after(10), pytest.raises(NeuronHTTPError, match="max_retry_after=5 s"):
            await neuron({"prompt": "x"}, [])
    assert len(srv.requests) == 1


async def test_read_timeout_names_the_endpoint_and_the_limit() -> None:
    async def hang(req: Request) -> Reply:
        return Reply(hang=True)

    async with serve(hang) as srv, Neuron("ollama", endpoint=srv.url, model="m", timeout=0.3) as neuron:
        with anyio.fail_after(10), pytest.raises(NeuronTimeout) as info:
            await neuron({"prompt": "x"}, [])
    text = str(info.value)
    assert "ollama" in text and f"{srv.url}/api/generate" in text and "timeout=0.3 s" in text
    assert len(srv.requests) == 1, "a read timeout is not retried"


async def test_malformed_json_is_a_clear_error() -> None:
    async def garbage(req: Request) -> Reply:
        return Reply(200, b"{not json", {"content-type": "application/json"})

    async with serve(garbage) as srv, Neuron("hf", endpoint=srv.url, use_chat_api=True) as neuron:
        with anyio.fail_after(10), pytest.raises(NeuronResponseError, match="not JSON") as info:
            await neuron({"prompt": "x"}, [])
    assert "{not json" in str(info.value)


async def test_json_of_the_wrong_shape_says_what_is_missing() -> None:
    async def odd(req: Request) -> Reply:
        return Reply.json({"choices": []})

    async with serve(odd) as srv, Neuron("hf", endpoint=srv.url, use_chat_api=True) as neuron:
        with anyio.fail_after(10), pytest.raises(NeuronResponseError, match=r"no choices\[0\]"):
            await neuron({"prompt": "x"}, [])


@pytest.mark.parametrize("source", ["hf", "ollama"])
async def test_connection_dropped_mid_stream(source: str) -> None:
    rec = Recorder()

    async def dropper(req: Request) -> Reply:
        if source == "hf":
            events = [{"choices": [{"index": 0, "delta": {"content": w}}]} for w in ("a", "b", "c")]
            return Reply.sse(events, drop_after=2)
        return Reply.ndjson([{"response": w, "done": False} for w in ("a", "b", "c")], drop_after=2)

    async with serve(dropper) as srv:
        extra = {"use_chat_api": True} if source == "hf" else {"model": "m"}
        async with Neuron(source, endpoint=srv.url, stream=True, **extra) as neuron:
            with anyio.fail_after(10), pytest.raises(NeuronStreamError) as info:
                await neuron({"prompt": "x"}, rec.context)
    assert rec.deltas() == ["a", "b"], "what arrived before the drop was streamed"
    assert "after 2 piece(s) of text" in str(info.value)


async def test_stream_that_ends_without_its_end_marker_is_an_error() -> None:
    async def cut(req: Request) -> Reply:
        return Reply.sse([{"choices": [{"index": 0, "delta": {"content": "half"}}]}], done=False)

    async with serve(cut) as srv, Neuron("hf", endpoint=srv.url, use_chat_api=True, stream=True) as neuron:
        with anyio.fail_after(10), pytest.raises(NeuronStreamError, match="ended before its end marker"):
            await neuron({"prompt": "x"}, [])


async def test_wrong_key_401_names_the_credential_and_never_shows_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "hf_SuperSecretValue_9876543210"

    async def reject(req: Request) -> Reply:
        # a careless server echoing the credential back must not leak it either
        return Reply.json({"error": f"invalid token {req.headers.get('authorization')}"}, status=401)

    caplog.set_level(logging.DEBUG)
    async with serve(reject) as srv:
        neuron = Neuron("huggingface", endpoint=srv.url, api_key=secret, use_chat_api=True, **FAST)
        async with neuron:
            with anyio.fail_after(10), pytest.raises(NeuronAuthError) as info:
                await neuron({"prompt": "x"}, [])
    text = str(info.value)
    assert "huggingface rejected the API key (HTTP 401): check HF_TOKEN" in text
    assert secret not in text and secret[:12] not in text
    assert "***" in text
    assert secret not in repr(neuron) and secret not in repr(neuron.http)
    assert all(secret not in r.getMessage() for r in caplog.records)
    assert len(srv.requests) == 1, "401 is not retried"


async def test_missing_key_401_says_how_to_give_one() -> None:
    async def reject(req: Request) -> Reply:
        return Reply.json({"error": "unauthorized"}, status=401)

    async with serve(reject) as srv, Neuron("openai", endpoint=srv.url, model="m") as neuron:
        with (
            anyio.fail_after(10),
            pytest.raises(NeuronAuthError, match="none was given: set OPENAI_API_KEY"),
        ):
            await neuron({"prompt": "x"}, [])


async def test_unreachable_endpoint_is_retried_then_reported() -> None:
    async with serve(FakeLLM()) as srv:
        url = srv.url
    # the server is gone: the port refuses connections
    async with Neuron("ollama", endpoint=url, model="m", max_attempts=2, **FAST) as neuron:
        with anyio.fail_after(10), pytest.raises(NeuronConnectionError) as info:
            await neuron({"prompt": "x"}, [])
    assert "after 2 attempt(s)" in str(info.value) and "ollama serve" in str(info.value)
