"""What a user's editor sees: type-checked by ``test_types.py`` (pyright, standard mode), never run.

It imports every public name, builds a Neuron, decorates handlers, and calls
every public member of ``SyncDendrite``; ``assert_type`` pins the types a
user's tools must infer (a wrong or unknown type is a pyright error).
"""

from __future__ import annotations

from typing import Any, Literal, assert_type, reveal_type

from cosmonapse import (
    AXON_TYPES,
    ORCHESTRATION_TYPES,
    PATHWAY_TYPES,
    SYNAPSE_TYPES,
    TERMINAL_SCOPE_TYPES,
    TERMINAL_TYPES,
    WAIT_TYPES,
    Axon,
    BiddingTimeout,
    ContextFetcher,
    CosmonapseError,
    DecisionTimeout,
    Dendrite,
    DendriteProtocolError,
    DendriteStats,
    DevSynapse,
    Directed,
    DispatchTimeout,
    Engram,
    EngramCancelled,
    EngramError,
    EngramNotBound,
    EngramOverloaded,
    EngramTimeout,
    HandlerSpec,
    Hit,
    ImprintReceipt,
    InMemoryEngram,
    LifecycleHooks,
    MemoryRegistryStore,
    MemorySynapse,
    NatsAuthError,
    NatsSynapse,
    NatsTLSError,
    Neuron,
    NeuronContext,
    NeuronFn,
    NeuronRecord,
    OpCancelled,
    Pathway,
    PathwayBusyError,
    PathwayClosedError,
    PathwayTimeout,
    PostgresEngram,
    PostgresRegistryStore,
    RecallResult,
    RegistryStore,
    RetryStrategy,
    Signal,
    SignalDecodeError,
    SignalType,
    SqliteEngram,
    SqliteRegistryStore,
    StopTombstones,
    Subscription,
    Synapse,
    SynapseClosedError,
    SynapseError,
    SynapseFailedError,
    TaskLoad,
    TraceStoppedError,
    agent_output_signal,
    audit_signal,
    bid_signal,
    clarification_answer_signal,
    clarification_signal,
    connect_synapse,
    consensus_signal,
    context_sync_signal,
    converter,
    critique_signal,
    current_task,
    decode_signal,
    default_retry_on,
    deregister_signal,
    directed_to,
    discover_signal,
    encode_signal,
    error_signal,
    escalation_signal,
    final_signal,
    heartbeat_signal,
    imprint_signal,
    imprinted_signal,
    memory_append_signal,
    new_event_id,
    new_trace_id,
    permission_decision_signal,
    permission_signal,
    plan_signal,
    recall_signal,
    recalled_signal,
    register_signal,
    run_with_retry,
    stop_signal,
    stopped_signal,
    task_awarded_signal,
    task_declined_signal,
    task_offer_signal,
    task_signal,
    thought_delta_signal,
    tool_call_signal,
    tool_result_signal,
)
from cosmonapse.neuron import NeuronSource
from cosmonapse_sync import (
    DeadlockError,
    FacadeClosedError,
    Portal,
    PortalTimeout,
    SyncDendrite,
    SyncFacadeError,
    SyncNeuronContext,
    SyncPathway,
    SyncSubscription,
    ThreadedNeuron,
)

T = SignalType

