"""``ProtocolMachine``: a Hypothesis state machine that drives your agents and checks the protocol.

    class MyAgents(ProtocolMachine):
        def axons(self):
            return [Axon("summarizer", summarize, ["summarize"])]

    TestMyAgentsTrio = MyAgents.on("trio").TestCase
    TestMyAgentsAsyncio = MyAgents.on("asyncio").TestCase

Each example starts a fresh world on one event loop (a :class:`~.bridge.LoopBridge`,
virtual time): a test bus (:class:`~.bus.TestSynapseHub`) with fault injection,
an orchestrator Dendrite of the machine's own, and your agents (``axons()``, or
anything you connect in ``start_agents``).  Hypothesis then chooses steps:

* ``dispatch`` a TASK to one of the neurons on the bus (``dispatch_and_wait``,
  with or without ``finalize``, with or without a retry strategy);
* ``stop`` a call's trace, with or without rollback;
* ``respond`` to a CLARIFICATION or PERMISSION a call got back;
* ``advance_time`` (the only way time passes: timeouts fire when the machine
  says so, the same way on every run);
* bus faults: ``fault`` (drop, duplicate, delay or reorder the next Signal of
  a type) and ``disconnect``/``reconnect`` a participant.

After every step it checks the invariants — at most one terminal per trace;
every reply parented to its TASK; nothing published on a trace by a
participant after its STOP took effect there; every call resolves by its
deadline; a call that gives up STOPs its trace; Engram rollback happens at
most once per trace and never touches another trace's writes (when the machine
hosts an Engram, ``probes = True``) — and at the end, that no task is left
running.  A failure is shrunk by Hypothesis to a short sequence of steps.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from typing import Any, ClassVar

import anyio
import attrs
from anyio.abc import TaskGroup
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, multiple, precondition, rule
from hypothesis.strategies import SearchStrategy

from ..axon import Axon
from ..context import NeuronContext
from ..dendrite import Dendrite
from ..engram.memory import InMemoryEngram
from ..engram.saga import CompensationReport
from ..errors import DispatchTimeout
from ..retry import RetryStrategy
from ..signal import Signal, SignalType
from .bridge import LoopBridge
from .bus import TestSynapseHub
from .faults import Fault, FaultInjector, FaultKind
from .harness import running_task_names
from .ledger import Labels, ProtocolLedger

__all__ = ["DEFAULT_SETTINGS", "Call", "ProtocolMachine"]

T = SignalType

#: Signal types the ``fault`` rule aims at by default.
DEFAULT_FAULT_TYPES: tuple[SignalType, ...] = (
    T.TASK,
    T.AGENT_OUTPUT,
    T.FINAL,
    T.ERROR,
    T.STOP,
    T.CLARIFICATION,
)


#: What ``Machine.on(backend).TestCase`` runs with: no per-example deadline (steps use virtual
#: time; a hang is caught by ``step_timeout_s``), one bug reported (the shortest), up to 10
#: steps an example.  ``max_examples`` comes from the Hypothesis profile loaded when this
#: module is first imported (100 by default; a conftest's profile applies).
DEFAULT_SETTINGS = settings(
    stateful_step_count=10,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@attrs.define(eq=False)
class Call:
    """One orchestrator call the machine started, and how it ended."""

    label: str
    what: str
    started: float
    limit_s: float
    outcome: Signal | BaseException | None = None
    done_at: float | None = None
    traces: list[str] = attrs.Factory(list)

    @property
    def done(self) -> bool:
        return self.done_at is not None

    def describe(self) -> str:
        if not self.done:
            return "pending"
        if isinstance(self.outcome, Signal):
            return self.outcome.type.value
        return type(self.outcome).__name__


def _pick(attr: str) -> SearchStrategy[Any]:
    """A value from the running machine's ``attr`` list (so the printed step shows the value)."""
    return st.runner().flatmap(lambda m: st.sampled_from(getattr(m, attr)))


