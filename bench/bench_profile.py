"""Where the CPU time of one round trip goes, per process, with 1,000 calls in flight.

    python -m bench profile        (about 5 minutes)

The workload is the one of ``python -m bench targets``: ``dispatch_and_wait`` from
an orchestrator Dendrite to an echo Axon with 1,000 calls in flight, in-process
(MemorySynapse), over ``cosmo://`` (caller, worker and bus in three processes, every
one on the backend named) and over NATS (caller and worker in two processes, a real
nats-server), on asyncio and trio; beside it the raw baselines it is compared with
(1,000 anyio clients through one server task; the 3-process asyncio TCP relay) and
the relay doing the protocol's minimum per message (``bench.wire_relay``).

Each workload runs twice per repetition, interleaved: once plain, once with cProfile
on in every process of ours (``bench.profiling``: a window opened and closed in the
caller and, by signals, in each role, around the timed part only).  The plain run
gives each process's CPU time per call (getrusage over the window) and the rate;
the profiled run gives the split: cProfile's own time per function, grouped by file
into components (``bench.components``), then scaled so the components add up to the
plain run's CPU per call.  cProfile slows Python-heavy code more than C (its cost is
per call), so the split leans towards code that makes many small calls; the plain
rate is printed beside the profiled one for calibration.  Figures are medians over
the repetitions.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs

from bench import bench_core, bench_dev_bus
from bench.bench_targets import _patched, nats_server
from bench.components import COMPONENTS, IDLE, split
from bench.profiling import Role, Window, WindowResult, proc_cpu_s, role

IN_FLIGHT = 1000
INPROC_ROUNDS = 5  # calls per client, as in targets
NET_ROUNDS = 10
REPEATS = 3
BACKENDS = ("asyncio", "trio")
PAYLOAD = bench_dev_bus.PAYLOAD
ROOT = Path(__file__).resolve().parent.parent


@attrs.define
class Run:
    """One timed window: the calls made and what each process spent."""

    calls: int
    processes: dict[str, WindowResult]

    @property
    def wall_s(self) -> float:
        return self.processes["caller"].wall_s if "caller" in self.processes else _first(self).wall_s


def _first(run: Run) -> WindowResult:
    return next(iter(run.processes.values()))


class Conductor:
    """Opens and closes the window in this process (the caller) and in each peer together."""

    def __init__(
        self, *, profile: bool, own: str = "caller", peers: dict[str, Role] | None = None,
        outside: dict[str, int] | None = None,
    ) -> None:  # fmt: skip
        self.window = Window(profile=profile)
        self.own = own
        self.peers = peers or {}
        self.outside = outside or {}  # processes not ours (nats-server): CPU only, from /proc
        self._outside0: dict[str, float] = {}
        self._outside: dict[str, WindowResult] = {}

    def open(self) -> None:
        for peer in self.peers.values():
            peer.open_window()
        self._outside0 = {name: proc_cpu_s(pid) for name, pid in self.outside.items()}
        self.window.open()

    def close(self) -> None:
        own = self.window.close()
        outside = {name: proc_cpu_s(pid) - self._outside0[name] for name, pid in self.outside.items()}
        for peer in self.peers.values():
            peer.close_window()
        self._outside = {name: WindowResult(cpu_s=cpu, wall_s=own.wall_s) for name, cpu in outside.items()}

    def run(self, calls: int) -> Run:
        assert self.window.result is not None, "the window was never closed"
        processes = {self.own: self.window.result}
        processes.update({name: peer.result() for name, peer in self.peers.items()})
        processes.update(self._outside)
        return Run(calls, processes)


async def _inflight(call: Callable[[], Awaitable[Any]], clients: int, rounds: int) -> None:
    async def client() -> None:
        for _ in range(rounds):
            await call()

    with anyio.fail_after(300):  # a lost reply fails the run instead of hanging it
        async with anyio.create_task_group() as tg:
            for _ in range(clients):
                tg.start_soon(client)


# -- in-process ---------------------------------------------------------------------------


def _inproc_ours(backend: str, profile: bool, _folder: Path) -> Run:
    conductor = Conductor(profile=profile, own="caller + worker")

    async def measured(orch: Any) -> None:
        def call() -> Awaitable[Any]:
            return orch.dispatch_and_wait(neuron="echo", input={"i": 0}, timeout_s=60)

        await _inflight(call, IN_FLIGHT, 1)  # warm-up
        conductor.open()
        await _inflight(call, IN_FLIGHT, INPROC_ROUNDS)
        conductor.close()

    pair = functools.partial(bench_core._with_pair, measured, max_concurrent_tasks=IN_FLIGHT)
    anyio.run(pair, backend=backend)
    return conductor.run(IN_FLIGHT * INPROC_ROUNDS)


def _inproc_bare(inflight: Callable[[int, int], Awaitable[float]], backend: str, profile: bool) -> Run:
    """A bench_core in-flight loop without a Dendrite, warmed up, then timed in a window."""
    conductor = Conductor(profile=profile, own="caller + worker")

    async def measured() -> None:
        await inflight(IN_FLIGHT, 1)  # warm-up
        conductor.open()
        await inflight(IN_FLIGHT, INPROC_ROUNDS)
        conductor.close()

    anyio.run(measured, backend=backend)
    return conductor.run(IN_FLIGHT * INPROC_ROUNDS)


def _inproc_raw(backend: str, profile: bool, _folder: Path) -> Run:
    return _inproc_bare(bench_core._raw_inflight, backend, profile)


def _inproc_floor(backend: str, profile: bool, _folder: Path) -> Run:
    """``bench_core._guarded_inflight``: the least our guarantees need per call (see there)."""
    return _inproc_bare(bench_core._guarded_inflight, backend, profile)


# -- over a bus: the caller here, the other processes bench roles ------------------------------


def _role_args(*args: str) -> list[str]:
    return ["-m", "bench.bench_dev_bus", "--role", *args]


async def _dendrite_caller(url: str, conductor: Conductor) -> None:
    from cosmonapse import Dendrite, connect_synapse

    synapse = await connect_synapse(url)
    try:
        async with Dendrite(synapse=synapse, namespace="bench", dendrite_id="bench-orch") as orch:

            def call() -> Awaitable[Any]:
                return orch.dispatch_and_wait(neuron="echo", input=PAYLOAD, timeout_s=60)

            await _inflight(call, IN_FLIGHT, 1)  # warm-up
            conductor.open()
            await _inflight(call, IN_FLIGHT, NET_ROUNDS)
            conductor.close()
    finally:
        await synapse.close()


def _cosmo_ours(backend: str, profile: bool, folder: Path) -> Run:
    bus_args = _role_args("bus", backend)
    with role(bus_args, folder, profile=profile, ready=b"listening on", cwd=ROOT) as (bus, line):
        found = re.search(rb"cosmo://\S+", line)
        assert found, line
        url = found.group().decode()
        # The worker as targets runs it: max_concurrent_tasks left at the role's default.
        with role(_role_args("dendrite-worker", url, backend), folder, profile=profile, cwd=ROOT) as (w, _):
            conductor = Conductor(profile=profile, peers={"worker": w, "bus": bus})
            anyio.run(_dendrite_caller, url, conductor, backend=backend)
            return conductor.run(IN_FLIGHT * NET_ROUNDS)


@contextmanager
def _relay(broker: str, worker: str, backend: str | None, folder: Path, profile: bool) -> Iterator[Any]:
    """A relay's broker and worker roles; yields (port, Conductor)."""
    tail = [backend] if backend else []
    with role(_role_args(broker, *tail), folder, profile=profile, cwd=ROOT) as (bus, line):
        port = int(line.split()[1])
        with role(_role_args(worker, str(port), *tail), folder, profile=profile, cwd=ROOT) as (w, _):
            sizes = {"IN_FLIGHT": IN_FLIGHT, "IN_FLIGHT_CALLS": IN_FLIGHT * NET_ROUNDS, "SEQ_CALLS": 300,
                     "WARMUP": 100}  # fmt: skip
            with _patched(bench_dev_bus, **sizes):
                yield port, Conductor(profile=profile, peers={"worker": w, "bus": bus})


