"""Write the blocking twins of the async classes: ``python tools/gen_sync.py [--check]``.

The facade's API is the async API, blocking.  Rather than attaching methods at
import time (invisible to type checkers and IDEs), this script reads the async
classes — ``Dendrite``, ``Pathway``, ``NeuronContext`` — and writes one module
of plain, checked-in source per class (``_generated_*.py``): every public
coroutine method and property gets a twin with the same parameters, the same
defaults, the same docstring and the same return type, except that a type the
facade wraps (``Pathway`` → ``SyncPathway``) is translated wherever it appears.

A twin forwards its arguments to ``self._invoke(name, args, kwargs)`` (the
facade runs the coroutine on its portal) and a property to ``self._read(name)``.
Methods the facade writes by hand (``FACADE_OWN``) are left out.

``--check`` exits 1 if the files on disk differ from what would be written;
the test suite runs it, so the twins cannot drift from the async API.
"""

from __future__ import annotations

import ast
import inspect
import sys
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

from cosmonapse.context import NeuronContext
from cosmonapse.dendrite import Dendrite
from cosmonapse.handlers import HandlerDecorators
from cosmonapse.lifecycle import LifecycleHooks
from cosmonapse.pathway import Pathway

__all__ = ["TARGETS", "Target", "main", "render"]

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "cosmonapse_sync"

#: Async types the facade hands out wrapped: annotation names are rewritten, results wrapped.
TRANSLATE = {"Pathway": ("SyncPathway", "cosmonapse_sync.pathway")}


@attrs.frozen
class Target:
    """One async class and the module its twins go to."""

    source: type
    base_name: str
    filename: str
    #: Names the facade class defines itself (or inherits from a shared base).
    facade_own: frozenset[str]
    #: Also twin plain (non-coroutine) public methods: they touch loop state.
    plain_methods: bool = False


SHARED_BASES = (HandlerDecorators, LifecycleHooks)
BUILTIN_NAMES = frozenset(
    {"None", "bool", "bytes", "dict", "float", "int", "list", "object", "set", "str", "tuple", "type"}
)

TARGETS = (
    Target(
        Dendrite,
        "DendriteTwins",
        "_generated_dendrite.py",
        frozenset(
            {
                "start",
                "stop",
                "dispatch_and_wait",
                "attach_axon",
                "add_axon",
                "detach_axon",
                "attach_engram",
                "detach_engram",
                "subscribe",
                "unsubscribe",
                "role",
                "running",
                "axons",
                "engrams",
                "capabilities",
            }
        ),
        plain_methods=True,
    ),
    Target(Pathway, "PathwayTwins", "_generated_pathway.py", frozenset({"close", "closed"})),
    Target(NeuronContext, "NeuronContextTwins", "_generated_context.py", frozenset()),
)


def _members(target: Target) -> Iterator[tuple[str, Any]]:
    """Public methods and properties of the source class, in source order, own names left out."""
    skipped = {name for base in SHARED_BASES for name in vars(base)}
    seen: set[str] = set()
    for klass in target.source.__mro__:
        if klass is object or klass in SHARED_BASES or klass is list:
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or name in seen or name in skipped or name in target.facade_own:
                continue
            seen.add(name)
            if (
                isinstance(value, property)
                or inspect.iscoroutinefunction(value)
                or (target.plain_methods and inspect.isfunction(value))
            ):
                yield name, value


class _Imports:
    """The names the generated annotations use, imported from the module that defines each."""

    def __init__(self) -> None:
        self.by_module: dict[str, set[str]] = {}

    def need(self, name: str, scope: dict[str, Any]) -> None:
        if name in BUILTIN_NAMES:
            return
        if name in TRANSLATE:
            sync_name, module = TRANSLATE[name]
            self.by_module.setdefault(module, set()).add(sync_name)
            return
        obj = scope[name]
        if name in ("Any", "Literal") and obj is getattr(typing, name):
            self.by_module.setdefault("typing", set()).add(name)
            return
        self.by_module.setdefault(_defining_module(name, obj, scope), set()).add(name)

    def render(self, own_module: str) -> str:
        """Standard library first, then ours, as isort would have it."""
        stdlib, ours = [], []
        for module in sorted(self.by_module):
            if module == own_module:
                continue
            line = f"from {module} import {', '.join(sorted(self.by_module[module]))}"
            (ours if module.startswith("cosmonapse") else stdlib).append(line)
        return "\n".join([*stdlib, "", *ours])


