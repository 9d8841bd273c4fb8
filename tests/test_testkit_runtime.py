"""Our own runtime under the ProtocolMachine: the probe agents, the Engram, faults, on both backends.

Where the runtime breaks an invariant today the test stays, marked
``xfail(strict=True)`` with the issue that will fix it: the day it is fixed,
the xfail fails and must be removed.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from cosmonapse import Axon, NeuronContext
from cosmonapse.testing import ProtocolMachine

BACKENDS = ["asyncio", "trio"]


def budget(examples: int, steps: int = 10) -> settings:
    # derandomize: the same examples on every run, so an xfail(strict) is decided the same way each time
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        derandomize=True,
        report_multiple_bugs=False,
        suppress_health_check=[HealthCheck.too_slow],
    )


class Runtime(ProtocolMachine):
    """The probe agents (echo, slow, asker, flaky, scribe + Engram) on our Dendrites."""

    probes = True


class Core(Runtime):
    targets = ("echo", "slow", "asker", "flaky")
    faults_enabled = False


class LossyBus(Runtime):
    """Lost, late and overtaken Signals, and participants cut off and back."""

    targets = ("echo", "slow", "asker", "flaky")
    fault_kinds = ("drop", "delay", "reorder")


class Engram(Runtime):
    targets = ("scribe",)
    faults_enabled = False


class Redelivery(Runtime):
    targets = ("echo",)
    fault_kinds = ("duplicate",)
    fault_types = ("TASK",)


class Abandoned(Runtime):
    targets = ("slow",)
    faults_enabled = False
    check_abandoned_calls = True


class OrchestratorOutage(Runtime):
    targets = ("echo",)
    fault_kinds = ()
    disconnect_orchestrator = True
    disconnectable = ("orchestrator",)


async def shielded(input: dict[str, Any], ctx: NeuronContext) -> dict[str, Any]:
    """A Neuron that finishes a critical section even when its trace is STOPped."""
    with anyio.CancelScope(shield=True):
        await anyio.sleep(0.5)  # allowed: the critical section's work (virtual time in the machine)
    return {"finished": True}


class ShieldedNeuron(ProtocolMachine):
    faults_enabled = False

    def axons(self) -> list[Axon]:
        return [Axon("shielded", shielded)]


def run(machine: type[ProtocolMachine], backend: str, examples: int, steps: int = 10) -> None:
    run_state_machine_as_test(machine.on(backend), settings=budget(examples, steps))


@pytest.mark.parametrize("backend", BACKENDS)
def test_dispatch_stop_retry_and_answers_keep_every_invariant(backend: str) -> None:
    run(Core, backend, 60)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_more_examples_with_a_lossy_bus(backend: str) -> None:
    run(LossyBus, backend, 300, steps=15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_lossy_bus(backend: str) -> None:
    run(LossyBus, backend, 60)


@pytest.mark.parametrize("backend", BACKENDS)
def test_engram_rollback_never_touches_another_trace(backend: str) -> None:
    run(Engram, backend, 100)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_duplicated_task_still_gets_one_terminal(backend: str) -> None:
    run(Redelivery, backend, 100)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_call_that_gives_up_stops_its_trace(backend: str) -> None:
    run(Abandoned, backend, 100)


@pytest.mark.parametrize("backend", BACKENDS)
def test_calls_keep_their_deadline_while_the_orchestrator_is_cut_off(backend: str) -> None:
    run(OrchestratorOutage, backend, 100)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stopped_neuron_that_finishes_anyway_is_silenced(backend: str) -> None:
    run(ShieldedNeuron, backend, 100)
