"""Every figure of issue 16 beside its baseline and target, with a pass/fail column.

    python -m bench targets        (about 5 minutes)

Each measurement is repeated ``REPEATS`` times, the repetitions interleaved (ours,
raw, ours, raw, ... in one process's life), and the table quotes medians; ratios
are medians of the figures, each figure measured beside its own baseline.  The
baselines are the wire with nothing of ours on it:

* in-process: an anyio memory-stream ping-pong, and 1,000 clients through one
  server task (``bench_core``), 20 calls per client (``STEADY_ROUNDS``: a steady
  state; 5 calls each, bench core's size, are mostly the ramp-up and are shown as
  information), sampled ``CORE_SAMPLES`` times per repetition (15 samples in all);
* cosmo://: a bare asyncio 3-process TCP relay, client → broker → worker → back
  (``bench_dev_bus``), sequential and with 1,000 requests in flight;
* NATS: nats-py request/reply through the same nats-server (asyncio; nats-py has
  no trio), sequential and 1,000 in flight;
* token streaming: raw pub/sub of the same frames (``bench_streaming``).

Floors, measured in the same rounds as the figures they explain (rows marked
``floor:``): for in-process, the raw in-flight baseline plus the least our
guarantees need per call (``bench_core._guarded_inflight``: two Signals, a deadline,
a cancel scope); for cosmo://, the relay on our socket layer (the socket layer alone)
and that relay doing what the wire format forces at each hop (``bench.wire_relay``);
for NATS, ``NatsSynapse`` without a Dendrite.  ``python -m bench profile`` shows
where the CPU time per call goes in each process.

Our figures are ``dispatch_and_wait`` from an orchestrator Dendrite to an echo
Axon on a worker Dendrite, on asyncio and on trio (every process of the run on
that backend).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

from bench import bench_core, bench_dev_bus, bench_load, bench_nats, bench_streaming
from bench.report import format_table

REPEATS = 5
IN_FLIGHT = 1000
#: The in-process throughput is measured over this many calls per caller (steady state:
#: 5 rounds, bench_core's default, last 0.2 s and are mostly the ramp-up), and sampled
#: CORE_SAMPLES times per repetition (a round takes about 3 s).
STEADY_ROUNDS = 20
CORE_SAMPLES = 3
BACKENDS = ("asyncio", "trio")
MEMORY_CALLS = 10_000


@contextmanager
def _patched(module: Any, **values: Any) -> Iterator[None]:
    """Run a bench module's functions with other sizes (its globals), then put them back."""
    old = {k: getattr(module, k) for k in values}
    for k, v in values.items():
        setattr(module, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(module, k, v)


# -- in-process ---------------------------------------------------------------------------------


async def _core_round() -> dict[str, float]:
    raw_seq = await bench_core._raw_pingpong_seq(bench_core.SEQ_CALLS)
    seq = await bench_core._with_pair(bench_core._dispatch_seq)
    # 1,000 callers, 5 calls each: what bench core measures, the ramp-up included
    start_raw = await bench_core._raw_inflight(IN_FLIGHT, bench_core.ROUNDS_PER_CLIENT)
    start = await bench_core._with_pair(bench_core._dispatch_inflight, max_concurrent_tasks=IN_FLIGHT)
    with _patched(bench_core, ROUNDS_PER_CLIENT=STEADY_ROUNDS):
        raw_rate = await bench_core._raw_inflight(IN_FLIGHT, STEADY_ROUNDS)
        rate = await bench_core._with_pair(bench_core._dispatch_inflight, max_concurrent_tasks=IN_FLIGHT)
        floor_rate = await bench_core._guarded_inflight(IN_FLIGHT, STEADY_ROUNDS)
    return {
        "floor_rate": floor_rate,
        "raw_p50": statistics.median(raw_seq) * 1e6,
        "p50": statistics.median(seq) * 1e6,
        "raw_rate": raw_rate,
        "rate": rate,
        "start_raw_rate": start_raw,
        "start_rate": start,
    }


# -- cosmo:// ---------------------------------------------------------------------------------


def _cosmo_round(
    backend: str | None, *, anyio_relay: bool = False, wire_relay: bool = False, handoff: bool = False
) -> dict[str, float]:
    """*backend* None: the raw relay; else bus, worker and caller on *backend*; or the
    same relay on our buses' streams (``aiostream``: protocols on asyncio, anyio's on
    trio), the socket layer's own cost, a floor; or that relay doing the wire format's
    work per hop (``bench.wire_relay``), the other floor."""
    calls = IN_FLIGHT * 10
    with _patched(bench_dev_bus, IN_FLIGHT=IN_FLIGHT, IN_FLIGHT_CALLS=calls):
        if backend is None:
            samples, rate = bench_dev_bus._measure_raw()
        elif anyio_relay:
            samples, rate = bench_dev_bus._measure_anyio_relay(backend, ours=True)
        elif wire_relay:
            samples, rate = bench_dev_bus._measure_wire_relay(backend, handoff=handoff)
        else:
            samples, rate = bench_dev_bus._measure_cosmo(
                bench_dev_bus._dendrite_client, "dendrite-worker", backend=backend
            )
    return {"p50": statistics.median(samples) * 1e6, "rate": rate}


# -- NATS -------------------------------------------------------------------------------------


async def _nats_py_round(url: str, wire: bool = False) -> dict[str, float]:
    """nats-py request/reply, requester and responder in this process: sequential, then in flight.

    *wire*: the same, doing what the protocol forces per message and nothing more (the
    floor under our NATS figures): the requester builds and encodes a TASK Signal and
    decodes the reply; the responder decodes the TASK, builds the AGENT_OUTPUT reply and
    encodes it.  No Dendrite: no routing, runners, Pathways, deadlines or STOP scopes.
    """
    import nats  # nats-py: the baseline's client
    import nats.errors

    from bench.wire_relay import task_signal
    from cosmonapse import SignalType, decode_signal, encode_signal

    payload = bench_nats.PAYLOAD
    responder = await nats.connect(url)
    requester = await nats.connect(url)
    try:

        async def echo(msg: Any) -> None:
            await responder.publish(msg.reply, msg.data)

        async def echo_signal(msg: Any) -> None:
            task = decode_signal(msg.data)
            reply = task.reply(SignalType.AGENT_OUTPUT, {"output": task.payload.get("input")})
            await responder.publish(msg.reply, encode_signal(reply))

        await responder.subscribe("raw.echo", cb=echo_signal if wire else echo)
        await responder.flush()

        async def call(wait_s: float) -> None:  # nats-py's own request timeout bounds it
            if wire:
                answer = await requester.request("raw.echo", encode_signal(task_signal()), timeout=wait_s)
                decode_signal(answer.data)
            else:
                await requester.request("raw.echo", payload, timeout=wait_s)

        # nats-py answers "no responders" if a request beats the server's view of the SUB
        # (seen once in a run): wait until one call goes through, bounded
        with anyio.fail_after(10):
            while True:
                try:
                    await call(1)
                    break
                except nats.errors.NoRespondersError:
                    await anyio.sleep(0.01)  # allowed: polls the server, which has no "subscribed" event
        samples = []
        for i in range(bench_nats.SEQ_CALLS + bench_nats.WARMUP):
            t0 = time.perf_counter()
            await call(10)
            if i >= bench_nats.WARMUP:
                samples.append(time.perf_counter() - t0)
        rounds = 10

        async def client() -> None:
            for _ in range(rounds):
                await call(30)

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(IN_FLIGHT):
                tg.start_soon(client)
        rate = IN_FLIGHT * rounds / (time.perf_counter() - t0)
        return {"p50": statistics.median(samples) * 1e6, "rate": rate}
    finally:
        await requester.close()
        await responder.close()


async def _nats_round(url: str) -> dict[str, float]:
    bus = await bench_nats._synapse_pair(url, bench_nats._synapse_seq)
    samples = await bench_nats._dendrite_pair(url, bench_nats._dendrite_seq)
    with _patched(bench_nats, IN_FLIGHT=IN_FLIGHT, ROUNDS_PER_CLIENT=10):
        rate = await bench_nats._dendrite_pair(url, bench_nats._dendrite_inflight)
    return {"p50": statistics.median(samples) * 1e6, "rate": rate, "bus_p50": statistics.median(bus) * 1e6}


@contextmanager
def nats_server() -> Iterator[Any]:
    """A real nats-server on a free loopback port (the tests' ``NatsServer``: ``.url``, ``.proc``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from nats_util import NatsServer  # the tests' server helper

    with NatsServer() as server:
        yield server


@contextmanager
def _nats_server() -> Iterator[str]:
    with nats_server() as server:
        yield f"nats://127.0.0.1:{server.port}"


# -- driver ---------------------------------------------------------------------------------------


def measure(repeats: int = REPEATS) -> dict[str, list[dict[str, float]]]:
    """{name: [one dict per repetition]}, the repetitions interleaved across every name."""
    out: dict[str, list[dict[str, float]]] = {}

    def add(name: str, fn: Callable[[], dict[str, float]]) -> None:
        out.setdefault(name, []).append(fn())

    with _nats_server() as url:
        for _ in range(repeats):
            for _sample in range(CORE_SAMPLES):
                for backend in BACKENDS:
                    add(f"core/{backend}", lambda b=backend: anyio.run(_core_round, backend=b))
            add("cosmo/raw", lambda: _cosmo_round(None))
            for backend in BACKENDS:
                add(f"cosmo/{backend}", lambda b=backend: _cosmo_round(b))
                add(f"cosmo/anyio-{backend}", lambda b=backend: _cosmo_round(b, anyio_relay=True))
                add(f"cosmo/wire-{backend}", lambda b=backend: _cosmo_round(b, wire_relay=True))
                add(
                    f"cosmo/handoff-{backend}",
                    lambda b=backend: _cosmo_round(b, wire_relay=True, handoff=True),
                )
            add("nats/raw", lambda: anyio.run(_nats_py_round, url, backend="asyncio"))
            add("nats/wire", lambda: anyio.run(_nats_py_round, url, True, backend="asyncio"))
            for backend in BACKENDS:
                add(f"nats/{backend}", lambda b=backend: anyio.run(_nats_round, url, backend=b))
    for backend in BACKENDS:
        floor = anyio.run(bench_load._bare_task_bytes, MEMORY_CALLS, backend=backend)
        used = anyio.run(bench_load._worker_bytes, MEMORY_CALLS, backend=backend)
        out[f"memory/{backend}"] = [{"bytes": used, "floor": floor}]
    return out


def _med(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _ratio_med(runs: list[dict[str, float]], bases: list[dict[str, float]], key: str, base_key: str) -> float:
    """The median of per-repetition ratios (each figure over the baseline measured next to it)."""
    return statistics.median(r[key] / b[base_key] for r, b in zip(runs, bases, strict=True))


def rows(m: dict[str, list[dict[str, float]]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def row(metric: str, value: float, baseline: float | None, ratio: float | None, target: str,
            ok: bool | None) -> None:  # fmt: skip
        out.append({"metric": metric, "value": value, "baseline": baseline, "ratio": ratio, "target": target,
                    "ok": ok})  # fmt: skip

    for b in BACKENDS:
        core = m[f"core/{b}"]
        ratio = _ratio_med(core, core, "p50", "raw_p50")
        row(f"in-process dispatch_and_wait p50 (µs), {b}", _med(core, "p50"), _med(core, "raw_p50"), ratio,
            "≤ 3× anyio ping-pong", ratio <= 3)  # fmt: skip
    for b in BACKENDS:
        core = m[f"core/{b}"]
        ratio = _ratio_med(core, core, "rate", "raw_rate")
        rate = _med(core, "rate")
        row(f"in-process {IN_FLIGHT:,} in flight (rt/s), {b}", rate, _med(core, "raw_rate"), ratio,
            "≥ 0.75× raw, ≥ 20,000/s", ratio >= 0.75 and rate >= 20_000)  # fmt: skip
    for b in BACKENDS:  # the same over 5 calls per caller: mostly the ramp-up, noisier
        core = m[f"core/{b}"]
        row(f"  (5 calls per caller, ramp-up included), {b}", _med(core, "start_rate"),
            _med(core, "start_raw_rate"), _ratio_med(core, core, "start_rate", "start_raw_rate"),
            "(information)", None)  # fmt: skip
    for b in BACKENDS:  # bench_core._guarded_inflight: what it includes is in its docstring
        core = m[f"core/{b}"]
        ratio = _ratio_med(core, core, "floor_rate", "raw_rate")
        row(f"  floor: raw + 2 Signals, deadline, cancel scope {IN_FLIGHT:,} in flight, {b}",
            _med(core, "floor_rate"), _med(core, "raw_rate"), ratio, "(guarantees' minimum)",
            None)  # fmt: skip
    for bus, what, seq_target in (("cosmo", "cosmo://", 1.3), ("nats", "NATS", 1.1)):
        raw = m[f"{bus}/raw"]
        base = "relay" if bus == "cosmo" else "nats-py"
        for b in BACKENDS:
            ours = m[f"{bus}/{b}"]
            ratio = _ratio_med(ours, raw, "p50", "p50")
            row(f"{what} sequential p50 (µs), {b}", _med(ours, "p50"), _med(raw, "p50"), ratio,
                f"≤ {seq_target}× {base}", ratio <= seq_target)  # fmt: skip
        for b in BACKENDS:  # the floor under our figures, measured in the same rounds
            if bus == "cosmo":
                floor = m[f"cosmo/anyio-{b}"]
                ratio = _ratio_med(floor, raw, "p50", "p50")
                row(f"  floor: the relay on our socket layer p50 (µs), {b}", _med(floor, "p50"),
                    _med(raw, "p50"), ratio, "(socket layer alone)", None)  # fmt: skip
                wire = m[f"cosmo/wire-{b}"]
                row(f"  floor: that relay doing the protocol's minimum p50 (µs), {b}", _med(wire, "p50"),
                    _med(raw, "p50"), _ratio_med(wire, raw, "p50", "p50"), "(+ wire format per hop)",
                    None)  # fmt: skip
                hand = m[f"cosmo/handoff-{b}"]
                row(f"  floor: + a reader that hands each Signal to another task p50 (µs), {b}",
                    _med(hand, "p50"), _med(raw, "p50"), _ratio_med(hand, raw, "p50", "p50"),
                    "(+ reader isolation)", None)  # fmt: skip
            else:
                ours = m[f"nats/{b}"]
                ratio = _ratio_med(ours, raw, "bus_p50", "p50")
                row(f"  floor: NatsSynapse echo, no Dendrite p50 (µs), {b}", _med(ours, "bus_p50"),
                    _med(raw, "p50"), ratio, "(bus layer alone)", None)  # fmt: skip
        if bus == "nats":
            wire = m["nats/wire"]
            row("  floor: nats-py doing the protocol's minimum p50 (µs), asyncio", _med(wire, "p50"),
                _med(raw, "p50"), _ratio_med(wire, raw, "p50", "p50"), "(+ Signal per message)",
                None)  # fmt: skip
        for b in BACKENDS:
            ours = m[f"{bus}/{b}"]
            ratio = _ratio_med(ours, raw, "rate", "rate")
            row(f"{what} {IN_FLIGHT:,} in flight (rt/s), {b}", _med(ours, "rate"), _med(raw, "rate"), ratio,
                f"≥ 0.75× {base}", ratio >= 0.75)  # fmt: skip
        if bus == "cosmo":
            for b in BACKENDS:
                floor = m[f"cosmo/anyio-{b}"]
                ratio = _ratio_med(floor, raw, "rate", "rate")
                row(f"  floor: the relay on our socket layer {IN_FLIGHT:,} in flight, {b}",
                    _med(floor, "rate"), _med(raw, "rate"), ratio, "(socket layer alone)", None)  # fmt: skip
                wire = m[f"cosmo/wire-{b}"]
                row(f"  floor: that relay doing the protocol's minimum {IN_FLIGHT:,} in flight, {b}",
                    _med(wire, "rate"), _med(raw, "rate"), _ratio_med(wire, raw, "rate", "rate"),
                    "(+ wire format per hop)", None)  # fmt: skip
        else:
            wire = m["nats/wire"]
            row(f"  floor: nats-py doing the protocol's minimum {IN_FLIGHT:,} in flight, asyncio",
                _med(wire, "rate"), _med(raw, "rate"), _ratio_med(wire, raw, "rate", "rate"),
                "(+ Signal per message)", None)  # fmt: skip
    for b in BACKENDS:
        mem = m[f"memory/{b}"][0]
        row(f"bytes per running Neuron call (10,000 running), {b}", mem["bytes"], mem["floor"],
            mem["bytes"] / mem["floor"], "≤ 4,096 B (base: bare task)", mem["bytes"] <= 4096)  # fmt: skip
    return out


def main() -> None:
    t0 = time.perf_counter()
    table = rows(measure())
    streaming = bench_streaming.rows(bench_streaming.run(REPEATS, BACKENDS))
    print(format_table(f"issue 16 targets (medians of {REPEATS} interleaved repetitions)", table + streaming))
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
