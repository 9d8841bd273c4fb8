"""Token streaming: N concurrent streams × M THOUGHT_DELTAs, over cosmo:// and NATS, beside raw pub/sub.

    python -m bench streaming

The hot path of an LLM agent: a worker's Neuron emits one THOUGHT_DELTA per token,
and two readers take every one of them: the originating Pathway (the orchestrator
that dispatched the TASK, reading it with ``async for``) and an observer in a process
of its own (a Dendrite with a THOUGHT_DELTA handler, as Prism watches a namespace).
Four processes per run: bus, worker, observer and this one (the orchestrator).

* **paced**: ``STREAMS`` streams at ``RATE`` tokens/s each, the streams' phases
  spread evenly over one token interval (independent LLM streams do not tick in
  lockstep); each token carries the monotonic clock at emit, so both readers
  measure its delay (one machine, one ``CLOCK_MONOTONIC``).
* **flat out**: the same streams with no pacing; Signals/s = tokens / (first
  dispatch → last token at both readers).

The baseline is raw pub/sub of the same frames, with the same four processes and
the same schedule: for cosmo:// a bare asyncio fan-out relay (a publisher line goes
to every subscriber connection) and bare subscribers; for NATS the nats-py client
publishing and subscribing on the same nats-server.  Added delay = our percentile
minus raw's.  Targets (issue 16): ≥ 0.75× raw throughput; p99 added delay ≤ 2 ms
at 100 streams × 50 tokens/s.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import orjson

from bench.bench_dev_bus import ROOT, _child
from bench.children import stop_child

STREAMS = 100
TOKENS = 100  # per stream: 2 s per paced run at 50 tokens/s
RATE = 50.0
TOKEN = "tok "
_NAMESPACE = "bench"
_REPORT_TIMEOUT = 20.0


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _summary(delays: list[float], last: float, expected: int) -> dict[str, Any]:
    return {
        "n": len(delays),
        "expected": expected,
        "p50": statistics.median(delays) if delays else float("nan"),
        "p99": _pct(delays, 0.99),
        "last": last,
    }


def _schedule(stream: int, streams: int, rate: float, start: float) -> float:
    """When *stream*'s first token is due: the phases spread over one token interval."""
    return start + (stream / streams) / rate if rate else start


def _due_in(first: float, k: int, rate: float) -> float:
    """Seconds until token *k* of a stream whose first token is due at *first* (0: flat out)."""
    return first + k / rate - time.perf_counter() if rate else 0.0


# -- raw pub/sub of the same frames -------------------------------------------------------


def _raw_frame(trace: str, k: int) -> bytes:
    return orjson.dumps(
        {
            "v": "1",
            "id": f"evt_{k:026d}",
            "trace_id": trace,
            "parent_id": "evt_00000000000000000000000000",
            "type": "THOUGHT_DELTA",
            "directed": {"id": "streamer", "type": None, "capabilities": []},
            "ts": "2026-11-30T00:00:00.000000Z",
            "payload": {"delta": TOKEN, "seq": k, "t": time.perf_counter()},
            "meta": {},
        }
    )


async def _raw_broker() -> None:
    """Every line a ``pub`` connection sends goes to every ``sub`` connection."""
    subs: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        role = (await reader.readline()).strip()
        if role == b"sub":
            subs.append(writer)
            await reader.read()  # until it hangs up
            subs.remove(writer)
            return
        while line := await reader.readline():
            for sub in subs:
                sub.write(line)
            for sub in subs:
                await sub.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


async def _raw_cosmo_publish(port: int, streams: int, tokens: int, rate: float) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"pub\n")
    start = time.perf_counter() + 0.05

    async def stream(i: int) -> None:
        first = _schedule(i, streams, rate, start)
        trace = f"trc_{i:026d}"
        for k in range(tokens):
            if (pause := _due_in(first, k, rate)) > 0:
                await asyncio.sleep(pause)
            writer.write(_raw_frame(trace, k) + b"\n")
            await writer.drain()

    await asyncio.gather(*(stream(i) for i in range(streams)))
    writer.close()


async def _raw_cosmo_subscribe(port: int, expected: int, ready: Any = None) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"sub\n")
    await writer.drain()
    if ready is not None:
        ready()
    delays: list[float] = []
    last = 0.0
    try:
        async with asyncio.timeout(_REPORT_TIMEOUT + 30):
            while len(delays) < expected:
                line = await reader.readline()
                if not line:
                    break
                last = time.perf_counter()
                delays.append(last - orjson.loads(line)["payload"]["t"])
    except TimeoutError:
        pass
    writer.close()
    return _summary(delays, last, expected)


