"""Coming from the reference SDK (issue 11, item 6): the names its users write, working here.

Each is thin — a name over our own API — and ``docs/porting.md`` lists them
with what differs.
"""

from __future__ import annotations

import signal
from typing import Any

import anyio
import pytest
from devbus_util import cosmo_start, rest_of

import cosmonapse
import cosmonapse.registry
import cosmonapse.storage
from cosmonapse import (
    Axon,
    ContextFetcher,
    Dendrite,
    Directed,
    Hit,
    ImprintReceipt,
    InMemoryEngram,
    MemorySynapse,
    NeuronContext,
    RecallResult,
    Signal,
    SignalType,
    decode_signal,
    encode_signal,
)
from cosmonapse import envelope as env
from cosmonapse.testing.harness import SignalRecorder, memory_cluster

pytestmark = pytest.mark.anyio
T = SignalType
TRACE, PARENT = "trc_01JZ3M7Q2X8K4N6R9T1V3W5Y6Z", "evt_01JZ3M7Q2X8K4N6R9T1V3W5Y7A"


def test_every_builder_is_in_cosmonapse_envelope_and_at_the_top() -> None:
    builders = [n for n in env.__all__ if n.endswith("_signal") or n == "directed_to"]
    assert len(builders) == 33
    for name in builders:
        assert getattr(cosmonapse, name) is getattr(env, name), name
        assert name in cosmonapse.__all__


def test_builders_write_the_payloads_of_protocol_section_4_leaving_unset_keys_out() -> None:
    at = {"trace_id": TRACE, "parent_id": PARENT}
    assert env.task_signal(input={"q": 1}, neuron="w").payload == {"input": {"q": 1}}
    routed = env.task_signal(input={}, capabilities=["a"], finalize=True, context_ref="ctx")
    assert routed.payload == {"input": {}, "context_ref": "ctx", "capabilities": ["a"], "finalize": True}
    assert routed.directed is None and routed.trace_id.startswith("trc_")
    assert env.agent_output_signal(**at, neuron="n", output="x").payload == {"output": {"value": "x"}}
    assert env.final_signal(**at, result={"r": 1}).payload == {"result": {"r": 1}}
    assert env.error_signal(trace_id=TRACE, code="E", message="m").payload == {
        "code": "E", "message": "m", "recoverable": False
    }  # fmt: skip
    assert env.clarification_signal(**at, question="q").payload == {"question": "q"}
    assert env.permission_signal(**at, action="rm", reason="why").payload == {"action": "rm", "reason": "why"}
    assert env.permission_decision_signal(**at, granted=False).payload == {"granted": False}
    assert env.clarification_answer_signal(**at, answer=42).payload == {"answer": 42}
    assert env.plan_signal(**at, steps=[1]).payload == {"steps": [1]}
    assert env.thought_delta_signal(**at, delta="a", seq=3).payload == {"delta": "a", "seq": 3}
    call = env.tool_call_signal(**at, neuron="n", tool="search", args={"q": 1}, call_id="c1")
    assert call.payload == {"tool": "search", "tool_name": "search", "args": {"q": 1}, "call_id": "c1"}
    result = env.tool_result_signal(**at, tool="search", result={"hits": 0})
    assert result.payload == {"tool": "search", "tool_name": "search", "result": {"hits": 0}}
    assert env.memory_append_signal(**at, key="k", value=1).payload == {"key": "k", "value": 1}
    assert env.escalation_signal(**at, reason="r").payload == {"reason": "r"}
    assert env.consensus_signal(**at, members=["a"], verdict="v").payload == {
        "members": ["a"],
        "verdict": "v",
    }
    assert env.context_sync_signal(**at, snapshot={}, version="2").payload == {"snapshot": {}, "version": "2"}
    assert env.critique_signal(**at, target_event_id=PARENT, issues=[], verdict="ok").payload == {
        "target_event_id": PARENT, "issues": [], "verdict": "ok"
    }  # fmt: skip
    assert env.audit_signal(**at, kind="k", domain="d", outcome="o").payload == {
        "kind": "k", "domain": "d", "outcome": "o", "attempt": 1
    }  # fmt: skip
    offer = env.task_offer_signal(input={}, deadline_ms=250)
    assert offer.payload == {"input": {}, "deadline_ms": 250} and offer.directed is None
    assert env.bid_signal(**at, neuron="n", cost=1).payload == {"cost": 1.0}
    assert env.task_awarded_signal(**at, neuron="n", input={}, finalize=True).payload == {
        "input": {}, "finalize": True
    }  # fmt: skip
    assert env.task_declined_signal(**at, reason="not selected").payload == {"reason": "not selected"}
    assert env.stop_signal(trace_id=TRACE, rollback=True, reason="why").payload == {
        "rollback": True, "reason": "why"
    }  # fmt: skip
    stopped = env.stopped_signal(trace_id=TRACE, parent_id=PARENT, node="ns", cancelled=2, compensated=3)
    assert stopped.payload == {"rolled_back": False, "cancelled": 2, "compensated": 3, "node": "ns"}
    assert env.discover_signal(capabilities=["a"]).payload == {"capabilities": ["a"]}


def test_presence_builders_mint_a_trace_of_their_own_and_name_the_participant() -> None:
    reg = env.register_signal(neuron="agent", capabilities=["nlp"], version="1")
    assert reg.payload == {"role": "neuron", "capabilities": ["nlp"], "version": "1"}
    assert reg.directed == Directed("agent") and reg.trace_id != env.register_signal(neuron="agent").trace_id
    engram = env.register_signal(
        directed=env.directed_to("mem", type="notes", capabilities=["x"]), engram=True
    )
    assert engram.payload == {"role": "engram", "capabilities": ["x"], "engram": True}
    assert env.heartbeat_signal(neuron="agent").payload == {"status": "ok"}
    assert env.deregister_signal(neuron="agent", reason="bye").payload == {"reason": "bye"}
    with pytest.raises(ValueError, match="participant"):
        env.heartbeat_signal()