class ProtocolMachine(RuleBasedStateMachine):
    """Subclass it: give ``axons()`` (or override ``start_agents``), then use ``.on(backend).TestCase``."""

    #: Event loop of the examples: "trio" (deterministic scheduling) or "asyncio".
    backend: ClassVar[str] = "trio"
    namespace: ClassVar[str] = "kit"
    #: Neuron ids to dispatch to; empty: every neuron that REGISTERed when the world started.
    targets: ClassVar[Sequence[str]] = ()
    #: TASK inputs.
    inputs: ClassVar[SearchStrategy[dict[str, Any]]] = st.just({"prompt": "hello"})
    #: Per-call timeouts the machine picks from (virtual seconds).
    timeouts: ClassVar[Sequence[float]] = (0.5, 2.0)
    #: Steps of virtual time ``advance_time`` picks from.
    time_steps: ClassVar[Sequence[float]] = (0.25, 1.0, 3.0)
    #: Signal types (names) the ``fault`` rule aims at, and the kinds of fault it arms.
    fault_types: ClassVar[Sequence[str]] = tuple(t.value for t in DEFAULT_FAULT_TYPES)
    fault_kinds: ClassVar[Sequence[str]] = tuple(k.value for k in FaultKind)
    #: How late (virtual seconds) past its deadline a call may still resolve.
    deadline_slack_s: ClassVar[float] = 0.25
    #: Real seconds one step may take before the example fails as hanging.
    step_timeout_s: ClassVar[float] = 10.0
    #: Host the machine's own probe agents (echo, slow, scribe + an Engram, asker, flaky) too.
    probes: ClassVar[bool] = False
    #: Run the faults rules at all.
    faults_enabled: ClassVar[bool] = True
    #: Let ``disconnect`` cut the machine's own orchestrator off too (a runtime test, not an agent test).
    disconnect_orchestrator: ClassVar[bool] = False
    #: Connections ``disconnect`` may cut off; empty: every one (but the orchestrator, see above).
    disconnectable: ClassVar[Sequence[str]] = ()
    #: Check that a call which gives up (DispatchTimeout) STOPs its trace.  A promise of the
    #: runtime, not of your agents; off by default until the runtime keeps it (issue 9).
    check_abandoned_calls: ClassVar[bool] = False

    calls: Bundle[Any] = Bundle("calls")

    # -- what users override -------------------------------------------------------
    def axons(self) -> list[Axon]:
        """Your agents' Axons; the machine hosts them on one worker Dendrite ("agents")."""
        return []

    async def start_agents(self, bus: TestSynapseHub, stack: AsyncExitStack) -> None:
        """Connect your participants to *bus* and enter them on *stack* (they stop when it closes).

        The default hosts ``axons()`` on a worker Dendrite whose connection is named
        "agents".  Name each connection (``bus.synapse("name")``): violations say who.
        """
        axons = self.axons()
        if not axons:
            return
        worker = Dendrite(
            synapse=await self.connect(bus, stack, "agents"),
            namespace=self.namespace,
            role="worker",
            dendrite_id="agents",
            heartbeat_s=0,
        )
        for axon in axons:
            worker.attach_axon(axon)
        await stack.enter_async_context(worker)

    @staticmethod
    async def connect(bus: TestSynapseHub, stack: AsyncExitStack, name: str) -> Any:
        """A connection named *name*, closed with *stack*."""
        synapse = bus.synapse(name)
        await stack.enter_async_context(synapse)
        return synapse

    @classmethod
    @functools.cache
    def on(cls, backend: str) -> type[ProtocolMachine]:
        """This machine on *backend* ("asyncio" or "trio"): ``MyMachine.on("trio").TestCase``.

        Its ``TestCase`` runs with :data:`DEFAULT_SETTINGS` (assign ``.settings`` to change them).
        """
        machine = type(
            f"{cls.__name__}_{backend}", (cls,), {"backend": backend, "__module__": cls.__module__}
        )
        machine.TestCase.settings = DEFAULT_SETTINGS
        return machine

    @classmethod
    def check(cls, backend: str | None = None, **overrides: Any) -> None:
        """Run this machine as a test now (``DEFAULT_SETTINGS``, with *overrides*); raises on a bug."""
        from hypothesis.stateful import run_state_machine_as_test

        machine = cls.on(backend or cls.backend)
        run_state_machine_as_test(machine, settings=settings(DEFAULT_SETTINGS, **overrides))

    # -- the world -----------------------------------------------------------------
    def __init__(self) -> None:
        super().__init__()
        self.labels: Labels = Labels()
        self.ledger: ProtocolLedger = ProtocolLedger(self.labels)
        self.faults: FaultInjector = FaultInjector()
        self.hub: TestSynapseHub = TestSynapseHub(faults=self.faults)
        self.ledger.attach(self.hub)
        self.ledger_calls: dict[str, Call] = {}
        self.engram: InMemoryEngram | None = None
        self._compensated: dict[str, int] = {}
        self._n = 0
        self.bridge: LoopBridge = LoopBridge(self.backend, step_timeout_s=self.step_timeout_s).start()
        self._closed = False
        self._shutdown_asked = False
        try:
            self._ready, self._shutdown, self._finished = self.bridge.call(self._events)
            self._baseline = self.bridge.call(self._task_ids)
            self._host_done = self.bridge.start_soon(self._host)
            self.bridge.call(self._ready.wait, autojump=True, what="start the world")
            self.ledger.end_step()
            announced = sorted({s.neuron for s in self.hub.signals if s.type is T.REGISTER and s.neuron})
            self.target_ids: list[str] = list(self.targets) or [
                n for n in announced if n != "mem" and n in self._neurons()
            ]
            self.participants: list[str] = sorted(
                n
                for n in (self.disconnectable or self.hub.clients)
                if self.disconnect_orchestrator or n != "orchestrator"
            )
            self.down: list[str] = []
        except BaseException:
            self._close()
            raise

    def _neurons(self) -> set[str]:
        return {
            s.neuron for s in self.hub.signals if s.type is T.REGISTER and s.payload.get("role") != "engram"
        }  # type: ignore[misc]

    @staticmethod
    async def _events() -> tuple[anyio.Event, anyio.Event, anyio.Event]:
        return anyio.Event(), anyio.Event(), anyio.Event()

    @staticmethod
    async def _task_ids() -> set[int]:
        return set(running_task_names())

    async def _host(self) -> None:
        """The world's one owner task: connections and Dendrites open and close here, in order."""
        try:
            await self._host_world()
        finally:
            self._finished.set()

    async def _host_world(self) -> None:
        async with AsyncExitStack() as stack:
            orchestrator = Dendrite(
                synapse=await self.connect(self.hub, stack, "orchestrator"),
                namespace=self.namespace,
                dendrite_id="orchestrator",
                heartbeat_s=0,
            )
            if self.probes:
                await self._start_probes(stack)
            await self.start_agents(self.hub, stack)
            await stack.enter_async_context(orchestrator)
            self.orchestrator = orchestrator
            self.tg: TaskGroup = await stack.enter_async_context(anyio.create_task_group())
            self._ready.set()
            await self._shutdown.wait()
            self.tg.cancel_scope.cancel()  # calls still waiting end here, before their Dendrites stop

    # -- probe agents -------------------------------------------------------------------
    async def _start_probes(self, stack: AsyncExitStack) -> None:
        engram = InMemoryEngram("mem")
        self._watch(engram)
        self.engram = engram
        keeper = Dendrite(
            synapse=await self.connect(self.hub, stack, "keeper"),
            namespace=self.namespace,
            role="worker",
            dendrite_id="keeper",
            heartbeat_s=0,
        )
        keeper.attach_engram(engram)
        probes = Dendrite(
            synapse=await self.connect(self.hub, stack, "probes"),
            namespace=self.namespace,
            role="worker",
            dendrite_id="probes",
            heartbeat_s=0,
        )
        for axon in _probe_axons():
            probes.attach_axon(axon)
        await stack.enter_async_context(keeper)
        await stack.enter_async_context(probes)

    def _watch(self, engram: InMemoryEngram) -> None:
        """Check every compensation: once per trace, only this trace's writes, none left."""
        compensate = engram.compensate

        async def checked(trace_id: str) -> CompensationReport:
            label = self.labels.trace(trace_id)
            before = {e["id"]: e for e in await engram.entries()}
            report = await compensate(trace_id)
            after = {e["id"]: e for e in await engram.entries()}
            changed = [eid for eid in before.keys() | after.keys() if before.get(eid) != after.get(eid)]
            # a repeated compensate that undoes nothing is fine (it is idempotent)
            if report.restored or changed:
                self._compensated[trace_id] = self._compensated.get(trace_id, 0) + 1
                if self._compensated[trace_id] == 2:
                    self.ledger.violation("rollback once", f"trace {label} was rolled back twice")
            for eid in changed:
                old = before.get(eid)
                if old is None or trace_id not in old.get("tags", ()):
                    tags = (old or after.get(eid) or {}).get("tags", ())
                    owner = ",".join(self.labels.trace(t) for t in tags) or "?"
                    self.ledger.violation(
                        "rollback scope",
                        f"rolling back trace {label} changed an entry last written by trace {owner}",
                    )
            for entry in after.values():
                if trace_id in entry.get("tags", ()):
                    self.ledger.violation("rollback scope", f"a write of trace {label} survived its rollback")
            return report

        engram.compensate = checked  # type: ignore[method-assign]

    # -- running steps ----------------------------------------------------------------
    def _step(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, what: str) -> Any:
        result = self.bridge.call(fn, *args, what=what)
        self._after_step()
        return result

    def _after_step(self) -> None:
        self.ledger.end_step()
        if self._host_done.done() and not self._shutdown_asked:
            exc = self._host_done.exception()
            self._shutdown_asked = True  # reported once; the world is gone
            self.ledger.violation(
                "no crash",
                f"a participant raised out of its task group and took the world down: {exc!r}",
            )
        now = self.bridge.now()
        for call in self.ledger_calls.values():
            if call.done:
                continue
            late = now - (call.started + call.limit_s)
            if late > self.deadline_slack_s:
                self.ledger.violation(
                    "deadline",
                    f"call {call.label} ({call.what}) is still waiting {late:g} s after its "
                    f"{call.limit_s:g} s deadline",
                )
                call.done_at = now  # reported once

    def _start_call(self, what: str, limit_s: float, run: Callable[[Call], Coroutine[Any, Any, Any]]) -> str:
        self._n += 1
        label = f"c{self._n}"
        call = Call(label, what, self.bridge.now(), limit_s)
        self.ledger_calls[label] = call

        async def body() -> None:
            try:
                call.outcome = await run(call)
            except Exception as exc:  # one outcome per call: a Signal or an exception
                call.outcome = exc
            call.done_at = anyio.current_time()
            late = call.done_at - (call.started + call.limit_s)
            if late > self.deadline_slack_s:
                self.ledger.violation(
                    "deadline",
                    f"call {call.label} ({call.what}) resolved {late:g} s after its "
                    f"{call.limit_s:g} s deadline",
                )
            if isinstance(call.outcome, DispatchTimeout) and self.check_abandoned_calls:
                self._check_abandoned(call)

        async def spawn() -> None:
            self.tg.start_soon(body)

        self._step(spawn, what=what)
        return label

    def _check_abandoned(self, call: Call) -> None:
        stopped = {s.trace_id for s in self.hub.signals if s.type is T.STOP}
        for trace in self._traces_of(call):
            if trace not in stopped:
                self.ledger.violation(
                    "abandoned call STOPs",
                    f"call {call.label} ({call.what}) gave up on trace {self.labels.trace(trace)} "
                    "without STOPping it (its work may go on for nobody)",
                )

    def _traces_of(self, call: Call) -> list[str]:
        traces = list(call.traces)
        for s in self.hub.signals:
            if s.type is T.TASK and s.meta.get("kit_call") == call.label and s.trace_id not in traces:
                traces.append(s.trace_id)
        return traces

    # -- rules ------------------------------------------------------------------------
    @precondition(lambda self: bool(self.target_ids))
    @rule(
        target=calls,
        neuron=_pick("target_ids"),
        input=st.runner().flatmap(lambda m: m.inputs),
        finalize=st.booleans(),
        timeout_s=_pick("timeouts"),
        retry=st.booleans(),
    )
    def dispatch(
        self, neuron: str, input: dict[str, Any], finalize: bool, timeout_s: float, retry: bool
    ) -> str:
        """dispatch_and_wait a TASK to *neuron* (a retry strategy makes 2 attempts on fresh traces)."""
        strategy = RetryStrategy(max_attempts=2, timeout_s=timeout_s) if retry else None
        limit = timeout_s * (2 if retry else 1)
        what = f"dispatch_and_wait({neuron!r}{', retry' if retry else ''})"

        async def run(call: Call) -> Signal:
            return await self.orchestrator.dispatch_and_wait(
                neuron=neuron,
                input=input,
                timeout_s=timeout_s,
                finalize=finalize,
                retry=strategy,
                meta={"kit_call": call.label},
            )

        return self._start_call(what, limit, run)

    @rule(call=calls, rollback=st.booleans())
    def stop(self, call: str, rollback: bool) -> None:
        """STOP the latest trace of *call* (with or without Engram rollback)."""
        traces = self._traces_of(self.ledger_calls[call])
        if not traces:
            return

        async def send() -> None:
            try:
                await self.orchestrator.emit_stop(trace_id=traces[-1], rollback=rollback, reason="machine")
            except Exception:  # a disconnected orchestrator cannot STOP: that is the fault's point
                pass

        async def run() -> None:
            self.tg.start_soon(send)  # a task: while cut off, the publish waits for (virtual) time

        self._step(run, what="stop")

    @rule(target=calls, call=calls, grant=st.booleans())
    def respond(self, call: str, grant: bool) -> Any:
        """Answer the CLARIFICATION/PERMISSION *call* got (re-dispatch to the asker); wait for the reply."""
        asked = self.ledger_calls[call].outcome
        if not isinstance(asked, Signal) or asked.type not in (T.CLARIFICATION, T.PERMISSION):
            return multiple()
        timeout_s = max(self.timeouts)

        async def run(new: Call) -> Signal:
            new.traces.append(asked.trace_id)
            pathway = await self.orchestrator.observe_pathway(asked.trace_id)
            try:
                if asked.type is T.CLARIFICATION:
                    await self.orchestrator.respond_to_clarification(asked, answer="yes" if grant else "no")
                else:
                    await self.orchestrator.respond_to_permission(asked, granted=grant)
                return await pathway.wait(timeout_s)
            finally:
                await pathway.close()

        return self._start_call(f"respond to {asked.type.value}", timeout_s, run)

    @rule(seconds=_pick("time_steps"))
    def advance_time(self, seconds: float) -> None:
        """Let *seconds* of virtual time pass (timers fire in order)."""
        self.bridge.advance(seconds)
        self._after_step()

    @precondition(lambda self: self.faults_enabled and bool(self.fault_kinds) and bool(self.fault_types))
    @rule(kind=_pick("fault_kinds"), on=_pick("fault_types"))
    def fault(self, kind: str, on: str) -> None:
        """Arm a fault (drop, duplicate, delay 1 s, reorder) for the next *on* Signal on the bus."""
        fault_kind = FaultKind(kind)
        self.faults.arm(Fault(fault_kind, on, delay_s=1.0 if fault_kind is FaultKind.DELAY else 0.0))

    @precondition(lambda self: self.faults_enabled and 0 <= len(self.down) < len(self.participants))
    @rule(who=_pick("participants"))
    def disconnect(self, who: str) -> None:
        """Cut *who* off the bus (it hears nothing; its publishes wait, then fail)."""
        if who in self.down or who not in self.hub.clients:
            return
        self.down.append(who)
        self.hub.disconnect(who)
        self.bridge.settle()
        self._after_step()

    @precondition(lambda self: bool(self.down))
    @rule(who=_pick("down"))
    def reconnect(self, who: str) -> None:
        """Put *who* back on the bus (its Dendrites re-REGISTER)."""
        self.down.remove(who)
        if who in self.hub.clients:
            self.hub.reconnect(who)
        self.bridge.settle()
        self._after_step()

    # -- invariants ----------------------------------------------------------------------
    @invariant()
    def protocol_holds(self) -> None:
        if self.ledger.violations:
            raise AssertionError(self._report())

    def _report(self) -> str:
        lines = ["the protocol was broken:"]
        lines += [f"  {v}" for v in self.ledger.violations]
        traces = {
            tid
            for c in self.ledger_calls.values()
            for tid in self._traces_of(c)
            if any(self.labels.trace(tid) in v.message for v in self.ledger.violations)
        }
        for tid in sorted(traces, key=self.labels.trace):
            lines.append(f"trace {self.labels.trace(tid)}:")
            lines += [f"  {line}" for line in self.ledger.story(tid).splitlines()]
        return "\n".join(lines)

    def teardown(self) -> None:
        try:
            if not self.ledger.violations:
                self._drain()
                self.protocol_holds()
            self._stop_world()
            self.protocol_holds()
            leaked = self.bridge.call(self._leaked)
            assert not leaked, f"tasks left running after every participant stopped: {leaked}"
        finally:
            self._close()

    def _drain(self) -> None:
        """Heal the bus and let time pass until every call has had its deadline."""
        for who in list(self.down):
            self.reconnect(who)
        self.faults.clear()
        self._step(self.hub.release_held, what="release held Signals")
        longest = max((c.limit_s for c in self.ledger_calls.values()), default=0.0)
        for _ in range(2):
            self.bridge.advance(longest + self.deadline_slack_s + 1.0)
            self._after_step()

    def _stop_world(self) -> None:
        self._shutdown_asked = True

        async def stop() -> None:
            self._shutdown.set()

        self.bridge.call(stop, what="stop the world")

        self.bridge.call(self._finished.wait, autojump=True, what="stop every participant")
        self.ledger.end_step()
        exc = self._host_done.exception()
        if exc is not None and not any(v.invariant == "no crash" for v in self.ledger.violations):
            self.ledger.violation("no crash", f"stopping the participants raised {exc!r}")

    async def _leaked(self) -> list[str]:
        me = anyio.get_current_task().id
        return sorted(
            name for tid, name in running_task_names().items() if tid not in self._baseline and tid != me
        )

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self.bridge.close()


# -- the machine's own probe agents ------------------------------------------------------------------


def _probe_axons() -> list[Axon]:
    async def echo(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        return {"echo": input}

    async def slow(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        await anyio.sleep(1.0)  # allowed: a slow Neuron (virtual time)
        return {"slow": True}

    async def scribe(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        entry = {"content": f"written by {ctx.trace_id}", "tags": [ctx.trace_id]}
        await ctx.imprint(engram_id="mem", op="upsert", entry=entry, merge_key="shared", await_ack=True)
        await anyio.sleep(0.5)  # allowed: work after the write (virtual time)
        return {"wrote": True}

    async def asker(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        if "clarification" in input or "permission" in input:
            return {"answered": True}
        if ctx.task.meta.get("attempt", 0) % 2:
            return {"__permission__": True, "action": "write"}
        return {"__clarification__": True, "question": "which one?"}

    async def flaky(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
        if ctx.task.meta.get("attempt", 0) == 0:
            return {"__error__": True, "code": "BUSY", "message": "try again", "recoverable": True}
        return {"steady": True}

    return [
        Axon("echo", echo),
        Axon("slow", slow),
        Axon("scribe", scribe),
        Axon("asker", asker),
        Axon("flaky", flaky),
    ]
