"""One trace across processes: the app's span here, a worker and an answerer in processes of their own.

The test process is the orchestrator, with an in-memory SDK; each peer
(``otel_peer.py``) has its own global SDK writing JSON lines.  Over ``cosmo://``
and over NATS:

* every span the worker makes for a TASK is in the app's trace and descends
  from the app span;
* a retried dispatch's attempts (each on its own cosmonapse trace) stay in that
  one trace, under the retry span;
* a clarification answered by a third process, in a span of an unrelated trace,
  continues the app's trace (and links to the answerer's own span), and so does
  the re-dispatch that follows;
* the metrics of a known workload, here and in the worker.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from otel_util import descends, read_spans, sdk

from cosmonapse import RetryStrategy, SignalType
from cosmonapse.dendrite import Dendrite
from cosmonapse.synapse.connect import make_synapse
from cosmonapse_sync.testing import ChildProcess, dev_bus

HERE = Path(__file__).resolve().parent
PEER = HERE / "otel_peer.py"
NS = "otel-x"
T = SignalType

pytestmark = pytest.mark.slow


@contextmanager
def peer(role: str, url: str, tmp: Path) -> Iterator[tuple[Path, Path]]:
    spans, metrics = tmp / f"{role}.spans.jsonl", tmp / f"{role}.metrics.json"
    cmd = [sys.executable, str(PEER), role, url, NS, str(spans), str(metrics)]
    with ChildProcess(cmd, ready=f"{role} ready", cwd=HERE, env={"PYTHONPATH": str(HERE)}) as child:
        yield spans, metrics
        assert child.stop() == 0, child.output
    assert f"{role} stopped" in child.output, child.output


@contextmanager
def bus(kind: str, nats_url: str | None) -> Iterator[str]:
    if kind == "nats":
        if nats_url is None:
            pytest.skip("nats-server is not installed")
        yield nats_url
    else:
        with dev_bus(NS) as url:
            yield url


def metric_total(path: Path, name: str, **match: Any) -> Any:
    data = json.loads(path.read_text())
    return sum(v for attrs, v in data.get(name, []) if all(attrs.get(k) == w for k, w in match.items()))


@pytest.mark.parametrize("kind", ["cosmo", "nats"])
def test_one_trace_across_an_orchestrator_a_worker_and_an_answerer(
    kind: str, nats_url: str | None, tmp_path: Path
) -> None:
    with (
        bus(kind, nats_url) as url,
        peer("worker", url, tmp_path) as (worker_spans, worker_metrics),
        peer("answerer", url, tmp_path) as (answerer_spans, _),
        sdk("orchestrator") as otel,
    ):
        ids = anyio.run(orchestrate, url, otel)
        here = otel.spans()
        dispatches = otel.metrics()["cosmonapse.dispatch.duration"]
    spans = here + read_spans(worker_spans) + read_spans(answerer_spans)
    app = next(s for s in here if s.name == "app")
    worker = [s for s in spans if s.service == "worker"]
    answerer = [s for s in spans if s.service == "answerer"]
    assert worker and answerer

    # every span the worker made belongs to the app's trace and descends from the app span
    assert all(s.trace_id == app.trace_id for s in worker), [(s.name, s.trace_id) for s in worker]
    assert all(descends(s, app, spans) for s in worker), [
        s.name for s in worker if not descends(s, app, spans)
    ]
    echo_task = next(
        s
        for s in worker
        if s.name == f"process cosmonapse.{NS}.TASK" and s.attributes["cosmonapse.neuron"] == "echo"
    )
    assert echo_task.attributes["messaging.system"] == ("nats" if kind == "nats" else "cosmo")
    assert echo_task.attributes["messaging.message.id"] == ids["echo_task"]
    assert any(s.name == "neuron echo" and s.parent_id == echo_task.span_id for s in worker)

    # the retried dispatch: two attempts, two cosmonapse traces, one OTel trace under the retry span
    retry = next(s for s in here if s.name == "run_with_retry flaky")
    flaky = [
        s
        for s in worker
        if s.name == f"process cosmonapse.{NS}.TASK" and s.attributes["cosmonapse.neuron"] == "flaky"
    ]
    assert len(flaky) == 2 and all(descends(s, retry, spans) for s in flaky)
    assert len({s.attributes["messaging.message.conversation_id"] for s in flaky}) == 2
    assert sorted(s.attributes["cosmonapse.outcome"] for s in flaky) == ["AGENT_OUTPUT", "ERROR"]

    # the clarification, answered by a third process in a span of its own trace
    answer = next(s for s in answerer if s.name == "answer CLARIFICATION")
    ui = next(s for s in answerer if s.name == "ui request")
    assert ui.trace_id != app.trace_id, "the answerer's own request is another trace"
    assert answer.trace_id == app.trace_id and descends(answer, app, spans)
    assert answer.links == (ui.span_id,)
    redo = [
        s
        for s in worker
        if s.name == f"process cosmonapse.{NS}.TASK" and s.attributes["cosmonapse.neuron"] == "asker"
    ]
    assert len(redo) == 2 and all(s.trace_id == app.trace_id for s in redo)

    # metrics after the known workload: here, and in the worker process
    assert sum(v for a, v in dispatches if a["cosmonapse.target"] == "echo") == 3
    assert metric_total(worker_metrics, "cosmonapse.task.outcomes", **{"cosmonapse.neuron": "echo"}) == 3
    assert metric_total(worker_metrics, "cosmonapse.task.outcomes", **{"error.type": "BUSY"}) == 1, (
        json.loads(worker_metrics.read_text())["cosmonapse.task.outcomes"]
    )
    assert (
        metric_total(worker_metrics, "cosmonapse.task.outcomes", **{"cosmonapse.outcome": "CLARIFICATION"})
        == 1
    )


async def orchestrate(url: str, otel: Any) -> dict[str, str]:
    tracer = otel.tracer_provider.get_tracer("app")
    async with make_synapse(url) as synapse:
        orch = Dendrite(synapse=synapse, namespace=NS, dendrite_id="orchestrator", heartbeat_s=0)
        async with orch:
            with tracer.start_as_current_span("app"):
                with anyio.fail_after(30):
                    replies = [await orch.dispatch_and_wait(neuron="echo", input={"i": i}) for i in range(3)]
                    retried = await orch.dispatch_and_wait(
                        neuron="flaky", input={}, retry=RetryStrategy(max_attempts=3, timeout_s=10)
                    )
                    question = await orch.dispatch_and_wait(neuron="asker", input={})
            assert all(r.type is T.AGENT_OUTPUT for r in replies) and retried.type is T.AGENT_OUTPUT
            assert question.type is T.CLARIFICATION
            # later, outside the app span: the answer comes from the answerer process
            with anyio.fail_after(30):
                answer = await orch.await_decision(question, timeout_s=30)
                async with await orch.observe_pathway(question.trace_id) as pw:
                    await orch.respond_to_clarification(question, answer=answer.payload["answer"])
                    assert (await pw.wait(30)).type is T.AGENT_OUTPUT
    return {"echo_task": replies[0].parent_id or ""}
