"""The pytest plugin installed with cosmonapse (entry point ``pytest11``: ``cosmonapse``).

Cheap to load: this module imports pytest and nothing of ours until a fixture
is used.  Every fixture is named ``cosmo_*``, so none clashes with a project's
own; nothing here changes a test that does not ask for it.

Fixtures
    ``cosmo_bus``        a :class:`~.bus.TestSynapse`, active for the test: any
                         ``connect_synapse(url)`` returns a connection to it
    ``cosmo_namespace``  the namespace the fixtures below use ("test"; override it)
    ``cosmo_axons``      the Axons ``cosmo_pair``'s worker hosts ([]; override it)
    ``cosmo_synapse``    a connected connection to ``cosmo_bus`` (async)
    ``cosmo_pair``       a worker Dendrite hosting ``cosmo_axons`` and an orchestrator (async)
    ``cosmo_recorder``   a SignalRecorder of every Signal on the namespace (async)
    ``cosmo_no_leaks``   fails the test if it leaves tasks or busy threads behind (async)
    ``cosmo_fake_llm``   a fresh :class:`~.fakellm.FakeLLM`

Options
    ``--cosmo-backends=trio`` (or ini ``cosmo_backends``) keeps only the async tests
    of those backends (anyio's plugin runs them on every installed backend, asyncio
    and trio; a conftest's own ``anyio_backend`` parametrisation is narrowed the same way).
    ``--cosmo-conformance=URL`` (with ``--cosmo-namespace``) adds one test per
    conformance rule, run against the agents on that live bus.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..axon import Axon
    from .bus import InProcessSynapse, TestSynapse
    from .conformance import RuleResult
    from .fakellm import FakeLLM
    from .harness import Cluster, SignalRecorder


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cosmonapse", "cosmonapse test kit")
    group.addoption(
        "--cosmo-backends",
        default=None,
        help="comma-separated anyio backends to run async tests on (asyncio,trio); opt-in",
    )
    parser.addini("cosmo_backends", "anyio backends to run async tests on (asyncio trio)", type="args")
    group.addoption("--cosmo-conformance", metavar="URL", default=None, help="check the agents on this bus")
    group.addoption("--cosmo-namespace", default="dev", help="namespace for --cosmo-conformance (dev)")
    group.addoption(
        "--cosmo-conformance-timeout", type=float, default=5.0, help="seconds to wait for each answer (5)"
    )


_BACKENDS_KEY = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    raw = config.getoption("--cosmo-backends") or ",".join(config.getini("cosmo_backends") or ())
    backends = [b.strip() for b in raw.split(",") if b.strip()]
    unknown = sorted(set(backends) - {"asyncio", "trio"})
    if unknown:
        raise pytest.UsageError(f"--cosmo-backends: unknown backend(s) {unknown}; use asyncio and/or trio")
    config.stash[_BACKENDS_KEY] = backends


# -- conformance as tests ------------------------------------------------------------------------


class ConformanceItem(pytest.Item):
    """One conformance rule, judged on a run shared by every item of the session."""

    def __init__(self, *, rule: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.rule = rule

    def runtest(self) -> None:
        results = _conformance_results(self.config)
        result: RuleResult = results[self.rule]
        if result.outcome == "skip":
            pytest.skip(result.detail)
        if result.outcome != "pass":
            raise AssertionError(f"{self.rule}: {result.detail}")

    def reportinfo(self) -> tuple[str, int | None, str]:
        return ("cosmo-conformance", None, f"conformance: {self.rule}")


_RESULTS_KEY = pytest.StashKey[dict[str, Any]]()


def _conformance_results(config: pytest.Config) -> dict[str, Any]:
    cached = config.stash.get(_RESULTS_KEY, None)
    if cached is None:
        from .conformance import run_conformance_sync

        report = run_conformance_sync(
            str(config.getoption("--cosmo-conformance")),
            str(config.getoption("--cosmo-namespace")),
            timeout_s=float(config.getoption("--cosmo-conformance-timeout") or 5.0),
        )
        cached = {r.rule: r for r in report.results}
        config.stash[_RESULTS_KEY] = cached
    return cached


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    backends = config.stash.get(_BACKENDS_KEY, [])
    if backends:
        keep: list[pytest.Item] = []
        drop: list[pytest.Item] = []
        for item in items:
            callspec = getattr(item, "callspec", None)
            backend = callspec.params.get("anyio_backend") if callspec is not None else None
            (drop if isinstance(backend, str) and backend not in backends else keep).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
    if not config.getoption("--cosmo-conformance", None):
        return
    from .conformance import RULES

    for rule in RULES:
        items.append(ConformanceItem.from_parent(session, name=f"cosmo-conformance[{rule}]", rule=rule))


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def cosmo_bus() -> Iterator[TestSynapse]:
    """A TestSynapse active for the test: ``connect_synapse(any URL)`` meets on it."""
    from .bus import TestSynapse

    with TestSynapse() as bus:
        yield bus


@pytest.fixture
def cosmo_namespace() -> str:
    return "test"


@pytest.fixture
def cosmo_axons() -> list[Axon]:
    """Override to give ``cosmo_pair``'s worker its Axons."""
    return []


@pytest.fixture
async def cosmo_synapse(cosmo_bus: TestSynapse) -> AsyncIterator[InProcessSynapse]:
    async with cosmo_bus.synapse("test") as synapse:
        yield synapse  # type: ignore[misc]


@pytest.fixture
async def cosmo_pair(
    cosmo_bus: TestSynapse, cosmo_axons: list[Axon], cosmo_namespace: str
) -> AsyncIterator[Cluster]:
    """``.worker`` (hosting ``cosmo_axons``), ``.orchestrator``, ``.synapse``; stopped after the test."""
    from .harness import memory_cluster

    async with (
        cosmo_bus.synapse("pair") as synapse,
        memory_cluster(
            axons=cosmo_axons,
            namespace=cosmo_namespace,
            synapse=synapse,
            worker_kw={"heartbeat_s": 0},
            orchestrator_kw={"heartbeat_s": 0},
        ) as cluster,
    ):
        yield cluster


@pytest.fixture
async def cosmo_recorder(cosmo_bus: TestSynapse, cosmo_namespace: str) -> AsyncIterator[SignalRecorder]:
    """Every Signal on the namespace, in arrival order (``.signals``, ``.wait_for``, ``.assert_trace``)."""
    from .harness import record_namespace

    async with (
        cosmo_bus.synapse("recorder") as synapse,
        record_namespace(synapse, cosmo_namespace) as recorder,
    ):
        yield recorder


@pytest.fixture
async def cosmo_no_leaks() -> AsyncIterator[None]:
    """Fail the test if a task or a busy thread it started is still running at its end."""
    from .leaks import no_leaks

    async with no_leaks():
        yield


@pytest.fixture
def cosmo_fake_llm() -> FakeLLM:
    from .fakellm import FakeLLM

    return FakeLLM()