# every imported name is used, so none is dropped by an editor's "organise imports"
_EVERYTHING: tuple[object, ...] = (
    AXON_TYPES, PATHWAY_TYPES, SYNAPSE_TYPES, TERMINAL_SCOPE_TYPES, TERMINAL_TYPES, WAIT_TYPES,
    BiddingTimeout, CosmonapseError, DecisionTimeout, DendriteProtocolError, DevSynapse,
    DispatchTimeout, Engram, EngramCancelled, EngramError, EngramNotBound, EngramOverloaded,
    EngramTimeout, HandlerSpec, Hit, LifecycleHooks, MemoryRegistryStore, NatsSynapse, NeuronFn,
    OpCancelled, PathwayBusyError, PathwayClosedError, PathwayTimeout, RegistryStore,
    SignalDecodeError, SqliteEngram, SqliteRegistryStore, StopTombstones, Subscription,
    SynapseClosedError, SynapseError, TraceStoppedError, connect_synapse, converter, current_task,
    decode_signal, default_retry_on, encode_signal, new_event_id, Dendrite, MemorySynapse, Synapse,
    DeadlockError, FacadeClosedError, Portal, PortalTimeout, SyncFacadeError, SyncSubscription,
    ThreadedNeuron, Pathway, NeuronContext, PostgresEngram, PostgresRegistryStore, SynapseFailedError,
    NatsAuthError, NatsTLSError, ORCHESTRATION_TYPES, ContextFetcher,
)  # fmt: skip


def build_a_neuron() -> NeuronSource:
    neuron = Neuron(source="ollama", model="llama3")
    assert_type(neuron, NeuronSource)
    return neuron


def answer(input: dict[str, Any], context: SyncNeuronContext) -> dict[str, Any]:
    delta = context.emit_thought_delta("thinking")
    assert_type(delta, Signal)
    assert_type(context.trace_id, str)
    assert_type(context.recall(query={"q": 1}, engram_id="mem"), RecallResult)
    return {"response": "hi"}