async def _raw_nats_publish(url: str, streams: int, tokens: int, rate: float) -> None:
    import nats  # nats-py, the baseline's own client

    nc = await nats.connect(url)
    start = time.perf_counter() + 0.05

    async def stream(i: int) -> None:
        first = _schedule(i, streams, rate, start)
        trace = f"trc_{i:026d}"
        subject = f"cosmonapse.{_NAMESPACE}.THOUGHT_DELTA"
        for k in range(tokens):
            if (pause := _due_in(first, k, rate)) > 0:
                await asyncio.sleep(pause)
            await nc.publish(subject, _raw_frame(trace, k))

    await asyncio.gather(*(stream(i) for i in range(streams)))
    await nc.flush()
    await nc.close()


async def _raw_nats_subscribe(url: str, expected: int, ready: Any = None) -> dict[str, Any]:
    import nats

    nc = await nats.connect(url, pending_size=256 * 1024 * 1024)
    delays: list[float] = []
    last = [0.0]
    done = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        last[0] = time.perf_counter()
        delays.append(last[0] - orjson.loads(msg.data)["payload"]["t"])
        if len(delays) >= expected:
            done.set()

    await nc.subscribe(f"cosmonapse.{_NAMESPACE}.THOUGHT_DELTA", cb=on_msg, pending_msgs_limit=10**6)
    await nc.flush()
    if ready is not None:
        ready()
    try:
        await asyncio.wait_for(done.wait(), _REPORT_TIMEOUT + 30)
    except TimeoutError:
        pass
    await nc.close()
    return _summary(delays, last[0], expected)


# -- ours: a worker Dendrite streaming, an observer Dendrite, the orchestrator's Pathways ------------


