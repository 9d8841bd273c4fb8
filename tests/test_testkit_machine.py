"""ProtocolMachine catches deliberately broken agents, shrunk to short readable examples, on both backends.

Two of the broken agents are written without our SDK (raw Signals on their own
connection, as a peer in another language would be); one is an ordinary Axon.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from cosmonapse import Axon, Directed, NeuronContext, Signal, SignalType, SynapseError
from cosmonapse.subjects import subject_for
from cosmonapse.testing import ProtocolMachine, TestSynapseHub

T = SignalType
BACKENDS = ["asyncio", "trio"]
FAST = settings(
    max_examples=200,
    stateful_step_count=8,
    deadline=None,
    derandomize=True,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow],
)


class RawAgent:
    """A worker written by hand against the bus: REGISTER, then answer TASKs for ``neuron``."""

    def __init__(self, neuron: str, namespace: str) -> None:
        self.neuron = neuron
        self.namespace = namespace
        self.previous_task: Signal | None = None

    async def start(self, bus: TestSynapseHub, stack: AsyncExitStack) -> None:
        self.conn = bus.synapse(self.neuron)
        await stack.enter_async_context(self.conn)
        self.tg: TaskGroup = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(self.tg.cancel_scope.cancel)
        await self.conn.subscribe(
            [subject_for(self.namespace, T.TASK), subject_for(self.namespace, T.STOP)], self.on_signal
        )
        await self.publish(
            Signal(
                type=T.REGISTER,
                directed=Directed(self.neuron, "neuron", ()),
                payload={"role": "neuron", "capabilities": []},
            )
        )

    async def publish(self, sig: Signal) -> None:
        await self.conn.publish(subject_for(self.namespace, sig.type), sig)

    def reply(self, task: Signal, parent_id: str | None) -> Signal:
        return Signal(
            type=T.AGENT_OUTPUT,
            trace_id=task.trace_id,
            parent_id=parent_id,
            directed=Directed(self.neuron),
            payload={"output": {"done": True}},
        )

    async def on_signal(self, sig: Signal) -> None:
        if sig.type is T.TASK and sig.neuron == self.neuron:
            await self.on_task(sig)

    async def on_task(self, task: Signal) -> None:
        raise NotImplementedError


class IgnoresStop(RawAgent):
    """Works for half a second, then replies — whether or not its trace was STOPped meanwhile."""

    async def on_task(self, task: Signal) -> None:
        async def work() -> None:
            await anyio.sleep(0.5)  # allowed: the broken agent's work, not a wait for another task
            try:
                await self.publish(self.reply(task, task.id))
            except SynapseError:
                pass  # cut off from the bus: the reply is lost

        self.tg.start_soon(work)


class WrongParent(RawAgent):
    """Replies at once, but parents its reply to the TASK it handled before (a stale variable)."""

    async def on_task(self, task: Signal) -> None:
        previous, self.previous_task = self.previous_task, task
        await self.publish(self.reply(task, previous.id if previous else None))


async def two_terminals(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
    """Announces a FINAL draft itself, then fails: FINAL and ERROR on one trace."""
    await ctx.emit(T.FINAL, {"result": "draft"})
    return {"__error__": True, "code": "SECOND_THOUGHTS", "message": "never mind"}


class TwoTerminalsMachine(ProtocolMachine):
    def axons(self) -> list[Axon]:
        return [Axon("indecisive", two_terminals)]


class IgnoresStopMachine(ProtocolMachine):
    async def start_agents(self, bus: TestSynapseHub, stack: AsyncExitStack) -> None:
        await IgnoresStop("stubborn", self.namespace).start(bus, stack)


class WrongParentMachine(ProtocolMachine):
    async def start_agents(self, bus: TestSynapseHub, stack: AsyncExitStack) -> None:
        await WrongParent("confused", self.namespace).start(bus, stack)


def shrunk_steps(exc: BaseException) -> list[str]:
    """The rule calls of Hypothesis's falsifying example (invariant checks and teardown left out)."""
    notes = "\n".join(getattr(exc, "__notes__", ()))
    return [
        line.strip()
        for line in notes.splitlines()
        if "state." in line and "protocol_holds" not in line and "teardown" not in line
    ]


CASES = [
    (TwoTerminalsMachine, "[one terminal]", 1),
    (IgnoresStopMachine, "[nothing after STOP]", 4),
    (WrongParentMachine, "[reply parent]", 1),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("machine", "invariant", "steps"), CASES, ids=lambda v: getattr(v, "__name__", None))
def test_the_machine_catches_a_broken_agent(
    machine: type[ProtocolMachine],
    invariant: str,
    steps: int,
    backend: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(AssertionError) as caught:
        run_state_machine_as_test(machine.on(backend), settings=FAST)
    message = str(caught.value)
    assert invariant in message, message
    example = shrunk_steps(caught.value)
    assert example, "Hypothesis printed the failing steps"
    assert len(example) <= steps, "\n".join(example)
    with capsys.disabled():
        print(f"\n--- {machine.__name__} on {backend}: {message.splitlines()[1].strip()}")
        print("\n".join(f"    {line}" for line in example))