async def flask_like_app(sig: Signal) -> None:  # never called: only type-checked
    cosmo = SyncDendrite("cosmo://127.0.0.1:7070", namespace="api", dendrite_id="web")

    # -- decorators keep the decorated function's type (a lost type would make these Any) ----
    @cosmo.on_final
    def on_final(sig: Signal) -> None: ...

    reveal_type(on_final)  # expect: (sig: Signal) -> None
    assert_type(on_final(sig), None)

    @cosmo.on_agent_output(neuron="worker")
    async def on_output(sig: Signal) -> int:
        return 1

    reveal_type(on_output)  # expect: (sig: Signal) -> CoroutineType[Any, Any, int]
    assert_type(await on_output(sig), int)

    def raw(sig: Signal) -> str:
        return sig.id

    assert_type(cosmo.on_signal(T.PLAN, raw)(sig), str)
    assert_type(cosmo.on_signal(T.PLAN, neuron="x")(raw)(sig), str)
    assert_type(cosmo.on_trace("trc_1", T.FINAL)(raw)(sig), str)
    for decorate in (
        cosmo.on_task_signal, cosmo.on_error_signal, cosmo.on_task_offer, cosmo.on_bid,
        cosmo.on_task_awarded, cosmo.on_task_declined, cosmo.on_audit, cosmo.on_plan,
        cosmo.on_thought_delta, cosmo.on_tool_call, cosmo.on_tool_result, cosmo.on_memory_append,
        cosmo.on_critique, cosmo.on_escalation, cosmo.on_consensus, cosmo.on_context_sync,
        cosmo.on_clarification, cosmo.on_permission, cosmo.on_clarification_answer,
        cosmo.on_permission_decision, cosmo.on_recall_signal, cosmo.on_imprint_signal,
        cosmo.on_recalled, cosmo.on_imprinted, cosmo.on_register_signal, cosmo.on_deregister_signal,
        cosmo.on_heartbeat_signal, cosmo.on_discover, cosmo.on_stop, cosmo.on_stopped,
        cosmo.on_error, cosmo.on_register, cosmo.on_deregister, cosmo.on_heartbeat,
    ):  # fmt: skip
        assert_type(decorate(raw)(sig), str)
        assert_type(decorate(capability="chat")(raw)(sig), str)

    @cosmo.on_connect
    def hello() -> None: ...

    @cosmo.on_refresh
    async def refreshed() -> None: ...

    @cosmo.on_schedule(every_s=5)
    def tick() -> float:
        return 1.0

    assert_type(hello(), None)
    assert_type(await refreshed(), None)
    assert_type(tick(), float)

    # -- hosting ----------------------------------------------------------------------
    axon = Axon(neuron_id="worker", neuron_fn=answer, capabilities=["chat"])
    cosmo.attach_axon(axon)
    cosmo.add_axon(Axon(neuron_id="llm", neuron_fn=build_a_neuron()))
    cosmo.detach_axon("llm", reason="done")
    engram = InMemoryEngram("mem")
    cosmo.attach_engram(engram)
    cosmo.detach_engram("mem")
    assert_type(cosmo.axons, dict[str, Axon])
    assert_type(cosmo.engrams, dict[str, Engram])
    assert_type(cosmo.capabilities, list[str])
    assert_type(cosmo.task_load, TaskLoad)
    assert_type(cosmo.task_load.saturated, bool)

    # -- life cycle and info ------------------------------------------------------------
    cosmo.start()
    assert_type(cosmo.running, bool)
    assert_type(cosmo.closed, bool)
    assert_type(cosmo.role, str)
    assert_type(cosmo.namespace, str)
    assert_type(cosmo.dendrite_id, str)
    assert_type(cosmo.backend, str)
    assert_type(cosmo.auto_bid, bool)
    assert_type(cosmo.engram_deadline_ms, int)
    assert_type(cosmo.effective_stale_after_s, float)
    assert_type(cosmo.max_open_pathways, int)
    stats = cosmo.stats
    assert_type(stats, DendriteStats)
    assert_type(
        stats.silenced + stats.duplicate_tasks + stats.evicted_pathways + stats.suppressed_errors, int
    )
    assert_type(cosmo.dendrite, Dendrite | None)
    assert_type(cosmo.portal_thread is None, bool)

    # -- dispatch -------------------------------------------------------------------------
    task = cosmo.dispatch_task(neuron="worker", input={"q": 1})
    assert_type(task, Signal)
    pathway = cosmo.dispatch(neuron="worker", input={"q": 1}, scope="terminal")
    assert_type(pathway, SyncPathway)
    assert_type(pathway.wait(timeout_s=5), Signal)
    assert_type(pathway.wait_for(T.PLAN), Signal)
    assert_type(pathway.trace_id, str)
    assert_type(pathway.task, Signal | None)
    for sig in pathway:
        assert_type(sig, Signal)
    with pathway:
        pathway.stop("enough")
    assert_type(cosmo.dispatch_and_subscribe(input={}, capabilities=["chat"]), SyncPathway)
    reply = cosmo.dispatch_and_wait(neuron="worker", input={"q": 1}, timeout_s=30)
    assert_type(reply, Signal)
    retried = cosmo.run_with_retry(retry=RetryStrategy(max_attempts=2), neuron="worker", input={})
    assert_type(retried, Signal)
    assert_type(cosmo.dispatch_offer(input={}, select="lowest_cost"), SyncPathway)
    assert_type(cosmo.observe_pathway("trc_1"), SyncPathway)
    assert_type(cosmo.open_pathways(), list[SyncPathway])
    assert_type(cosmo.bid(task, neuron="worker", cost=1.0), Signal)

    # -- STOP -----------------------------------------------------------------------------
    assert_type(cosmo.emit_stop(trace_id=task.trace_id, rollback=True), Signal)
    assert_type(cosmo.stop_trace(task.trace_id, collect_acks=True), list[Signal])
    assert_type(cosmo.stop_and_confirm(task.trace_id), Signal | None)
    assert_type(cosmo.is_stopped(task.trace_id), bool)
    assert_type(cosmo.cancel_trace(task.trace_id), int)

    # -- human in the loop ---------------------------------------------------------------
    assert_type(cosmo.await_decision(reply, timeout_s=10), Signal)
    assert_type(cosmo.answer_clarification(reply, answer="yes"), Signal)
    assert_type(cosmo.grant_permission(reply, ttl_ms=100), Signal)
    assert_type(cosmo.deny_permission(reply, reason="no"), Signal)
    assert_type(cosmo.respond_to_clarification(reply, answer="yes"), Signal)
    assert_type(cosmo.respond_to_permission(reply, granted=True), Signal)
    assert_type(cosmo.respond_to_escalation(reply, neuron="boss"), Signal)

    # -- Engram and registry --------------------------------------------------------------
    assert_type(cosmo.recall(engram_id="mem", query={"q": 1}), RecallResult)
    assert_type(cosmo.imprint(engram_id="mem", op="append", entry={}), ImprintReceipt | None)
    assert_type(cosmo.find_neurons(capability="chat"), list[NeuronRecord])
    assert_type(cosmo.registry_snapshot(include_deregistered=True), list[NeuronRecord])
    assert_type(cosmo.sweep_registry(), list[str])

    # -- emitters ------------------------------------------------------------------------
    trace, parent = task.trace_id, task.id
    for emitted in (
        cosmo.emit_final(trace_id=trace, parent_id=parent, result={}),
        cosmo.emit_error(trace_id=trace, parent_id=parent, code="X", message="m"),
        cosmo.emit_plan(trace_id=trace, parent_id=parent, steps=[]),
        cosmo.emit_thought_delta(trace_id=trace, parent_id=parent, delta="d"),
        cosmo.emit_tool_call(trace_id=trace, parent_id=parent, tool="t", args={}),
        cosmo.emit_tool_result(trace_id=trace, parent_id=parent, tool="t"),
        cosmo.emit_memory_append(trace_id=trace, parent_id=parent, key="k", value=1),
        cosmo.emit_critique(trace_id=trace, parent_id=parent, target_event_id="e", issues=[], verdict="ok"),
        cosmo.emit_escalation(trace_id=trace, parent_id=parent, reason="r"),
        cosmo.emit_consensus(trace_id=trace, parent_id=parent, members=[], verdict="v"),
        cosmo.emit_context_sync(trace_id=trace, parent_id=parent, snapshot={}),
        cosmo.discover(capabilities=["chat"]),
    ):
        assert_type(emitted, Signal)
    assert_type(cosmo.emit(Signal(type=T.PLAN, directed=Directed("web"))), None)

    # -- raw subscriptions, calls, shutdown ------------------------------------------------
    sub = cosmo.subscribe(T.CONSENSUS, raw)
    assert_type(sub, SyncSubscription)
    cosmo.unsubscribe(sub)
    assert_type(cosmo.subscribe(T.PLAN, raw).unsubscribe(), None)
    assert_type(cosmo.call(connect_synapse, "memory://"), Any)
    cosmo.stop(reason="bye")
    assert_type(cosmo.close(timeout_s=5), bool)
    with SyncDendrite("memory://") as other:
        assert_type(other, SyncDendrite)