def _raw_relay(_backend: str, profile: bool, folder: Path) -> Run:
    with _relay("raw-broker", "raw-worker", None, folder, profile) as (port, conductor):
        asyncio.run(bench_dev_bus._raw_client(port, conductor))
        return conductor.run(IN_FLIGHT * NET_ROUNDS)


def _wire_relay(backend: str, profile: bool, folder: Path) -> Run:
    from bench.wire_relay import wire_client

    with _relay("wire-broker", "wire-worker", backend, folder, profile) as (port, conductor):
        anyio.run(wire_client, port, conductor, backend=backend)
        return conductor.run(IN_FLIGHT * NET_ROUNDS)


def _nats_ours(backend: str, profile: bool, folder: Path, server: Any) -> Run:
    url = f"nats://127.0.0.1:{server.port}"
    # As bench_nats runs it: the worker's max_concurrent_tasks at the Dendrite's default.
    args = _role_args("dendrite-worker", url, backend, "10000")
    with role(args, folder, profile=profile, cwd=ROOT) as (worker, _):
        conductor = Conductor(
            profile=profile, peers={"worker": worker}, outside={"nats-server": server.proc.pid}
        )
        anyio.run(_dendrite_caller, url, conductor, backend=backend)
        return conductor.run(IN_FLIGHT * NET_ROUNDS)


# -- driver ---------------------------------------------------------------------------------------

Workload = Callable[[str, bool, Path], Run]