async def _worker(url: str) -> None:
    from cosmonapse import Axon, Dendrite, NeuronContext, SignalType, connect_synapse

    async def streamer(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        tokens, rate = int(input["tokens"]), float(input["rate"])
        first = float(input["first"])
        for k in range(tokens):
            if (pause := _due_in(first, k, rate)) > 0:
                await anyio.sleep(pause)
            await ctx.emit(SignalType.THOUGHT_DELTA, {"delta": TOKEN, "seq": k, "t": time.perf_counter()})
        return {"tokens": tokens}

    synapse = await connect_synapse(url)
    try:
        worker = Dendrite(synapse=synapse, namespace=_NAMESPACE, role="worker", dendrite_id="stream-worker",
                          heartbeat_s=0)  # fmt: skip
        worker.attach_axon(Axon("streamer", streamer))
        async with worker:
            print("ready", flush=True)
            await anyio.sleep_forever()
    finally:
        await synapse.close()


async def _observer(url: str) -> None:
    """Prism-like: every THOUGHT_DELTA of the namespace; reports per run when asked on stdin."""
    from cosmonapse import Dendrite, Signal, SignalType, connect_synapse

    delays: dict[str, list[float]] = {}
    last: dict[str, float] = {}
    counted = anyio.Event()

    async def on_delta(sig: Signal) -> None:
        now = time.perf_counter()
        run = sig.trace_id[4:10]  # the run's tag leads the trace id
        delays.setdefault(run, []).append(now - sig.payload["t"])
        last[run] = now
        counted.set()

    synapse = await connect_synapse(url)
    try:
        observer = Dendrite(
            synapse=synapse, namespace=_NAMESPACE, dendrite_id="stream-observer", heartbeat_s=0
        )
        observer.on_signal(SignalType.THOUGHT_DELTA, on_delta)
        async with observer:
            await observer.ensure_subscribed(SignalType.THOUGHT_DELTA)
            print("ready", flush=True)
            while line := await anyio.to_thread.run_sync(sys.stdin.readline):
                run, expected = line.split()[1], int(line.split()[2])
                with anyio.move_on_after(_REPORT_TIMEOUT):
                    while len(delays.get(run, ())) < expected:
                        await counted.wait()
                        counted = anyio.Event()
                print("result " + json.dumps(_summary(delays.pop(run, []), last.pop(run, 0.0), expected)),
                      flush=True)  # fmt: skip
    finally:
        await synapse.close()


async def _orchestrate(
    url: str, run: str, streams: int, tokens: int, rate: float
) -> tuple[dict[str, Any], float]:
    """Dispatch the streams, read every Pathway to its reply; (summary, start time)."""
    from cosmonapse import Dendrite, SignalType, connect_synapse

    delays: list[float] = []
    last = [0.0]
    synapse = await connect_synapse(url)
    try:
        orch = Dendrite(synapse=synapse, namespace=_NAMESPACE, dendrite_id="stream-orch", heartbeat_s=0)
        async with orch:
            start = time.perf_counter()
            first = start + 0.05

            async def stream(i: int) -> None:
                pw = await orch.dispatch(
                    neuron="streamer",
                    input={"tokens": tokens, "rate": rate, "first": _schedule(i, streams, rate, first)},
                    trace_id=f"trc_{run}{i:016d}",
                )
                async with pw:
                    async for sig in pw:
                        if sig.type is SignalType.THOUGHT_DELTA:
                            last[0] = time.perf_counter()
                            delays.append(last[0] - sig.payload["t"])
                        elif sig.type in (SignalType.AGENT_OUTPUT, SignalType.ERROR, SignalType.FINAL):
                            break

            with anyio.fail_after(_REPORT_TIMEOUT + 30):
                async with anyio.create_task_group() as tg:
                    for i in range(streams):
                        tg.start_soon(stream, i)
            return _summary(delays, last[0], streams * tokens), start
    finally:
        await synapse.close()


# -- the runs --------------------------------------------------------------------------------


@contextmanager
def _role(*args: str) -> Iterator[Any]:
    with _child("-m", "bench.bench_streaming", "--role", *args, ready="ready") as (proc, line):
        yield proc, line


def _observer_report(proc: Any, run: str, expected: int) -> dict[str, Any]:
    proc.stdin.write(f"report {run} {expected}\n")
    proc.stdin.flush()
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the observer exited before reporting")
        if line.startswith("result "):
            return json.loads(line[len("result ") :])


def _combine(a: dict[str, Any], b: dict[str, Any], start: float, tokens: int) -> dict[str, Any]:
    end = max(a["last"], b["last"])
    return {
        "rate": tokens / (end - start) if end > start else float("nan"),
        "p50": max(a["p50"], b["p50"]),
        "p99": max(a["p99"], b["p99"]),
        "lost": (a["expected"] - a["n"]) + (b["expected"] - b["n"]),
    }


_RUN = [0]


def _next_run() -> str:
    _RUN[0] += 1
    return f"{_RUN[0]:06d}"


def measure_ours(bus: str, backend: str, *, streams: int = STREAMS, tokens: int = TOKENS) -> dict[str, Any]:
    """One paced and one flat-out run of our stack on *bus* (``cosmo`` or ``nats``), all on *backend*."""
    with _bus(bus, backend) as url, _role("worker", url, backend), _observer_proc(url, backend) as obs:
        out: dict[str, Any] = {}
        for mode, rate in (("paced", RATE), ("flat", 0.0)):
            run = _next_run()
            mine, start = anyio.run(_orchestrate, url, run, streams, tokens, rate, backend=backend)
            theirs = _observer_report(obs, run, streams * tokens)
            out[mode] = _combine(mine, theirs, start, streams * tokens)
        return out


def measure_raw(bus: str, *, streams: int = STREAMS, tokens: int = TOKENS) -> dict[str, Any]:
    """The same schedule as raw pub/sub: publisher, observer and this process subscribed."""
    out: dict[str, Any] = {}
    with _raw_server(bus) as where:
        for mode, rate in (("paced", RATE), ("flat", 0.0)):
            expected = streams * tokens
            with _child("-m", "bench.bench_streaming", "--role", f"raw-{bus}-sub", where, str(expected),
                        ready="ready") as (obs, _):  # fmt: skip
                mine, start = asyncio.run(_raw_run(bus, where, streams, tokens, rate, expected))
                theirs = _read_result(obs)
            out[mode] = _combine(mine, theirs, start, expected)
    return out


async def _raw_run(bus: str, where: str, streams: int, tokens: int, rate: float, expected: int) -> Any:
    ready = asyncio.Event()
    sub = _raw_cosmo_subscribe if bus == "cosmo" else _raw_nats_subscribe
    target = where if bus == "nats" else int(where)
    task = asyncio.ensure_future(sub(target, expected, ready.set))  # bench-only helper
    await ready.wait()
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.bench_streaming", "--role", f"raw-{bus}-pub", where, str(streams),
        str(tokens), str(rate),
    )  # fmt: skip
    mine = await task
    await proc.wait()
    return mine, start


def _read_result(proc: Any) -> dict[str, Any]:
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the raw subscriber exited before reporting")
        if line.startswith("result "):
            return json.loads(line[len("result ") :])


@contextmanager
def _bus(bus: str, backend: str) -> Iterator[str]:
    if bus == "cosmo":
        from bench.bench_dev_bus import _bus as dev_bus

        with dev_bus("--backend", backend, "-q") as url:
            yield url
    else:
        with _nats_server() as url:
            yield url


