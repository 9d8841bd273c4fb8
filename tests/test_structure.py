"""The shape of the code, checked: layers, no import cycles, every task has an owner.

* **Layers.**  protocol → buses → participants → orchestration → faces: a
  module imports only from its own layer or below (``LAYERS``; a module no
  prefix covers fails the test until someone decides where it belongs).
* **No cycles**, counting every import — function-local ones and those under
  ``if TYPE_CHECKING:`` included — and the package ``__init__`` a submodule
  import runs.
* **No stray tasks or threads**: ``create_task``, ``ensure_future``,
  ``Thread(...)``, ``spawn_system_task``, ``start_new_thread`` appear only at
  the sites listed in ``ALLOWED_SPAWNS``, each marked ``# allowed: why`` in
  the code.  A new one fails here until it is marked and listed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cosmonapse", "cosmonapse_sync")

PROTOCOL, BUSES, PARTICIPANTS, ORCHESTRATION, FACES = range(1, 6)
NAMES = {1: "protocol", 2: "buses", 3: "participants", 4: "orchestration", 5: "faces"}

#: Module prefix → layer; the longest matching prefix wins.
LAYERS: dict[str, int] = {
    # 1. protocol: the envelope, ids, codec, subjects, errors, and the concurrency primitives
    #    (a resource's root task, the runner pool, timers) that use nothing else of ours
    "cosmonapse.signal": PROTOCOL,
    "cosmonapse.ids": PROTOCOL,
    "cosmonapse.codec": PROTOCOL,
    "cosmonapse.subjects": PROTOCOL,
    "cosmonapse.envelope": PROTOCOL,
    "cosmonapse.errors": PROTOCOL,
    "cosmonapse.taskhost": PROTOCOL,
    "cosmonapse.__about__": PROTOCOL,
    "cosmonapse.runners": PROTOCOL,
    "cosmonapse.deadlines": PROTOCOL,
    "cosmonapse.prims": PROTOCOL,
    "cosmonapse.clock": PROTOCOL,
    # ... and OpenTelemetry (spans, metrics, the trace context in meta and in log records): every
    #    layer reports through it, so it sits at the bottom and imports only the envelope
    "cosmonapse.telemetry": PROTOCOL,
    # 2. buses
    "cosmonapse.synapse": BUSES,
    "cosmonapse.synapse.aiostream": BUSES,  # the asyncio socket stream under the dev bus and NATS
    # 3. participants: the Neuron contract and what it is handed (context), Neuron sources,
    #    Engrams and their serving, registry stores
    "cosmonapse.axon": PARTICIPANTS,
    "cosmonapse.context": PARTICIPANTS,
    "cosmonapse.neuron": PARTICIPANTS,
    "cosmonapse.engram": PARTICIPANTS,
    "cosmonapse.registry": PARTICIPANTS,
    "cosmonapse.storage": PARTICIPANTS,
    "cosmonapse.sqlite_db": PARTICIPANTS,
    "cosmonapse.postgres_db": PARTICIPANTS,
    "cosmonapse.tombstone_sql": PARTICIPANTS,
    # 4. orchestration: the core, its services and the Dendrite
    "cosmonapse.core": ORCHESTRATION,
    "cosmonapse.dendrite": ORCHESTRATION,
    "cosmonapse.hosting": ORCHESTRATION,
    "cosmonapse.handlers": ORCHESTRATION,
    "cosmonapse.lifecycle": ORCHESTRATION,
    "cosmonapse.pathway": ORCHESTRATION,
    "cosmonapse.ops": ORCHESTRATION,
    "cosmonapse.dispatching": ORCHESTRATION,
    "cosmonapse.retry": ORCHESTRATION,
    "cosmonapse.stops": ORCHESTRATION,
    "cosmonapse.bidding": ORCHESTRATION,
    "cosmonapse.decisions": ORCHESTRATION,
    "cosmonapse.emitters": ORCHESTRATION,
    "cosmonapse.engram.client": ORCHESTRATION,
    "cosmonapse.registry.mirror": ORCHESTRATION,
    # 5. faces
    "cosmonapse.__main__": FACES,
    "cosmonapse.cli": FACES,
    "cosmonapse.demo": FACES,
    "cosmonapse.testing": FACES,
    "cosmonapse.prism": FACES,
    "cosmonapse_sync": FACES,
}

#: (file, spawning call) → why it is allowed.  Each site also carries ``# allowed:`` in the code.
ALLOWED_SPAWNS: dict[tuple[str, str], str] = {
    ("cosmonapse/taskhost.py", "create_task"): "a resource's root task on asyncio, joined by aclose()",
    ("cosmonapse/taskhost.py", "spawn_system_task"): "a resource's root task on trio, joined by aclose()",
    ("cosmonapse_sync/portal.py", "Thread"): "the facade's portal thread, joined by close()",
    ("cosmonapse_sync/portal.py", "create_task"): "a portal call's task, tracked and joined at exit",
    ("cosmonapse_sync/workers.py", "Thread"): "the facade's worker threads, joined by close()",
    ("cosmonapse/cli/synapse.py", "Thread"): (
        "`cosmo synapse start --tail`'s stdout writer: a daemon, since a write to a pipe nobody reads"
        " never returns and must hold up neither the bus nor the process's exit"
    ),
}
SPAWNERS = frozenset({"create_task", "ensure_future", "Thread", "spawn_system_task", "start_new_thread"})


def sources() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path


MODULES = dict(sources())


#: Modules placed by exact name only (a prefix would cover every module of the package).
EXACT = {"cosmonapse": FACES}  # the package itself re-exports everything


def layer_of(module: str) -> int:
    if module in EXACT:
        return EXACT[module]
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)
    if best is None:
        raise LookupError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")
    return LAYERS[best]


def imports_of(module: str, path: Path) -> set[str]:
    """Every module of ours *module* imports, anywhere in the file."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            if target in MODULES:
                found.add(target)
            # importing a.b.c runs the package a.b's __init__ first (the roots excepted: every
            # module of a package runs its root, and the root is initialised first anyway)
            parent = target.rpartition(".")[0]
            while parent and parent not in PACKAGES and parent in MODULES:
                if not module.startswith(parent + ".") and target in MODULES:
                    found.add(parent)
                parent = parent.rpartition(".")[0]
    found.discard(module)
    return found


