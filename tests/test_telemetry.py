"""OpenTelemetry in one process: the switch, spans and their tree, context in meta, metrics, logs.

Each test pins an SDK of its own (``otel_util.sdk``); the cross-process promises
are in ``test_telemetry_processes.py``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from llm_servers import FakeLLM, serve
from otel_util import Span, descends, named, sdk

from cosmonapse import (
    Axon,
    Dendrite,
    DendriteProtocolError,
    InMemoryEngram,
    MemorySynapse,
    RetryStrategy,
    Signal,
    SignalType,
    telemetry,
)
from cosmonapse.neuron import Neuron

pytestmark = pytest.mark.anyio
T = SignalType


async def echo(input: dict[str, Any], context: Any) -> dict[str, Any]:
    return input


@asynccontextmanager
async def pair(*axons: Axon, **worker_kw: Any) -> AsyncIterator[tuple[Dendrite, Dendrite]]:
    async with MemorySynapse() as syn:
        worker = Dendrite(synapse=syn, namespace="otel", role="worker", heartbeat_s=0, **worker_kw)
        for axon in axons or (Axon(neuron_id="echo", neuron_fn=echo),):
            worker.attach_axon(axon)
        orch = Dendrite(synapse=syn, namespace="otel", dendrite_id="orch", heartbeat_s=0)
        async with worker, orch:
            yield orch, worker


def only(spans: list[Span], name: str) -> Span:
    found = named(spans, name)
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


# -- the switch ------------------------------------------------------------------------------------


def run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


DISPATCH_ONCE = """
    import sys, anyio
    from cosmonapse import Axon, Dendrite, DendriteProtocolError, MemorySynapse, telemetry

    async def echo(i, c):
        return i

    async def main():
        async with MemorySynapse() as syn:
            w = Dendrite(synapse=syn, namespace="n", role="worker", heartbeat_s=0)
            w.attach_axon(Axon(neuron_id="echo", neuron_fn=echo))
            o = Dendrite(synapse=syn, namespace="n", heartbeat_s=0)
            async with w, o:
                reply = await o.dispatch_and_wait(neuron="echo", input={"x": 1})
        return reply

    reply = anyio.run(main)
    otel = any(k.startswith("opentelemetry") and v is not None for k, v in sys.modules.items())
    print(telemetry.SWITCH.on, sorted(reply.meta), otel)
