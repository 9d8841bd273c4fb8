"""The golden Signal vectors bundled with cosmonapse (frames a reference 0.1.14 peer writes).

Three files ship inside the package (``cosmonapse/testing/vectors/``):

* ``valid.jsonl`` — one encoded Signal per line; every one must decode and
  re-encode to an equal JSON value.
* ``invalid.jsonl`` — ``{"why": ..., "frame": ...}``: frames that must be rejected.
* ``lenient.jsonl`` — ``{"why": ..., "frame": ...}``: frames that must be accepted
  (missing ``id``/``trace_id``/``ts`` are filled in).

They are read with :mod:`importlib.resources`, so they work from a wheel or a zip.
"""

from __future__ import annotations

import functools
import json
from importlib.resources import files

import attrs

__all__ = ["Vector", "invalid_vectors", "lenient_vectors", "valid_frames", "vector_text"]

_PACKAGE = "cosmonapse.testing"
_FILES = ("valid.jsonl", "invalid.jsonl", "lenient.jsonl")


@attrs.frozen(slots=True)
class Vector:
    """One labelled frame from ``invalid.jsonl`` or ``lenient.jsonl``."""

    why: str
    frame: str

    @property
    def data(self) -> bytes:
        """The frame as the UTF-8 bytes a bus would deliver."""
        return self.frame.encode("utf-8")


def vector_text(name: str) -> str:
    """The raw text of one bundled vector file (``valid.jsonl``, ``invalid.jsonl``, ``lenient.jsonl``)."""
    if name not in _FILES:
        raise ValueError(f"unknown vector file {name!r}; expected one of {', '.join(_FILES)}")
    return files(_PACKAGE).joinpath("vectors", name).read_text(encoding="utf-8")


def _lines(name: str) -> list[str]:
    return [line for line in vector_text(name).splitlines() if line.strip()]


@functools.cache
def valid_frames() -> tuple[str, ...]:
    """Every line of ``valid.jsonl``: one JSON-encoded Signal each."""
    return tuple(_lines("valid.jsonl"))


def _labelled(name: str) -> tuple[Vector, ...]:
    out = []
    for line in _lines(name):
        record = json.loads(line)
        out.append(Vector(why=record["why"], frame=record["frame"]))
    return tuple(out)


@functools.cache
def invalid_vectors() -> tuple[Vector, ...]:
    """Every case of ``invalid.jsonl``: frames a compatible decoder must reject."""
    return _labelled("invalid.jsonl")


@functools.cache
def lenient_vectors() -> tuple[Vector, ...]:
    """Every case of ``lenient.jsonl``: frames a compatible decoder must accept."""
    return _labelled("lenient.jsonl")
