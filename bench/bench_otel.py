"""What OpenTelemetry costs: sequential in-process ``dispatch_and_wait`` p50 without and with an SDK.

    python -m bench otel
    COSMO_BENCH_BASELINE=/path/to/an/older/checkout python -m bench otel   (adds "before telemetry")

Each figure is the median of ``ROUNDS`` interleaved rounds, each round a fresh
process per configuration (so one configuration never warms or pollutes another):

* ``no SDK``: the library as users without OpenTelemetry run it (the switch off);
* ``SDK``: a TracerProvider with a BatchSpanProcessor (spans exported to nowhere)
  and a MeterProvider, as an app would configure them: every span and metric made;
* ``before telemetry`` (optional): the same measurement run from another checkout,
  the code as it was before this instrumentation.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROUNDS = 7
CALLS = 2000
WARMUP = 300
ROOT = Path(__file__).resolve().parents[1]

_MEASURE = """
import statistics, sys, time
import anyio
mode, backend, calls, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if mode == "sdk":
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Nowhere(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(Nowhere()))
    trace.set_tracer_provider(tp)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
from cosmonapse import Axon, Dendrite, MemorySynapse

async def echo(i, c):
    return i

async def main():
    out = []
    async with MemorySynapse() as syn:
        w = Dendrite(synapse=syn, namespace="bench", role="worker", heartbeat_s=0)
        w.attach_axon(Axon(neuron_id="echo", neuron_fn=echo))
        o = Dendrite(synapse=syn, namespace="bench", heartbeat_s=0)
        async with w, o:
            for i in range(calls + warmup):
                t0 = time.perf_counter()
                await o.dispatch_and_wait(neuron="echo", input={"i": i}, timeout_s=10)
                if i >= warmup:
                    out.append(time.perf_counter() - t0)
    return statistics.median(out) * 1e6

print(anyio.run(main, backend=backend))
"""


def _has_sdk() -> bool:
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return False
    return True


def _p50(source: Path, mode: str, backend: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(source)}
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, mode, backend, str(CALLS), str(WARMUP)],
        capture_output=True, text=True, env=env, cwd=source, timeout=300, check=True,
    )  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def run() -> list[dict[str, Any]]:
    baseline = os.environ.get("COSMO_BENCH_BASELINE")
    configs: list[tuple[str, Path, str]] = [("no SDK", ROOT, "off")]
    if _has_sdk():
        configs.append(("SDK", ROOT, "sdk"))
    if baseline:
        configs.insert(0, ("before telemetry", Path(baseline).resolve(), "off"))
    rows = []
    for backend in ("asyncio", "trio"):
        samples: dict[str, list[float]] = {name: [] for name, _, _ in configs}
        for _ in range(ROUNDS):  # interleaved: each round measures every configuration once
            for name, source, mode in configs:
                samples[name].append(_p50(source, mode, backend))
        medians = {name: statistics.median(v) for name, v in samples.items()}
        base_name = "before telemetry" if baseline else "no SDK"
        for name, _, _ in configs:
            rows.append(
                {
                    "backend": backend,
                    "metric": f"dispatch_and_wait p50, {name} (µs)",
                    "value": medians[name],
                    "baseline": medians[base_name] if name != base_name else None,
                    "ratio": medians[name] / medians[base_name] if name != base_name else None,
                    "target": "≤ 1.03 (no SDK vs before)" if name == "no SDK" and baseline else "",
                }
            )
    return rows


def main() -> None:
    from bench.bench_core import format_rows

    print(
        format_rows(
            f"OpenTelemetry overhead (medians of {ROUNDS} interleaved rounds, {CALLS} calls each)", run()
        )
    )


if __name__ == "__main__":
    main()