GRAPH = {module: imports_of(module, path) for module, path in MODULES.items()}


def test_every_module_has_a_layer() -> None:
    missing = []
    for module in MODULES:
        try:
            layer_of(module)
        except LookupError as exc:
            missing.append(str(exc))
    assert not missing, "\n".join(missing)


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward = [
        f"{src} ({NAMES[layer_of(src)]}) imports {dst} ({NAMES[layer_of(dst)]})"
        for src, targets in GRAPH.items()
        for dst in sorted(targets)
        if layer_of(dst) > layer_of(src)
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_no_import_cycles_type_checking_and_local_imports_included() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_the_checks_themselves_catch_a_cycle_and_an_upward_import() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("cosmonapse.engram.client") > layer_of("cosmonapse.engram.base")
    assert layer_of("cosmonapse.synapse.nats") == BUSES
    with pytest.raises(LookupError):
        layer_of("cosmonapse.somewhere_new")


def spawn_sites() -> Iterator[tuple[str, str, int, str]]:
    for _module, path in MODULES.items():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in SPAWNERS:
                first, last = node.lineno, node.end_lineno or node.lineno
                text = "\n".join(lines[max(0, first - 2) : last])  # the call and the line above it
                yield str(path.relative_to(ROOT)), name, first, text


def test_tasks_and_threads_are_started_only_where_listed_and_marked() -> None:
    unmarked, unlisted = [], []
    for rel, name, line, text in spawn_sites():
        if "# allowed:" not in text:
            unmarked.append(f"{rel}:{line}: {name}(...) without an `# allowed: why` marker")
        elif (rel, name) not in ALLOWED_SPAWNS:
            unlisted.append(f"{rel}:{line}: {name}(...) is marked but not in ALLOWED_SPAWNS")
    assert not unmarked and not unlisted, "\n".join(unmarked + unlisted)


def test_every_listed_spawn_site_still_exists() -> None:
    present = {(rel, name) for rel, name, _, _ in spawn_sites()}
    assert set(ALLOWED_SPAWNS) <= present, set(ALLOWED_SPAWNS) - present


def test_nothing_reads_the_shared_design_folder_at_run_or_test_time() -> None:
    needles = ("/".join(("", "work", "shared")), "/".join(("..", "shared")))
    offenders = [
        str(path.relative_to(ROOT))
        for folder in (*PACKAGES, "tests", "tools", "bench", "examples")
        for path in (ROOT / folder).rglob("*.py")
        if any(needle in path.read_text() for needle in needles)
    ]
    assert not offenders, offenders