def _defining_module(name: str, obj: Any, scope: dict[str, Any]) -> str:
    """Where *name* is defined (not merely imported): classes know; aliases are looked up."""
    module = getattr(obj, "__module__", None)
    if inspect.isclass(obj) and module:
        return str(module)
    for mod_name, mod in sorted(sys.modules.items()):
        if not mod_name.startswith("cosmonapse") or getattr(mod, name, None) is not obj:
            continue
        source = inspect.getsource(mod)
        for node in ast.parse(source).body:
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = list(node.targets)
            elif isinstance(node, ast.AnnAssign):
                targets = [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return mod_name
    raise LookupError(f"cannot tell which module defines {name!r}")


def _annotation(text: str, scope: dict[str, Any], imports: _Imports) -> str:
    """*text* with translated names, its names recorded for import."""
    tree = ast.parse(text, mode="eval")
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            imports.need(node.id, scope)
            if node.id in TRANSLATE:
                node.id = TRANSLATE[node.id][0]
    return ast.unparse(tree)


def _docstring(kind: str, owner: str, name: str, original: Callable[..., Any] | property) -> list[str]:
    doc = inspect.getdoc(original) or ""
    head = f"Blocking twin of the {kind} ``{owner}.{name}``."
    body = [head] if not doc else [head, "", *doc.splitlines()]
    if len(body) == 1:
        return [f'"""{head}"""']
    return ['"""' + body[0], *body[1:], '"""']


def _method(owner: str, name: str, fn: Callable[..., Any], imports: _Imports) -> list[str]:
    sig = inspect.signature(fn)
    scope = fn.__globals__
    params: list[str] = []
    args: list[str] = []
    kwargs: list[str] = []
    star_seen = False
    for p in list(sig.parameters.values())[1:]:
        ann = f": {_annotation(p.annotation, scope, imports)}" if p.annotation is not p.empty else ""
        default = "" if p.default is p.empty else f" = {p.default!r}"
        if p.kind is p.KEYWORD_ONLY and not star_seen:
            params.append("*")
            star_seen = True
        if p.kind is p.VAR_POSITIONAL:
            params.append(f"*{p.name}{ann}")
            star_seen = True
            args.append(f"*{p.name}")
        elif p.kind is p.VAR_KEYWORD:
            params.append(f"**{p.name}{ann}")
            kwargs.append(f"**{p.name}")
        elif p.kind is p.POSITIONAL_ONLY:
            raise NotImplementedError(f"{owner}.{name}: positional-only parameters are not forwarded")
        else:
            params.append(f"{p.name}{ann}{default}")
            kwargs.append(f"{p.name!r}: {p.name}")
    ret = (
        _annotation(sig.return_annotation, scope, imports)
        if sig.return_annotation is not sig.empty
        else "Any"
    )
    kind = "coroutine" if inspect.iscoroutinefunction(fn) else "method"
    args_text = f"({', '.join(args)},)" if args else "()"
    lines = [f"    def {name}(self, {', '.join(params)}) -> {ret}:".replace("(self, )", "(self)")]
    lines += [f"        {line}" if line else "" for line in _docstring(kind, owner, name, fn)]
    lines.append(f"        return self._invoke({name!r}, {args_text}, {{{', '.join(kwargs)}}})")
    return lines


def _property(owner: str, name: str, prop: property, imports: _Imports) -> list[str]:
    fget = prop.fget
    assert fget is not None
    ret = fget.__annotations__.get("return", "Any")
    ret = _annotation(ret, fget.__globals__, imports) if isinstance(ret, str) else "Any"
    lines = ["    @property", f"    def {name}(self) -> {ret}:"]
    lines += [f"        {line}" if line else "" for line in _docstring("property", owner, name, prop)]
    lines.append(f"        return self._read({name!r})")
    return lines


def render(target: Target) -> str:
    """The source of one generated module."""
    imports = _Imports()
    owner = target.source.__name__
    body: list[str] = []
    for name, member in _members(target):
        body.append("")
        if isinstance(member, property):
            body += _property(owner, name, member, imports)
        else:
            body += _method(owner, name, member, imports)
    module = f"cosmonapse_sync.{target.filename.removesuffix('.py')}"
    imports.by_module.setdefault("typing", set()).add("Any")
    header = [
        f'"""Blocking twins of ``{target.source.__module__}.{owner}``: GENERATED by',
        "``python tools/gen_sync.py`` — do not edit; the test suite checks it is current.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        imports.render(module),
        "",
        f'__all__ = ["{target.base_name}"]',
        "",
        "",
        f"class {target.base_name}:",
        f'    """Every public coroutine and property of ``{owner}``, blocking; the facade runs them."""',
        "",
        "    __slots__ = ()",
        "",
        "    def _invoke(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:",
        "        raise NotImplementedError",
        "",
        "    def _read(self, name: str) -> Any:",
        "        raise NotImplementedError",
    ]
    return "\n".join(header + body) + "\n"


def _formatted(source: str, path: Path) -> str:
    """Formatted like the rest of the tree (ruff), so the check is byte for byte."""
    import shutil
    import subprocess

    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    done = subprocess.run(
        [ruff, "format", "--stdin-filename", str(path), "-"],
        input=source,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return done.stdout


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for target in TARGETS:
        path = OUT / target.filename
        text = _formatted(render(target), path)
        current = path.read_text() if path.exists() else None
        if current != text:
            stale.append(path.name)
            if not check:
                path.write_text(text)
    if check and stale:
        print(f"out of date: {', '.join(stale)}; run python tools/gen_sync.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
