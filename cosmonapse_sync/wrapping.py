"""Generate blocking methods from an async class, so the two APIs cannot drift apart.

The facade classes are filled in at import time from the public coroutine
functions of ``Dendrite``, ``Pathway`` and ``NeuronContext``: a method added to
the async API (say by the resilience work) gets its blocking twin with the same
name and parameters without anyone writing it.  Methods a facade defines itself
(they need more than a plain round trip) are left alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["async_methods", "install_properties", "install_sync_methods", "public_sync_functions"]

Invoker = Callable[[Any, str, tuple[Any, ...], dict[str, Any]], Any]


def async_methods(cls: type) -> Iterator[tuple[str, Callable[..., Any]]]:
    """Public coroutine functions of *cls* (inherited ones included), by name."""
    for name in sorted(dir(cls)):
        if name.startswith("_"):
            continue
        fn = inspect.getattr_static(cls, name)
        if inspect.iscoroutinefunction(fn):
            yield name, fn


def public_sync_functions(
    cls: type, *, skip_from: tuple[type, ...] = ()
) -> Iterator[tuple[str, Callable[..., Any]]]:
    """Public plain functions defined on *cls* or its bases, except those of ``skip_from``."""
    skipped = {name for base in skip_from for name in vars(base)}
    for name in sorted(dir(cls)):
        if name.startswith("_") or name in skipped:
            continue
        fn = inspect.getattr_static(cls, name)
        if inspect.isfunction(fn) and not inspect.iscoroutinefunction(fn):
            yield name, fn


def _blocking(name: str, original: Callable[..., Any], invoke: Invoker, kind: str) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return invoke(self, name, args, kwargs)

    method.__name__ = name
    method.__qualname__ = name
    method.__doc__ = f"Blocking twin of the {kind} ``{name}``.\n\n{inspect.getdoc(original) or ''}".strip()
    method.__signature__ = inspect.signature(original)  # type: ignore[attr-defined]
    return method


def install_sync_methods(
    target: type, source: type, invoke: Invoker, *, also_sync: bool = False
) -> list[str]:
    """Give *target* a blocking method for each public async method of *source* it lacks.

    With ``also_sync``, plain public methods of *source* get one too (they touch loop
    state, so they must run on the loop thread).  Returns the names installed.
    """
    installed = []
    candidates = list(async_methods(source))
    if also_sync:
        candidates += list(public_sync_functions(source))
    for name, fn in candidates:
        if any(name in vars(klass) for klass in target.__mro__ if klass is not object):
            continue
        kind = "coroutine" if inspect.iscoroutinefunction(fn) else "loop-thread method"
        setattr(target, name, _blocking(name, fn, invoke, kind))
        installed.append(name)
    return installed


def install_properties(target: type, source: type, read: Callable[[Any, str], Any]) -> list[str]:
    """Give *target* a read-only property for each public property of *source* it lacks."""
    installed = []
    for name in sorted(dir(source)):
        prop = inspect.getattr_static(source, name)
        if name.startswith("_") or not isinstance(prop, property):
            continue
        if any(name in vars(klass) for klass in target.__mro__ if klass is not object):
            continue
        setattr(target, name, property(lambda self, _n=name: read(self, _n), doc=prop.__doc__))
        installed.append(name)
    return installed
