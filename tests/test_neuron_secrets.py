"""A Neuron's own credentials never leave it (issue 9, item 8).

Servers here echo the key back on purpose — in a long error body (the key
straddling the 300-character cut), in the answer text, in the raw JSON the
source returns as ``meta``, token by token in a stream (the key split across
deltas), in a tool call's arguments, and, for the ``http`` source, in the body
and the headers.  Nothing the Neuron returns, emits, raises or logs may carry
any 8 characters of it.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

import anyio
import orjson
import pytest
from llm_servers import Reply, Request, serve, words

from cosmonapse import Axon, NeuronContext, Signal, SignalType
from cosmonapse.neuron import Neuron
from cosmonapse.neuron.secrets import Secrets

pytestmark = pytest.mark.anyio

KEY = "sk-live-0123456789abcdefghijKLMNOPQRSTUVWXYZ42"  # 45 characters
FAST = {"backoff": 0.01, "max_backoff": 0.02, "max_attempts": 1}


def leaks(text: str) -> list[str]:
    """Every 8-character piece of the key found in *text*."""
    return [KEY[i : i + 8] for i in range(len(KEY) - 7) if KEY[i : i + 8] in text]


class Recorder:
    """A NeuronContext whose Signals are kept."""

    def __init__(self) -> None:
        self.signals: list[Signal] = []
        self.task = Signal(type=SignalType.TASK, payload={"input": {"prompt": "x"}})
        self.context = NeuronContext(self.task, "llm", publish=self._publish)

    async def _publish(self, sig: Signal) -> None:
        self.signals.append(sig)

    def text(self) -> str:
        return b"".join(orjson.dumps(s.payload) for s in self.signals).decode()


def chat(content: str, **extra: Any) -> Reply:
    return Reply.json(
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}], **extra}
    )


async def run_everywhere(neuron: Any, caplog: pytest.LogCaptureFixture, input: dict[str, Any]) -> str:
    """Call the Neuron directly and through an Axon; return everything anyone could see, as text."""
    seen: list[str] = []
    rec = Recorder()
    caplog.set_level(logging.DEBUG)
    try:
        with anyio.fail_after(10):
            seen.append(orjson.dumps(await neuron(input, rec.context)).decode())
    except Exception as exc:
        seen.append("".join(traceback.format_exception(exc)))
    axon = Axon("llm", neuron)
    task = Signal(type=SignalType.TASK, payload={"input": input})
    with anyio.fail_after(10):
        replies = await axon.run(task, NeuronContext(task, "llm", publish=rec._publish))
    seen += [orjson.dumps(r.payload).decode() for r in replies]
    seen.append(rec.text())
    # Our loggers; httpcore's own DEBUG trace prints raw response headers (see docs/neurons).
    seen += [r.getMessage() for r in caplog.records if r.name.startswith("cosmonapse")]
    return "\n".join(seen)


async def test_an_error_body_that_echoes_the_key_across_the_cut(caplog: pytest.LogCaptureFixture) -> None:
    async def odd_shape(req: Request) -> Reply:
        # 2xx but not the promised shape; the key sits right where the 300-char excerpt is cut.
        return Reply.json({"pad": "p" * 270, "echo": req.headers.get("authorization"), "more": "m" * 400})

    async with serve(odd_shape) as srv:
        neuron = Neuron("openai", endpoint=srv.url + "/v1", model="m", api_key=KEY, **FAST)
        async with neuron:
            seen = await run_everywhere(neuron, caplog, {"prompt": "x"})
    assert "NeuronResponseError" in seen and "***" in seen
    assert leaks(seen) == []


@pytest.mark.parametrize("stream", [False, True])
async def test_an_answer_that_echoes_the_key_in_text_meta_and_deltas(
    stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    said = f"Sure! Your key is {KEY} and again {KEY}."

    async def echo(req: Request) -> Reply:
        if not req.json().get("stream"):
            return chat(said, echo={"headers": dict(req.headers), "raw": [KEY]})
        events = []
        for piece in words(said):  # the key arrives split over several deltas
            for i in range(0, len(piece), 7):
                events.append({"choices": [{"index": 0, "delta": {"content": piece[i : i + 7]}}]})
        events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        return Reply.sse(events)

    async with serve(echo) as srv:
        neuron = Neuron("openai", endpoint=srv.url + "/v1", model="m", api_key=KEY, stream=stream, **FAST)
        async with neuron:
            rec = Recorder()
            with anyio.fail_after(10):
                output = await neuron({"prompt": "x"}, rec.context)
            seen = await run_everywhere(neuron, caplog, {"prompt": "x"})
    assert output["response"] == "Sure! Your key is *** and again ***."
    if stream:
        deltas = "".join(s.payload["delta"] for s in rec.signals if s.type is SignalType.THOUGHT_DELTA)
        assert deltas == output["response"]  # nothing lost, only masked
    assert leaks(seen) == []
    assert leaks(orjson.dumps(output).decode()) == []


async def test_a_tool_call_that_carries_the_key(caplog: pytest.LogCaptureFixture) -> None:
    async def tool_answer(req: Request) -> Reply:
        call = {
            "id": "c1",
            "type": "function",
            "function": {"name": "send", "arguments": orjson.dumps({"k": KEY}).decode()},
        }
        return Reply.json(
            {
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]}}
                ]
            }
        )

    async def send(k: str) -> dict[str, str]:
        return {"sent": k}

    async with serve(tool_answer) as srv:
        neuron = Neuron(
            "openai", endpoint=srv.url + "/v1", model="m", api_key=KEY, tools={"send": send}, **FAST
        )
        async with neuron:
            seen = await run_everywhere(neuron, caplog, {"prompt": "x"})
    assert leaks(seen) == []


@pytest.mark.parametrize("status", [200, 500])
async def test_the_http_source_scrubs_an_echoing_endpoint(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    async def echo(req: Request) -> Reply:
        body = {"you_sent": req.headers, "note": f"token={KEY}"}
        return Reply.json(body, status=status, headers={"x-echo": req.headers.get("authorization", "")})

    async with serve(echo) as srv:
        neuron = Neuron("http", url=srv.url, api_key=KEY, **FAST)
        async with neuron:
            seen = await run_everywhere(neuron, caplog, {"q": 1})
    assert leaks(seen) == []
    if status == 200:
        assert '"status":200' in seen and "***" in seen


async def test_the_wsgi_source_scrubs_errors() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError(f"db password is {KEY}")

    neuron = Neuron("wsgi", app=app, api_key=KEY)
    async with neuron:
        with pytest.raises(Exception) as info:
            await neuron({"q": 1}, [])
    assert leaks("".join(traceback.format_exception(info.value))) == []


def test_stream_redactor_holds_back_only_what_could_be_a_key() -> None:
    secrets = Secrets([KEY, None, "abc"])  # None and too-short values are ignored
    stream = secrets.stream()
    out = [
        stream.feed(p) for p in ["hello s", "k-live-0123", "456789abcdefghijKLMNOPQRSTUVWXYZ42 bye", " end"]
    ]
    out.append(stream.flush())
    assert "".join(out) == "hello *** bye end"
    assert out[0] == "hello "  # the "s" might start the key: held
    tail = secrets.stream()
    assert tail.feed("cut at sk-live-0123") == "cut at "
    assert tail.flush() == "***"  # a stream that ends inside the key never shows its start
    assert secrets.scrub({KEY: [KEY, (KEY,)]}) == {"***": ["***", ("***",)]}