def workloads(server: Any) -> list[tuple[str, str, Workload]]:
    """(title, backend, function) in the order they run and print."""
    out: list[tuple[str, str, Workload]] = []
    for b in BACKENDS:
        out.append(("in-process dispatch_and_wait", b, _inproc_ours))
        out.append((f"in-process raw anyio: {IN_FLIGHT:,} clients, one server task", b, _inproc_raw))
        out.append(("in-process floor: raw + 2 Signals, deadline, cancel scope", b, _inproc_floor))
    for b in BACKENDS:
        out.append(("cosmo:// dispatch_and_wait", b, _cosmo_ours))
    out.append(("cosmo:// raw relay (asyncio streams; the baseline)", "asyncio", _raw_relay))
    for b in BACKENDS:
        out.append(("cosmo:// relay doing the protocol's minimum (floor)", b, _wire_relay))
    for b in BACKENDS:
        out.append(("NATS dispatch_and_wait", b, functools.partial(_nats_ours, server=server)))
    return out


def measure(repeats: int = REPEATS) -> dict[tuple[str, str], list[tuple[Run, Run]]]:
    """{(title, backend): [(plain run, profiled run) per repetition]}, interleaved."""
    out: dict[tuple[str, str], list[tuple[Run, Run]]] = {}
    with nats_server() as server, tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        for _ in range(repeats):
            for title, backend, fn in workloads(server):
                plain = fn(backend, False, Path(tmp))
                profiled = fn(backend, True, Path(tmp))
                out.setdefault((title, backend), []).append((plain, profiled))
    return out


NOT_OURS = "not ours (nats-server, Go)"
ALL = "all"


def _per_call_us(result: WindowResult, run: Run) -> float:
    return result.cpu_s / run.calls * 1e6


def _table(plain: Run, profiled: Run) -> dict[str, dict[str, float]]:
    """One repetition: {process (and "all"): {component: µs per call}}.

    The components are the profiled run's own times, scaled to add up to the plain
    run's CPU per call of that process; a process with no profile (not ours) counts
    as one component.  Also ``"total"``, ``"profiled"`` (CPU per call under cProfile)
    and ``IDLE`` (wall µs per call blocked in poll, profiled run).
    """
    out: dict[str, dict[str, float]] = {}
    for name, result in plain.processes.items():
        cpu = _per_call_us(result, plain)
        row = {"total": cpu, "profiled": _per_call_us(profiled.processes[name], profiled)}
        entries = profiled.processes[name].entries
        if entries:
            own = split(entries)
            busy = sum(v for k, v in own.items() if k != IDLE)
            row.update({c: own.get(c, 0.0) / busy * cpu for c in COMPONENTS})
            row[IDLE] = own.get(IDLE, 0.0) / profiled.calls * 1e6
        else:
            row[NOT_OURS] = cpu
        out[name] = row
    if len(out) > 1:
        keys = {k for row in out.values() for k in row if k != IDLE}
        out[ALL] = {k: sum(row.get(k, 0.0) for row in out.values()) for k in keys}
    return out


def _cell(value: float | None) -> str:
    return f"{'—':>12}" if value is None else f"{value:12.1f}"


def format_block(title: str, backend: str, reps: list[tuple[Run, Run]]) -> str:
    med = statistics.median
    plain_rate = med(p.calls / p.wall_s for p, _ in reps)
    prof_rate = med(q.calls / q.wall_s for _, q in reps)
    wall_us = med(p.wall_s / p.calls * 1e6 for p, _ in reps)
    tables = [_table(p, q) for p, q in reps]
    names = list(tables[0])

    def cell(name: str, key: str) -> float | None:
        values = [t[name][key] for t in tables if key in t[name]]
        return med(values) if values else None

    def line(label: str, key: str, scale: float = 1.0) -> str:
        cells = [cell(n, key) for n in names]
        return f"  {label:38}" + "".join(_cell(None if v is None else v * scale) for v in cells)

    lines = [
        f"{title}, {backend}: {plain_rate:,.0f} rt/s plain ({wall_us:.1f} µs wall per call), "
        f"{prof_rate:,.0f} rt/s under cProfile",
        f"  {'CPU µs per call':38}" + "".join(f"{n:>12}" for n in names),
    ]
    for c in (*COMPONENTS, NOT_OURS):
        if all((cell(n, c) or 0.0) < 0.05 for n in names):
            continue
        lines.append("  " + line(c, c))
    lines.append(line("total CPU (plain run, measured)", "total"))
    lines.append(line("total CPU under cProfile", "profiled"))
    lines.append(line("CPU / wall (%, plain run)", "total", 100 / wall_us))
    if any(cell(n, IDLE) is not None for n in names if n != ALL):
        lines.append(line(IDLE + ", wall µs", IDLE))
    if len(names) > 1:
        cpus = os.cpu_count() or 1
        bound = (cell(ALL, "total") or 0.0) / cpus
        lines.append(f"  all processes' CPU / {cpus} CPUs = {bound:.1f} µs per call: the wall per call "
                     f"if CPU were the only limit ({wall_us:.1f} measured)")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    t0 = time.perf_counter()
    m = measure()
    print(f"where the CPU time goes at {IN_FLIGHT:,} in flight (medians of {REPEATS} repetitions; "
          "components scaled to each process's plain CPU per call)")  # fmt: skip
    for (title, backend), reps in m.items():
        print()
        print(format_block(title, backend, reps))
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
