"""The public members of an async class, as the sync facade mirrors them.

Used by the tests that check the facade against the async API (whatever the
async classes have when they run).  The twins themselves are generated source:
see ``_codegen``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["async_methods", "public_sync_functions"]


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
