"""FakeLLM against every HTTP Neuron source: replies, streams with timing, tool calls, errors, records."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from cosmonapse import NeuronContext, Signal, SignalType
from cosmonapse.neuron import (
    Neuron,
    NeuronConnectionError,
    NeuronHTTPError,
    NeuronStreamError,
    NeuronTimeout,
)
from cosmonapse.testing import FakeLLM, LLMError, LLMRaw, LLMReply, LLMTimeout, LLMToolCall, memory_cluster

pytestmark = pytest.mark.anyio
T = SignalType
FAST = {"backoff": 0.001, "max_backoff": 0.002}

#: (name, Neuron options, input, protocol the fake must see, can stream)
SOURCES: list[tuple[str, dict[str, Any], dict[str, Any], str, bool]] = [
    ("hf-chat", {"source": "huggingface", "endpoint": "http://llm", "use_chat_api": True},
     {"prompt": "hi"}, "openai-chat", True),
    ("hf-completions", {"source": "hf", "endpoint": "http://llm", "use_completions_api": True},
     {"prompt": "hi"}, "openai-completions", True),
    ("hf-tgi", {"source": "huggingface", "endpoint": "http://llm"}, {"prompt": "hi"}, "tgi", True),
    ("openai", {"source": "openai", "model": "m", "api_key": "sk-test-key"},
     {"prompt": "hi"}, "openai-chat", True),
    ("groq", {"source": "groq", "api_key": "k-groq"}, {"prompt": "hi"}, "openai-chat", True),
    ("openrouter", {"source": "openrouter", "api_key": "k-or"}, {"prompt": "hi"}, "openai-chat", True),
    ("together", {"source": "together", "api_key": "k-tg"}, {"prompt": "hi"}, "openai-chat", True),
    ("mistral", {"source": "mistral", "api_key": "k-mi"}, {"prompt": "hi"}, "openai-chat", True),
    ("anthropic", {"source": "anthropic", "model": "claude", "api_key": "k-ant"},
     {"prompt": "hi"}, "anthropic", True),
    ("ollama-generate", {"source": "ollama", "model": "llama3"}, {"prompt": "hi"}, "ollama-generate", True),
    ("ollama-chat", {"source": "ollama", "model": "llama3"},
     {"messages": [{"role": "user", "content": "hi"}]}, "ollama-chat", True),
]  # fmt: skip


class Ctx:
    """A NeuronContext that keeps what the Neuron publishes."""

    def __init__(self) -> None:
        self.signals: list[Signal] = []
        self.context = NeuronContext(Signal(type=T.TASK, payload={"input": {}}), "llm", publish=self._keep)

    async def _keep(self, sig: Signal) -> None:
        self.signals.append(sig)

    def deltas(self) -> list[str]:
        return [s.payload["delta"] for s in self.signals if s.type is T.THOUGHT_DELTA]


def build(options: dict[str, Any], fake: FakeLLM, **extra: Any) -> Any:
    opts = dict(options)
    return Neuron(opts.pop("source"), transport=fake, **opts, **FAST, **extra)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(
    ("name", "options", "input", "protocol", "can_stream"), SOURCES, ids=[s[0] for s in SOURCES]
)
async def test_every_http_llm_source_gets_the_scripted_reply(
    name: str, options: dict[str, Any], input: dict[str, Any], protocol: str, can_stream: bool, stream: bool
) -> None:
    fake = FakeLLM(LLMReply("Hello from the fake", chunks=["Hello", " from", " the fake"]))
    ctx = Ctx()
    async with build(options, fake, stream=stream) as neuron:
        with anyio.fail_after(5):
            out = await neuron(input, ctx.context)
    assert out["response"] == "Hello from the fake"
    req = fake.last
    assert req.protocol == protocol and req.method == "POST"
    assert req.prompt == "hi"
    assert req.stream is stream
    if stream:
        assert ctx.deltas() == ["Hello", " from", " the fake"], "each streamed piece becomes a THOUGHT_DELTA"
    if "api_key" in options:
        key = options["api_key"]
        assert key in req.headers.get("authorization", "") or req.headers.get("x-api-key") == key


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(
    ("options", "input"),
    [
        ({"source": "openai", "model": "m", "api_key": "k"}, {"prompt": "weather?"}),
        ({"source": "anthropic", "model": "c", "api_key": "k"}, {"prompt": "weather?"}),
        ({"source": "ollama", "model": "l"}, {"messages": [{"role": "user", "content": "weather?"}]}),
    ],
    ids=["openai", "anthropic", "ollama"],
)
async def test_tool_calls_reach_the_neurons_tools(
    options: dict[str, Any], input: dict[str, Any], stream: bool
) -> None:
    called: list[dict[str, Any]] = []

    async def weather(**args: Any) -> dict[str, Any]:
        called.append(args)
        return {"temp": 21}

    fake = FakeLLM(LLMReply(tool_calls=[LLMToolCall("weather", {"city": "Oslo"}, id="call_7")]))
    ctx = Ctx()
    schema = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    async with build(options, fake, stream=stream, tools={"weather": weather}, tool_schemas=schema) as neuron:
        with anyio.fail_after(5):
            out = await neuron(input, ctx.context)
    assert called == [{"city": "Oslo"}]
    assert out["tool_calls"][0]["tool"] == "weather"
    assert {s.type for s in ctx.signals} >= {T.TOOL_CALL, T.TOOL_RESULT}
    assert fake.last.json["tools"], "the tool schemas were sent"


async def test_rate_limit_then_success_is_retried_and_recorded() -> None:
    fake = FakeLLM(LLMError(429, retry_after=0), LLMError(503), "third time lucky")
    async with Neuron("openai", model="m", api_key="k", transport=fake, **FAST) as neuron:
        out = await neuron({"prompt": "hi"}, [])
    assert out["response"] == "third time lucky"
    assert len(fake.requests) == 3


async def test_server_errors_exhaust_the_attempts() -> None:
    fake = FakeLLM(default=LLMError(500, "boom"))
    async with Neuron("anthropic", model="c", api_key="k", transport=fake, max_attempts=2, **FAST) as neuron:
        with pytest.raises(NeuronHTTPError, match="500"):
            await neuron({"prompt": "hi"}, [])
    assert len(fake.requests) == 2


async def test_timeouts_as_the_client_feels_them() -> None:
    fake = FakeLLM(LLMTimeout(), LLMReply("late", delay_s=1.0), LLMTimeout(connect=True))
    async with Neuron("ollama", model="l", transport=fake, timeout=0.05, max_attempts=1) as neuron:
        with pytest.raises(NeuronTimeout, match="read timeout"):
            await neuron({"prompt": "a"}, [])
        with anyio.fail_after(2), pytest.raises(NeuronTimeout):  # waits the client's 0.05 s, not 1 s
            await neuron({"prompt": "b"}, [])
        with pytest.raises(NeuronTimeout, match="connect"):
            await neuron({"prompt": "c"}, [])


async def test_streamed_timing_and_a_stall_mid_stream() -> None:
    fake = FakeLLM(
        LLMReply("a b c", chunk_delay_s=0.01),
        LLMReply("a b c", chunk_delay_s=0.5),
        LLMReply("a b c", drop_after=2),
    )
    ctx = Ctx()
    async with Neuron("openai", model="m", api_key="k", transport=fake, stream=True, timeout=0.1) as neuron:
        start = anyio.current_time()
        assert (await neuron({"prompt": "x"}, ctx.context))["response"] == "a b c"
        assert anyio.current_time() - start >= 0.02, "the chosen gaps between pieces were kept"
        with pytest.raises(NeuronTimeout):
            await neuron({"prompt": "x"}, ctx.context)
        with pytest.raises(NeuronStreamError, match="dropped"):
            await neuron({"prompt": "x"}, ctx.context)


async def test_records_prompts_system_and_headers() -> None:
    fake = FakeLLM()
    async with Neuron("anthropic", model="c", api_key="sk-ant-1234", system="Be brief.", transport=fake) as n:
        await n({"messages": [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]}, [])
    req = fake.last
    assert req.system and req.system.startswith("Be brief.")
    assert req.prompt == "two"
    assert req.headers["x-api-key"] == "sk-ant-1234"
    assert req.json["model"] == "c"


async def test_the_http_source_and_respond_callbacks() -> None:
    fake = FakeLLM(respond=lambda req: LLMRaw({"you_sent": req.json}, status=201))
    async with Neuron("http", url="http://svc/hook", transport=fake) as neuron:
        out = await neuron({"a": 1}, [])
    assert out["status"] == 201 and out["json"] == {"you_sent": {"a": 1}}
    assert fake.last.path == "/hook" and fake.last.protocol is None


async def test_an_unscripted_path_or_an_exhausted_script_is_a_clear_error() -> None:
    async with Neuron("http", url="http://svc/x", transport=FakeLLM("text")) as neuron:
        out = await neuron({"a": 1}, [])
    assert out["status"] == 404 and "no protocol at /x" in out["response"]
    async with Neuron("openai", model="m", api_key="k", transport=FakeLLM("one", default=None)) as neuron:
        await neuron({"prompt": "1"}, [])
        with pytest.raises((AssertionError, NeuronConnectionError)):
            await neuron({"prompt": "2"}, [])


async def test_an_llm_worker_end_to_end_with_thought_deltas_before_the_reply() -> None:
    fake = FakeLLM(LLMReply("one two three", chunk_delay_s=0.001))
    neuron = Neuron("huggingface", endpoint="http://llm", use_chat_api=True, stream=True, transport=fake)
    async with memory_cluster(workers={"llm": neuron}) as c:
        seen: list[Signal] = []
        pw = await c.orchestrator.dispatch(neuron="llm", input={"prompt": "count"})
        with anyio.fail_after(5):
            async for sig in pw:
                seen.append(sig)
                if sig.type is T.AGENT_OUTPUT:
                    break
        await pw.close()
    assert [s.type for s in seen] == [T.THOUGHT_DELTA] * 3 + [T.AGENT_OUTPUT]
    assert seen[-1].payload["output"]["response"] == "one two three"
    assert fake.last.prompt == "count"