@contextmanager
def _nats_server() -> Iterator[str]:
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from nats_util import NatsServer  # the tests' server helper

    with NatsServer() as server:
        yield f"nats://127.0.0.1:{server.port}"


@contextmanager
def _raw_server(bus: str) -> Iterator[str]:
    if bus == "cosmo":
        with _child("-m", "bench.bench_streaming", "--role", "raw-broker", ready="ready") as (_, line):
            yield line.split()[1]
    else:
        with _nats_server() as url:
            yield url


@contextmanager
def _observer_proc(url: str, backend: str) -> Iterator[Any]:
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_streaming", "--role", "observer", url, backend],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        while "ready" not in (line := proc.stdout.readline()):
            if not line:
                raise RuntimeError("the observer exited before it was ready")
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        stop_child(proc)


def run(repeats: int = 3, backends: tuple[str, ...] = ("asyncio", "trio")) -> dict[tuple[str, str], Any]:
    """{(bus, "raw" | backend): {"paced": [...], "flat": [...]}} over *repeats* interleaved rounds."""
    results: dict[tuple[str, str], Any] = {}
    for _ in range(repeats):
        for bus in ("cosmo", "nats"):
            for who in ("raw", *backends):
                m = measure_raw(bus) if who == "raw" else measure_ours(bus, who)
                slot = results.setdefault((bus, who), {"paced": [], "flat": []})
                slot["paced"].append(m["paced"])
                slot["flat"].append(m["flat"])
    return results


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def rows(results: dict[tuple[str, str], Any]) -> list[dict[str, Any]]:
    """Table rows: Signals/s flat out vs raw; p50/p99 delay paced, added over raw."""
    out: list[dict[str, Any]] = []
    for (bus, who), m in results.items():
        if who == "raw":
            continue
        raw = results[(bus, "raw")]
        rate, raw_rate = median_of(m["flat"], "rate"), median_of(raw["flat"], "rate")
        label = f"{bus}:// {who} {STREAMS}×{TOKENS} tokens"
        out.append(
            {
                "metric": f"{label}, flat out (Signals/s)",
                "value": rate,
                "baseline": raw_rate,
                "ratio": rate / raw_rate,
                "target": "≥ 0.75× raw",
                "ok": rate / raw_rate >= 0.75,
            }
        )
        for q in ("p50", "p99"):
            ours, base = median_of(m["paced"], q) * 1e3, median_of(raw["paced"], q) * 1e3
            added = ours - base
            target = "added ≤ 2 ms" if q == "p99" else ""
            out.append({"metric": f"{label} at {RATE:g}/s, delay {q} (ms; ratio = added)", "value": ours,
                        "baseline": base, "ratio": added, "target": target,
                        "ok": (added <= 2.0) if q == "p99" else None})  # fmt: skip
        lost = sum(r["lost"] for r in m["paced"] + m["flat"])
        out.append({"metric": f"{label}, tokens lost (all runs)", "value": lost, "baseline": None,
                    "ratio": None, "target": "0", "ok": lost == 0})  # fmt: skip
    return out


def main() -> None:
    from bench.report import format_table

    print(format_table("token streaming (4 processes; medians of 3 interleaved rounds)", rows(run())))


_ROLES: dict[str, Any] = {
    "raw-broker": lambda: asyncio.run(_raw_broker()),
    "raw-cosmo-pub": lambda port, s, t, r: asyncio.run(
        _raw_cosmo_publish(int(port), int(s), int(t), float(r))
    ),
    "raw-nats-pub": lambda url, s, t, r: asyncio.run(_raw_nats_publish(url, int(s), int(t), float(r))),
    "worker": lambda url, backend: anyio.run(_worker, url, backend=backend),
    "observer": lambda url, backend: anyio.run(_observer, url, backend=backend),
}


def _raw_sub_role(bus: str, where: str, expected: str) -> None:
    async def go() -> dict[str, Any]:
        sub = _raw_cosmo_subscribe if bus == "cosmo" else _raw_nats_subscribe
        target = where if bus == "nats" else int(where)
        return await sub(target, int(expected), lambda: print("ready", flush=True))

    print("result " + json.dumps(asyncio.run(go())), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--role":
        role = sys.argv[2]
        try:
            if role in ("raw-cosmo-sub", "raw-nats-sub"):
                _raw_sub_role(role.split("-")[1], *sys.argv[3:])
            else:
                _ROLES[role](*sys.argv[3:])
        except KeyboardInterrupt:
            pass
    else:
        main()
