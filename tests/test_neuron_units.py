"""Pure parts of the Neuron sources: prompts, intents, stream parsers, options, the demo helper."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from cosmonapse import NeuronContext, Signal, SignalType
from cosmonapse.neuron import (
    Neuron,
    NeuronConfigError,
    NeuronInputError,
    apply_intents,
    default_demo_neuron,
    find_intent,
    read_input,
    render_followup,
)
from cosmonapse.neuron.base import join_url
from cosmonapse.neuron.httpclient import parse_retry_after
from cosmonapse.neuron.streaming import SseEvent, iter_ndjson, iter_sse
from cosmonapse.neuron.tools import Emitter, ToolCall


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


# -- prompts -----------------------------------------------------------------------------------------


def test_prompt_keys_in_order_and_messages() -> None:
    assert read_input({"text": "b", "prompt": "a"}).text == "a"
    assert read_input({"prompt": "", "query": "q"}).text == "q"
    assert read_input({"content": {"k": 1}}).text == '{"k":1}'
    msgs = [{"role": "user", "content": "hi"}]
    p = read_input({"messages": msgs}, system="sys")
    assert p.text is None and p.chat_messages() == [{"role": "system", "content": "sys"}, *msgs]
    assert read_input({"prompt": "x", "tools": [{"a": 1}]}).tools == [{"a": 1}]
    assert read_input({"prompt": "x", "tools": []}).tools is None


def test_no_prompt_is_an_input_error_naming_the_keys() -> None:
    with pytest.raises(NeuronInputError, match=r"input keys: other"):
        read_input({"other": 1})
    with pytest.raises(NeuronInputError, match="messages must be a list"):
        read_input({"messages": ["hi"]})


def test_follow_ups_render_question_answer_and_verdict() -> None:
    clar = render_followup({"clarification": {"question": "Which city?", "answer": "Oslo", "note": "n"}})
    assert clar is not None
    assert "Which city?" in clar and "Oslo" in clar and '"note":"n"' in clar
    granted = render_followup(
        {"permission": {"action": "send mail", "granted": True, "reason": "ok'd", "ttl_ms": 5000}}
    )
    assert granted is not None
    assert "send mail" in granted and "GRANTED" in granted and "ok'd" in granted and "5000 ms" in granted
    assert "Proceed" in granted
    denied = render_followup({"permission": {"action": "rm -rf", "granted": False}})
    assert denied is not None and "DENIED" in denied and "Do not perform" in denied
    assert read_input({"permission": {"action": "a", "granted": False}}).text == render_followup(
        {"permission": {"action": "a", "granted": False}}
    )
    assert render_followup({"x": 1}) is None


# -- intents -----------------------------------------------------------------------------------------


def test_intents_whole_text_or_fenced_block() -> None:
    assert find_intent('  {"cosmo": "clarification", "question": "Why?"} ') == {
        "cosmo": "clarification",
        "question": "Why?",
    }
    fenced = 'Sure.\n```json\n{"cosmo": "permission", "action": "deploy"}\n```\n'
    assert find_intent(fenced) == {"cosmo": "permission", "action": "deploy"}
    assert find_intent('{"cosmo": 3}') is None
    assert find_intent("plain text") is None


def test_apply_intents_maps_to_axon_markers() -> None:
    clar = apply_intents({"response": '{"cosmo":"clarification","question":"Q?"}', "meta": {}})
    assert clar == {"__clarification__": True, "question": "Q?"}
    perm = apply_intents({"response": '{"cosmo":"permission","action":"A","reason":"R"}'})
    assert perm == {"__permission__": True, "action": "A", "reason": "R"}
    err = apply_intents({"response": '{"cosmo":"error","message":"M"}'})
    assert err == {"__error__": True, "code": "NEURON_ERROR", "message": "M", "recoverable": False}
    assert apply_intents({"response": '{"cosmo":"output","output":7}'}) == {"value": 7}
    plain = {"response": "hello", "meta": {}}
    assert apply_intents(plain) is plain


# -- stream parsers ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_sse_parser_multiline_comments_events_and_unterminated_tail() -> None:
    lines = _lines(
        ": keep-alive",
        "event: delta",
        "data: a",
        "data: b",
        "id: 7",
        "",
        "data:no-space",
        "",
        "",
        "data: never dispatched",
    )
    async with aclosing(iter_sse(lines)) as events:
        got = [e async for e in events]
    assert got == [SseEvent("a\nb", "delta", "7"), SseEvent("no-space", "message", "7")]


@pytest.mark.anyio
async def test_ndjson_parser_skips_blank_lines_and_names_a_bad_one() -> None:
    async with aclosing(iter_ndjson(_lines('{"a":1}', "", '{"b":2}'))) as items:
        assert [i async for i in items] == [{"a": 1}, {"b": 2}]
    with pytest.raises(ValueError, match="not JSON: 'oops'"):
        async with aclosing(iter_ndjson(_lines("oops"))) as items:
            [i async for i in items]


# -- options, endpoints, credentials -----------------------------------------------------------------


def test_join_url_does_not_double_v1_or_the_path() -> None:
    assert join_url("https://router.huggingface.co", "/v1/chat/completions") == (
        "https://router.huggingface.co/v1/chat/completions"
    )
    assert (
        join_url("https://api.openai.com/v1/", "/v1/chat/completions")
        == "https://api.openai.com/v1/chat/completions"
    )
    assert join_url("http://h/v1/chat/completions", "/v1/chat/completions") == "http://h/v1/chat/completions"


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (parse_retry_after(later) or 0) <= 31


def test_unknown_source_and_unknown_option_are_config_errors() -> None:
    with pytest.raises(NeuronConfigError, match="unknown Neuron source 'gpt'"):
        Neuron("gpt")
    with pytest.raises(NeuronConfigError, match=r"does not take 'max_new_token'; it takes: .*max_new_tokens"):
        Neuron("huggingface", max_new_token=5)
    with pytest.raises(NeuronConfigError, match="needs model="):
        Neuron("ollama")


def test_keys_come_from_argument_or_env_and_are_required_for_hosted_apis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("OPENAI_API_KEY", "GROQ_API_KEY", "ANTHROPIC_API_KEY", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(NeuronConfigError, match="set OPENAI_API_KEY"):
        Neuron("openai", model="gpt-4o-mini")
    with pytest.raises(NeuronConfigError, match="set ANTHROPIC_API_KEY"):
        Neuron("anthropic", model="claude")
    monkeypatch.setenv("GROQ_API_KEY", "gsk_env_key")
    groq = Neuron("groq", model="llama")
    assert groq.endpoint == "https://api.groq.com/openai"  # type: ignore[attr-defined]
    assert groq.http.has_credential  # type: ignore[attr-defined]
    # HF_TOKEN goes to Hugging Face hosts only, never to an arbitrary endpoint
    monkeypatch.setenv("HF_TOKEN", "hf_env_token")
    assert Neuron("hf").http.has_credential  # type: ignore[attr-defined]
    assert Neuron("hf").endpoint == "https://router.huggingface.co"  # type: ignore[attr-defined]
    assert Neuron("hf").use_chat_api is True  # type: ignore[attr-defined]
    local = Neuron("hf", endpoint="http://127.0.0.1:8080")
    assert not local.http.has_credential  # type: ignore[attr-defined]
    assert local.use_chat_api is False  # type: ignore[attr-defined]


def test_default_demo_neuron_from_env() -> None:
    assert default_demo_neuron({}) is None
    hf = default_demo_neuron({"HF_TOKEN": "hf_x1234"})
    assert hf is not None and hf.endpoint == "https://router.huggingface.co"  # type: ignore[attr-defined]
    local = default_demo_neuron(
        {
            "HF_TOKEN": "hf_x1234",
            "COSMONAPSE_LLM_BASE_URL": "http://127.0.0.1:9/v1",
            "COSMONAPSE_LLM_MODEL": "tiny",
        }
    )
    assert local is not None
    assert local.endpoint == "http://127.0.0.1:9/v1" and local.model == "tiny"  # type: ignore[attr-defined]
    assert not local.http.has_credential  # type: ignore[attr-defined]


# -- the docs' snippets ------------------------------------------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "neurons"
_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _blocks(page: str) -> list[str]:
    return _BLOCK.findall((DOCS / page).read_text())


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_every_docs_snippet_compiles(page: str) -> None:
    blocks = _blocks(page)
    assert blocks, f"{page} has no python snippet"
    for block in blocks:
        compile(block, page, "exec")


def test_the_flask_docs_snippet_runs_offline() -> None:
    code = _blocks("http.md")[0]
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "200 {'summary': 'A long text to shorten.'}"


@pytest.mark.anyio
async def test_emitter_is_silent_for_contexts_that_cannot_emit() -> None:
    unattached = NeuronContext(Signal(type=SignalType.TASK, payload={"input": {}}), "n")
    for context in ([], unattached):
        emitter = Emitter(context)
        await emitter.delta("text")
        await emitter.tool_call(ToolCall("t", {}))
        assert not emitter.enabled
