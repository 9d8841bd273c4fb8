"""The blocking API cannot drift from the async one: same names, same parameters.

Checked against whatever the async classes have when the test runs, so methods
added later (retry, STOP, Engram, bidding...) are covered without editing this file.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cosmonapse.context import NeuronContext
from cosmonapse.dendrite import Dendrite
from cosmonapse.pathway import Pathway
from cosmonapse_sync import SyncDendrite, SyncNeuronContext, SyncPathway
from cosmonapse_sync.wrapping import async_methods, public_sync_functions

PAIRS = [(Dendrite, SyncDendrite), (Pathway, SyncPathway), (NeuronContext, SyncNeuronContext)]
#: Lifecycle of the async Dendrite; the facade's start/stop have the same parameters but are not dunders.
ASYNC_ONLY_DUNDERS = {"__aenter__", "__aexit__", "__aiter__", "__anext__"}


def params(fn: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    sig = inspect.signature(fn)
    return [(p.name, p.kind, p.default) for p in sig.parameters.values() if p.name != "self"]


@pytest.mark.parametrize(("aio", "sync"), PAIRS, ids=[s.__name__ for _, s in PAIRS])
def test_every_public_async_method_has_a_blocking_twin_with_the_same_parameters(
    aio: type, sync: type
) -> None:
    names = [name for name, _ in async_methods(aio)]
    assert names, f"{aio.__name__} has no public async methods?"
    for name, fn in async_methods(aio):
        twin = getattr(sync, name, None)
        assert twin is not None, f"{sync.__name__} lacks {name}()"
        assert not inspect.iscoroutinefunction(twin), f"{sync.__name__}.{name} must block, not be async"
        assert params(twin) == params(fn), (
            f"{sync.__name__}.{name}{inspect.signature(twin)} != {inspect.signature(fn)}"
        )


def test_every_public_plain_dendrite_method_exists_on_the_facade() -> None:
    for name, fn in public_sync_functions(Dendrite):
        twin = getattr(SyncDendrite, name, None)
        assert twin is not None, f"SyncDendrite lacks {name}()"
        assert params(twin) == params(fn), name


def test_every_public_property_of_the_dendrite_exists_on_the_facade() -> None:
    props = [n for n, v in inspect.getmembers(Dendrite) if isinstance(v, property) and not n.startswith("_")]
    assert {"role", "running", "axons", "capabilities"} <= set(props)
    for name in props:
        assert hasattr(SyncDendrite, name), name


def test_the_resilience_methods_are_there_when_the_async_ones_are() -> None:
    for name in ("run_with_retry", "stop_trace", "emit_stop", "find_neurons", "recall", "imprint"):
        if hasattr(Dendrite, name):
            assert callable(getattr(SyncDendrite, name))


def test_the_pathway_reads_have_sync_forms() -> None:
    assert {"__iter__", "__next__", "__enter__", "__exit__", "on", "signals"} <= set(dir(SyncPathway))
    assert set(dir(Pathway)) >= ASYNC_ONLY_DUNDERS


def test_the_generated_twins_are_checked_in_and_current() -> None:
    """``tools/gen_sync.py`` writes the twins; regenerating must change nothing."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(root / "tools" / "gen_sync.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout


def test_a_twin_carries_the_signature_docstring_and_translated_return_type() -> None:
    from cosmonapse_sync._generated_dendrite import DendriteTwins

    twin = DendriteTwins.dispatch
    assert inspect.getdoc(twin) is not None
    assert (inspect.getdoc(Dendrite.dispatch) or "") in (inspect.getdoc(twin) or "")
    assert twin.__annotations__["return"] == "SyncPathway"  # Pathway, translated
    assert DendriteTwins.open_pathways.__annotations__["return"] == "list[SyncPathway]"
    assert params(twin) == params(Dendrite.dispatch)