"""


def test_no_sdk_leaves_the_switch_off_and_opentelemetry_unimported() -> None:
    assert run_python(DISPATCH_ONCE) == "False [] False"


def test_the_api_without_an_sdk_leaves_the_switch_off() -> None:
    out = run_python("import opentelemetry.trace, opentelemetry.metrics\n" + textwrap.dedent(DISPATCH_ONCE))
    assert out == "False [] True"


def test_without_the_api_installed_everything_works() -> None:
    blocked = "import sys\nsys.modules['opentelemetry'] = None  # import opentelemetry now fails\n"
    assert run_python(blocked + textwrap.dedent(DISPATCH_ONCE)) == "False [] False"


def test_a_global_sdk_is_found_when_a_dendrite_starts() -> None:
    setup = """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        trace.set_tracer_provider(TracerProvider())
    """
    out = run_python(textwrap.dedent(setup) + textwrap.dedent(DISPATCH_ONCE))
    assert out == "True ['traceparent'] True"


def test_trace_headers_copies_only_the_w3c_keys() -> None:
    meta = {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "tracestate": "k=v", "other": 1}
    assert telemetry.trace_headers(meta) == {"traceparent": meta["traceparent"], "tracestate": "k=v"}
    assert telemetry.trace_headers({"traceparent": "", "x": "y"}) == {}


# -- spans ------------------------------------------------------------------------------------------


async def test_one_trace_from_the_app_span_to_the_reply() -> None:
    with sdk() as otel:
        async with pair() as (orch, _):
            with otel.tracer_provider.get_tracer("app").start_as_current_span("app"):
                reply = await orch.dispatch_and_wait(neuron="echo", input={"x": 1})
        spans = otel.spans()
    app = only(spans, "app")
    assert {s.trace_id for s in spans} == {app.trace_id}, [s.name for s in spans]
    dispatch = only(spans, "dispatch echo")
    sent = only(spans, "publish cosmonapse.otel.TASK")
    process = only(spans, "process cosmonapse.otel.TASK")
    neuron = only(spans, "neuron echo")
    answered = only(spans, "publish cosmonapse.otel.AGENT_OUTPUT")
    assert dispatch.parent_id == app.span_id and dispatch.kind == "CLIENT"
    assert sent.parent_id == dispatch.span_id and sent.kind == "PRODUCER"
    assert process.parent_id == sent.span_id and process.kind == "CONSUMER"
    assert neuron.parent_id == process.span_id and answered.parent_id == process.span_id
    assert (
        reply.meta["traceparent"] == f"00-{app.trace_id}-{answered.span_id}-" + reply.meta["traceparent"][-2:]
    )
    assert sent.attributes["messaging.system"] == "memory"
    assert sent.attributes["messaging.destination.name"] == "cosmonapse.otel.TASK"
    assert sent.attributes["messaging.operation.type"] == "send"
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["messaging.message.conversation_id"] == reply.trace_id
    assert process.attributes["cosmonapse.neuron"] == "echo"
    assert process.attributes["cosmonapse.outcome"] == "AGENT_OUTPUT"
    assert dispatch.attributes["cosmonapse.outcome"] == "AGENT_OUTPUT"


async def test_signals_published_inside_a_span_carry_it_and_others_do_not() -> None:
    with sdk() as otel:
        async with pair() as (orch, _):
            seen: list[Signal] = []
            both = anyio.Event()

            def audit(sig: Signal) -> None:
                seen.append(sig)
                if len(seen) == 2:
                    both.set()

            orch.on_audit(audit)
            await orch.emit(Signal(type=T.AUDIT, payload={"n": 0}))
            with otel.tracer_provider.get_tracer("app").start_as_current_span("app") as app:
                await orch.emit(Signal(type=T.AUDIT, payload={"n": 1}))
            with anyio.fail_after(5):
                await both.wait()
    by_n = {s.payload["n"]: s for s in seen}
    assert "traceparent" not in by_n[0].meta
    assert by_n[1].meta["traceparent"].split("-")[1] == format(app.get_span_context().trace_id, "032x")


async def test_a_raising_neuron_marks_its_spans_and_is_logged_once_with_the_trace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def boom(input: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("kaput")

    with sdk() as otel, caplog.at_level(logging.ERROR, logger="cosmonapse"):
        async with pair(Axon(neuron_id="boom", neuron_fn=boom)) as (orch, _):
            reply = await orch.dispatch_and_wait(neuron="boom", input={})
        spans = otel.spans()
        outcomes = otel.metrics()["cosmonapse.task.outcomes"]
    assert reply.type is T.ERROR
    neuron = only(spans, "neuron boom")
    process = only(spans, "process cosmonapse.otel.TASK")
    dispatch = only(spans, "dispatch boom")
    assert neuron.status == "ERROR" and "exception" in neuron.events
    assert process.status == "ERROR" and process.attributes["error.type"] == "NEURON_EXCEPTION"
    assert dispatch.status == "ERROR" and dispatch.attributes["error.type"] == "NEURON_EXCEPTION"
    assert outcomes == [
        ({"cosmonapse.outcome": "ERROR", "cosmonapse.neuron": "boom", "error.type": "NEURON_EXCEPTION"}, 1)
    ]
    records = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(records) == 1, [r.getMessage() for r in records]
    rec = records[0]
    assert rec.__dict__["trace_id"] == reply.trace_id
    assert rec.__dict__["event_id"] == reply.parent_id  # the TASK
    assert rec.__dict__["neuron"] == "boom"
    assert rec.__dict__["otel_trace_id"] == process.trace_id
    assert rec.__dict__["otel_span_id"] == process.span_id
    assert "Traceback" in rec.getMessage() and "kaput" in rec.getMessage()


async def test_log_records_carry_the_ids_without_an_sdk_too(caplog: pytest.LogCaptureFixture) -> None:
    async def boom(input: dict[str, Any], context: Any) -> dict[str, Any]:
        raise ValueError("no")

    async def failing_handler(sig: Signal) -> None:
        raise KeyError("handler")

    logged = anyio.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.name == "cosmonapse.handlers":
                logged.set()

    seen = Seen()
    logging.getLogger("cosmonapse.handlers").addHandler(seen)
    assert not telemetry.SWITCH.on
    with caplog.at_level(logging.ERROR, logger="cosmonapse"):
        async with pair(Axon(neuron_id="boom", neuron_fn=boom)) as (orch, _):
            orch.on_error_signal(failing_handler)
            reply = await orch.dispatch_and_wait(neuron="boom", input={})
            with anyio.fail_after(5):
                await logged.wait()
    logging.getLogger("cosmonapse.handlers").removeHandler(seen)
    for rec in caplog.records:
        assert {"trace_id", "event_id", "neuron"} <= rec.__dict__.keys(), rec.getMessage()
        assert rec.__dict__["trace_id"] == reply.trace_id
        assert "otel_trace_id" not in rec.__dict__
    handler = next(r for r in caplog.records if r.name == "cosmonapse.handlers")
    assert handler.__dict__["event_id"] == reply.id and handler.exc_info is not None


async def test_handlers_run_in_the_context_of_the_signal_that_started_them() -> None:
    done = anyio.Event()

    async def failing(sig: Signal) -> None:
        done.set()
        raise RuntimeError("handler failed")

    with sdk() as otel:
        async with pair() as (orch, _):
            orch.on_agent_output(failing)
            with otel.tracer_provider.get_tracer("app").start_as_current_span("app"):
                await orch.dispatch_and_wait(neuron="echo", input={})
            with anyio.fail_after(5):
                await done.wait()
        spans = otel.spans()
    handler = [s for s in named(spans, "process cosmonapse.otel.AGENT_OUTPUT")]
    assert len(handler) == 1
    answered = only(spans, "publish cosmonapse.otel.AGENT_OUTPUT")
    assert handler[0].parent_id == answered.span_id
    assert handler[0].attributes["code.function.name"].endswith("failing")
    assert handler[0].status == "ERROR"


async def test_retried_attempts_stay_in_one_trace_under_the_retry_span() -> None:
    calls = 0

    async def flaky(input: dict[str, Any], context: Any) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"__error__": True, "code": "BUSY", "recoverable": True}
        return {"ok": True}

    with sdk() as otel:
        async with pair(Axon(neuron_id="flaky", neuron_fn=flaky)) as (orch, _):
            with otel.tracer_provider.get_tracer("app").start_as_current_span("app"):
                reply = await orch.dispatch_and_wait(
                    neuron="flaky", input={}, retry=RetryStrategy(max_attempts=3, timeout_s=5)
                )
        spans = otel.spans()
        assert otel.total("cosmonapse.retries") == 1
    assert reply.type is T.AGENT_OUTPUT
    retry = only(spans, "run_with_retry flaky")
    attempts = named(spans, "dispatch flaky")
    assert sorted(a.attributes["cosmonapse.attempt"] for a in attempts) == [0, 1]
    assert all(a.parent_id == retry.span_id for a in attempts)
    processed = named(spans, "process cosmonapse.otel.TASK")
    assert len(processed) == 2 and all(descends(p, retry, spans) for p in processed)
    conversations = {p.attributes["messaging.message.conversation_id"] for p in processed}
    assert len(conversations) == 2, "each attempt ran on its own cosmonapse trace, in one OTel trace"
    assert len({s.trace_id for s in spans}) == 1
    assert "retry" in retry.events


async def test_bidding_offer_bids_and_award_are_one_trace() -> None:
    with sdk() as otel:
        async with pair() as (orch, _):
            with otel.tracer_provider.get_tracer("app").start_as_current_span("app"):
                pw = await orch.dispatch_offer(input={"x": 1}, deadline_ms=2000)
                async with pw:
                    reply = await pw.wait(5)
        spans = otel.spans()
    assert reply.type is T.AGENT_OUTPUT
    offer = only(spans, "offer")
    assert offer.attributes["cosmonapse.bidding.bids"] == 1
    assert offer.attributes["cosmonapse.bidding.winner"] == "echo"
    bid = only(spans, "process cosmonapse.otel.TASK_OFFER")  # the auto-bid, on the worker
    award = only(spans, "publish cosmonapse.otel.TASK_AWARDED")
    task = only(spans, "process cosmonapse.otel.TASK")  # the awarded work
    assert descends(bid, offer, spans) and task.parent_id == award.span_id and descends(task, offer, spans)
    assert len({s.trace_id for s in spans}) == 1


async def test_stop_and_rollback_say_what_was_cancelled_and_compensated() -> None:
    started = anyio.Event()

    async def writer(input: dict[str, Any], context: Any) -> dict[str, Any]:
        await context.imprint(op="append", entry={"v": 1}, engram_id="mem", await_ack=True)
        started.set()
        await anyio.sleep_forever()
        return {}

    with sdk() as otel:
        async with MemorySynapse() as syn:
            worker = Dendrite(
                synapse=syn, namespace="otel", role="worker", dendrite_id="worker", heartbeat_s=0
            )
            worker.attach_axon(Axon(neuron_id="writer", neuron_fn=writer))
            worker.attach_engram(InMemoryEngram("mem"))
            orch = Dendrite(synapse=syn, namespace="otel", heartbeat_s=0)
            async with worker, orch:
                with otel.tracer_provider.get_tracer("app").start_as_current_span("app"):
                    pw = await orch.dispatch(neuron="writer", input={})
                    with anyio.fail_after(5):
                        await started.wait()
                    acks = await orch.stop_trace(
                        pw.trace_id, rollback=True, reason="enough", collect_acks=True, timeout_s=1
                    )
        spans = otel.spans()
        metrics = otel
        assert metrics.total("cosmonapse.stops", **{"cosmonapse.direction": "sent"}) == 1
        assert metrics.total("cosmonapse.stops", **{"cosmonapse.direction": "received"}) >= 1
        assert metrics.total("cosmonapse.stop.cancelled") == 1
        assert metrics.total("cosmonapse.rollback.compensated") == 1
    ack = next(a for a in acks if a.payload["node"] == "worker")
    assert ack.payload["cancelled"] == 1 and ack.payload["compensated"] == 1
    handled = [
        s
        for s in named(spans, "process cosmonapse.otel.STOP")
        if s.attributes.get("cosmonapse.stop.cancelled")
    ]
    assert len(handled) == 1
    assert handled[0].attributes["cosmonapse.stop.compensated"] == 1
    assert handled[0].attributes["cosmonapse.stop.reason"] == "enough"
    rollback = only(spans, "rollback")
    assert rollback.parent_id == handled[0].span_id
    process = only(spans, "process cosmonapse.otel.TASK")
    assert process.attributes["cosmonapse.outcome"] == "stopped"
    assert len({s.trace_id for s in spans}) == 1


async def test_an_answer_given_later_elsewhere_continues_the_request_trace() -> None:
    async def asker(input: dict[str, Any], context: Any) -> dict[str, Any]:
        if "clarification" in input:
            return {"answer": input["clarification"]["answer"]}
        return {"__clarification__": True, "question": "which one?"}

    with sdk() as otel:
        async with pair(Axon(neuron_id="asker", neuron_fn=asker)) as (orch, worker):
            tracer = otel.tracer_provider.get_tracer("app")
            with tracer.start_as_current_span("app"):
                question = await orch.dispatch_and_wait(neuron="asker", input={})
            assert question.type is T.CLARIFICATION
            # much later, a human's request in another trace answers it
            with tracer.start_as_current_span("ui request") as ui:
                await worker.answer_clarification(question, answer="the blue one")
                redo = await orch.respond_to_clarification(question, answer="the blue one")
            async with await orch.observe_pathway(redo.trace_id) as pw:
                del pw
        spans = otel.spans()
    app = only(spans, "app")
    answer = only(spans, "answer CLARIFICATION")
    respond = only(spans, "respond CLARIFICATION")
    ui_id = format(ui.get_span_context().span_id, "016x")
    for span in (answer, respond):
        assert span.trace_id == app.trace_id and descends(span, app, spans)
        assert span.links == (ui_id,)
    answered = only(spans, "publish cosmonapse.otel.CLARIFICATION_ANSWER")
    assert answered.parent_id == answer.span_id
    tasks = named(spans, "process cosmonapse.otel.TASK")
    assert len(tasks) == 2 and all(t.trace_id == app.trace_id for t in tasks)


async def test_llm_calls_follow_the_genai_conventions_and_send_the_context() -> None:
    async with serve(FakeLLM("four words from model")) as srv:
        plain = Neuron("openai", endpoint=srv.url, model="gpt-test", api_key="k")
        streamed = Neuron("openai", endpoint=srv.url, model="gpt-test", api_key="k", stream=True)
        with sdk() as otel:
            async with pair(
                Axon(neuron_id="plain", neuron_fn=plain), Axon(neuron_id="streamed", neuron_fn=streamed)
            ) as (
                orch,
                _,
            ):
                await orch.dispatch_and_wait(neuron="plain", input={"prompt": "hi"})
                await orch.dispatch_and_wait(neuron="streamed", input={"prompt": "hi"})
            spans = otel.spans()
            tokens = otel.metrics()["gen_ai.client.token.usage"]
    calls = named(spans, "chat gpt-test")
    assert len(calls) == 2
    plain_call = next(c for c in calls if not c.attributes["gen_ai.request.stream"])
    streamed_call = next(c for c in calls if c.attributes["gen_ai.request.stream"])
    for call in calls:
        assert call.kind == "CLIENT"
        assert call.attributes["gen_ai.system"] == call.attributes["gen_ai.provider.name"] == "openai"
        assert call.attributes["gen_ai.operation.name"] == "chat"
        assert call.attributes["gen_ai.request.model"] == "gpt-test"
        assert call.attributes["server.address"] == "127.0.0.1"
    assert plain_call.attributes["gen_ai.usage.input_tokens"] == 3
    assert plain_call.attributes["gen_ai.usage.output_tokens"] == 5
    assert plain_call.attributes["gen_ai.response.id"] == "chatcmpl-1"
    assert streamed_call.attributes["cosmonapse.gen_ai.streamed_chunks"] == 4
    assert sorted((a["gen_ai.token.type"], v) for a, v in tokens) == [("input", 1), ("output", 1)]
    neuron = only(spans, "neuron plain")
    assert plain_call.parent_id == neuron.span_id
    sent = [r.headers.get("traceparent", "") for r in srv.requests]
    assert sorted(tp.split("-")[2] for tp in sent) == sorted(c.span_id for c in calls)


# -- metrics --------------------------------------------------------------------------------------------


async def test_metric_values_after_a_known_workload() -> None:
    release = anyio.Event()
    held = 0
    all_held = anyio.Event()

    async def hold(input: dict[str, Any], context: Any) -> dict[str, Any]:
        nonlocal held
        held += 1
        if held == 3:
            all_held.set()
        await release.wait()
        return {}

    async def fail(input: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"__error__": True, "code": "NOPE"}

    axons = (
        Axon(neuron_id="echo", neuron_fn=echo),
        Axon(neuron_id="hold", neuron_fn=hold),
        Axon(neuron_id="fail", neuron_fn=fail),
    )
    with sdk() as otel:
        async with pair(*axons) as (orch, worker):
            for i in range(5):
                await orch.dispatch_and_wait(neuron="echo", input={"i": i})
            for _ in range(2):
                await orch.dispatch_and_wait(neuron="fail", input={})
            with pytest.raises(TimeoutError):
                await orch.dispatch_and_wait(neuron="nobody", input={}, timeout_s=0.05)
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(lambda: orch.dispatch_and_wait(neuron="hold", input={}, timeout_s=10))
                with anyio.fail_after(5):
                    await all_held.wait()
                figures = otel.metrics()
                running = {a["cosmonapse.dendrite"]: v for a, v in figures["cosmonapse.tasks.running"]}
                in_flight = {a["cosmonapse.dendrite"]: v for a, v in figures["cosmonapse.traces.in_flight"]}
                assert running[worker.dendrite_id] == 3 and running["orch"] == 0
                assert in_flight[worker.dendrite_id] == 3 and in_flight["orch"] == 3
                release.set()
        m = otel
        assert (
            m.total(
                "cosmonapse.dispatch.duration",
                **{"cosmonapse.target": "echo", "cosmonapse.outcome": "AGENT_OUTPUT"},
            )
            == 5
        )
        assert (
            m.total("cosmonapse.dispatch.duration", **{"cosmonapse.target": "fail", "error.type": "NOPE"})
            == 2
        )
        assert (
            m.total(
                "cosmonapse.dispatch.duration",
                **{"cosmonapse.target": "nobody", "cosmonapse.outcome": "timeout"},
            )
            == 1
        )
        assert m.total("cosmonapse.task.outcomes", **{"cosmonapse.outcome": "AGENT_OUTPUT"}) == 8
        assert (
            m.total("cosmonapse.task.outcomes", **{"cosmonapse.outcome": "ERROR", "error.type": "NOPE"}) == 2
        )
        assert m.total("cosmonapse.task.duration", **{"cosmonapse.neuron": "hold"}) == 3


async def test_backpressure_on_a_full_subscription_buffer_is_counted() -> None:
    gate = anyio.Event()

    async def slow(sig: Signal) -> None:
        await gate.wait()

    with sdk() as otel:
        async with MemorySynapse(subscription_buffer=1) as syn:
            sub = await syn.subscribe("s", slow)
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(syn.publish, "s", Signal(type=T.AUDIT))
                with anyio.fail_after(5):
                    while otel.total("cosmonapse.bus.backpressure") < 1:  # noqa: ASYNC110 - a counter
                        await anyio.sleep(0.01)  # allowed: polling a counter, bounded above
                gate.set()
            await syn.unsubscribe(sub)
        assert otel.metrics()["cosmonapse.bus.backpressure"][0][0] == {"messaging.destination.name": "s"}


def test_facade_calls_are_counted() -> None:
    from cosmonapse_sync import SyncDendrite

    with sdk() as otel:
        facade = SyncDendrite("memory://", namespace="otel-facade", heartbeat_s=0)
        facade.attach_axon(Axon(neuron_id="echo", neuron_fn=lambda i, c: i))
        try:
            facade.dispatch_and_wait(neuron="echo", input={}, timeout_s=10)
            facade.emit(Signal(type=T.AUDIT))
            with pytest.raises(DendriteProtocolError):
                facade.registry_snapshot()  # no registry store: the failure is counted too
        finally:
            facade.close()
        assert otel.total("cosmonapse.facade.calls", **{"cosmonapse.method": "dispatch_and_wait"}) == 1
        assert (
            otel.total("cosmonapse.facade.calls", **{"cosmonapse.method": "emit", "cosmonapse.outcome": "ok"})
            == 1
        )
        failed = {"cosmonapse.method": "registry_snapshot", "cosmonapse.outcome": "DendriteProtocolError"}
        assert otel.total("cosmonapse.facade.calls", **failed) == 1
        assert otel.total("cosmonapse.facade.duration") == 3