async def async_user(synapse: Synapse) -> None:
    dendrite = Dendrite(synapse=synapse, role="worker", registry_store=MemoryRegistryStore())
    assert_type(dendrite.role, Literal["orchestrator", "worker"])
    assert_type(dendrite.registry_store, RegistryStore | None)

    @dendrite.on_final
    async def handler(sig: Signal) -> bool:
        return True

    reveal_type(handler)  # expect: (sig: Signal) -> CoroutineType[Any, Any, bool]
    reveal_type(Neuron)  # expect: (source: str, **options: Any) -> NeuronSource

    async with dendrite as d:
        assert_type(d, Dendrite)
        pw = await d.dispatch(input={})
        assert_type(pw, Pathway)
        assert_type(await d.dispatch_and_wait(input={}), Signal)
        assert_type(await d.recall(engram_id="mem", query={}), RecallResult)
    async with MemorySynapse() as bus:
        assert_type(bus, MemorySynapse)
    sync_ctx = SyncNeuronContext
    assert_type(sync_ctx, type[SyncNeuronContext])
    assert_type(new_trace_id(), str)
    assert_type(await run_with_retry(d, retry=RetryStrategy(), input={}), Signal)
    await d.ensure_subscribed(T.PLAN, T.FINAL)
    sub = await d.subscribe(T.PLAN, handler)
    await sub.unsubscribe()
    assert_type(pw.parent_id, str | None)
    assert_type(await d.dispatch_task(input={}, open_call=True), Signal)
    found = await d.recall(engram_id="mem", query={})
    if found:
        assert_type(len(found), int)
        assert_type(found[0], Hit)
        for hit in found:
            assert_type(hit, Hit)
    receipt = await d.imprint(engram_id="mem", op="append", entry={}, await_ack=True)
    assert_type(receipt is not None and receipt.ok, bool)