def test_engram_builders_check_what_the_reference_checks() -> None:
    at = {"trace_id": TRACE, "parent_id": PARENT}
    with pytest.raises(ValueError, match="engram_id"):
        env.recall_signal(**at, query={})
    with pytest.raises(ValueError, match="recall_mode"):
        env.recall_signal(**at, engram_id="e", query={}, recall_mode="bogus")
    with pytest.raises(ValueError, match="op"):
        env.imprint_signal(**at, engram_id="e", op="foo", entry={})
    with pytest.raises(ValueError, match="merge_key"):
        env.imprint_signal(**at, engram_kind="notes", op="merge", entry={})
    recall = env.recall_signal(**at, engram_kind="notes", query={"text": "x"}, deadline_ms=400)
    assert recall.directed == Directed(None, "notes") and recall.payload == {
        "query": {"text": "x"}, "recall_mode": "first", "deadline_ms": 400
    }  # fmt: skip
    recalled = env.recalled_signal(**at, engram_id="e", hits=[{"id": "x", "entry": {}, "score": 1.0}])
    assert recalled.payload == {
        "engram_id": "e",
        "hits": [{"id": "x", "entry": {}, "score": 1.0}],
        "truncated": False,
    }
    assert env.imprinted_signal(**at, engram_id="e", op="add", id="eng_1").payload == {
        "engram_id": "e", "op": "add", "id": "eng_1"
    }  # fmt: skip


def test_signal_encode_decode_reply() -> None:
    task = env.task_signal(input={"q": 1}, neuron="w")
    assert task.encode() == encode_signal(task)
    assert Signal.decode(task.encode()) == task == Signal.decode(task.encode().decode())
    assert decode_signal(task.encode()) == task
    reply = task.reply(T.AGENT_OUTPUT, {"output": {}})
    assert (reply.trace_id, reply.parent_id, reply.directed) == (task.trace_id, task.id, task.directed)
    moved = task.reply(T.AGENT_OUTPUT, directed=Directed("other"), meta={"m": 1})
    assert moved.directed == Directed("other") and moved.meta == {"m": 1} and moved.payload == {}


def test_cosmonapse_storage_is_the_registry_under_the_reference_name() -> None:
    for name in cosmonapse.storage.__all__:
        assert getattr(cosmonapse.storage, name) is getattr(cosmonapse.registry, name)
    assert "ContextFetcher" in cosmonapse.__all__ and ContextFetcher is cosmonapse.axon.ContextFetcher


def test_recall_result_reads_as_its_hits_and_a_receipt_says_ok() -> None:
    empty = RecallResult(hits=[], engram_ids=["e"])
    full = RecallResult(hits=[Hit("a", {"content": 1}), Hit("b", {"content": 2})], engram_ids=["e"])
    assert not empty and len(empty) == 0 and list(empty) == []
    assert full and len(full) == 2 and [h.id for h in full] == ["a", "b"] and full[1].id == "b"
    assert ImprintReceipt("e", "add", "x").ok and not ImprintReceipt("e", "add", error="refused").ok


async def test_if_await_recall_and_receipt_ok_through_a_dendrite() -> None:
    async with MemorySynapse() as syn:
        host = Dendrite(synapse=syn, namespace="port", role="worker", heartbeat_s=0)
        host.attach_engram(InMemoryEngram("mem"))
        orch = Dendrite(synapse=syn, namespace="port", heartbeat_s=0)
        async with host, orch:
            assert not await orch.recall(engram_id="mem", query={"text": "note"})
            receipt = await orch.imprint(
                engram_id="mem", op="append", entry={"content": "a note"}, await_ack=True
            )
            assert receipt is not None and receipt.ok
            found = await orch.recall(engram_id="mem", query={"text": "note"})
            assert found and [hit.entry["content"] for hit in found] == ["a note"]


async def test_a_dendrite_subscription_unsubscribes_itself() -> None:
    async with memory_cluster(workers={}) as c:
        seen = SignalRecorder()
        sub = await c.orchestrator.subscribe(T.CONSENSUS, seen)
        await c.orchestrator.emit_consensus(trace_id=TRACE, parent_id=None, members=[], verdict="a")
        await seen.wait_for(count=1)
        await sub.unsubscribe()
        assert sub not in c.orchestrator._core._raw_subs and not sub.active
        await sub.unsubscribe()  # idempotent


async def test_a_context_fetcher_feeds_the_neuron_its_context() -> None:
    async def fetch(ref: str) -> list[Any]:
        return [f"entry for {ref}"]

    fetcher: ContextFetcher = fetch

    async def reads(input: dict[str, Any], context: NeuronContext) -> dict[str, Any]:
        return {"context": list(context)}

    async with memory_cluster(axons=[Axon("reader", reads, context_fetcher=fetcher)]) as c:
        reply = await c.orchestrator.dispatch_and_wait(neuron="reader", input={}, context_ref="session-1")
    assert reply.payload["output"] == {"context": ["entry for session-1"]}


def test_a_pathway_has_the_reference_parent_id() -> None:
    assert cosmonapse.Pathway("trc_1").parent_id is None


@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_cosmo_synapse_start_quiet_prints_only_the_listening_line() -> None:
    async with cosmo_start("--namespace", "quiet", "--quiet") as (proc, url, out):
        assert url.startswith("cosmo://127.0.0.1:")
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await proc.wait() == 0
        assert "stopped" not in await rest_of(out)  # no status lines, no tail