def porting(fetch: ContextFetcher) -> None:
    """The reference's envelope builders (cosmonapse.envelope, re-exported at the top)."""
    trace, parent = new_trace_id(), new_event_id()
    task = task_signal(input={"q": 1}, neuron="worker")
    assert_type(task.reply(T.AGENT_OUTPUT, {"output": {}}), Signal)
    assert_type(Signal.decode(task.encode()), Signal)
    assert_type(task.encode(), bytes)
    made: list[Signal] = [
        agent_output_signal(trace_id=trace, parent_id=parent, neuron="n", output={}),
        audit_signal(trace_id=trace, parent_id=parent, kind="k", domain="d", outcome="o"),
        bid_signal(trace_id=trace, parent_id=parent, neuron="n", cost=1.0),
        clarification_answer_signal(trace_id=trace, parent_id=parent, answer="a"),
        clarification_signal(trace_id=trace, parent_id=parent, question="q"),
        consensus_signal(trace_id=trace, parent_id=parent, members=[], verdict="v"),
        context_sync_signal(trace_id=trace, parent_id=parent, snapshot={}),
        critique_signal(trace_id=trace, parent_id=parent, target_event_id=parent, issues=[], verdict="v"),
        deregister_signal(neuron="n"),
        discover_signal(capabilities=["chat"]),
        error_signal(trace_id=trace, code="E", message="m"),
        escalation_signal(trace_id=trace, parent_id=parent, reason="r"),
        final_signal(trace_id=trace, parent_id=parent, result={}),
        heartbeat_signal(directed=directed_to("n")),
        imprint_signal(trace_id=trace, parent_id=parent, engram_id="mem", op="append", entry={}),
        imprinted_signal(trace_id=trace, parent_id=parent, engram_id="mem", op="append"),
        memory_append_signal(trace_id=trace, parent_id=parent, key="k", value=1),
        permission_decision_signal(trace_id=trace, parent_id=parent, granted=True),
        permission_signal(trace_id=trace, parent_id=parent, action="a"),
        plan_signal(trace_id=trace, parent_id=parent, steps=[]),
        recall_signal(trace_id=trace, parent_id=parent, engram_kind="notes", query={}),
        recalled_signal(trace_id=trace, parent_id=parent, engram_id="mem", hits=[]),
        register_signal(neuron="n", capabilities=["chat"]),
        stop_signal(trace_id=trace, rollback=True),
        stopped_signal(trace_id=trace, parent_id=parent, node="ns"),
        task_awarded_signal(trace_id=trace, parent_id=parent, neuron="n", input={}),
        task_declined_signal(trace_id=trace, parent_id=parent, reason="not selected"),
        task_offer_signal(input={}, capabilities=["chat"]),
        thought_delta_signal(trace_id=trace, parent_id=parent, delta="d"),
        tool_call_signal(trace_id=trace, parent_id=parent, tool="t", args={}),
        tool_result_signal(trace_id=trace, parent_id=parent, tool="t", result=1),
    ]
    assert_type(made, list[Signal])
    assert_type(ORCHESTRATION_TYPES, frozenset[SignalType])
