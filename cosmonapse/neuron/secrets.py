"""A Neuron's own credentials, and scrubbing them from everything it returns, emits or raises.

A provider (or a proxy in front of it) may echo the API key back: in an error
body, in the answer text, in the raw JSON the source returns as ``meta``, token
by token in a stream.  ``Secrets`` replaces every occurrence with ``***``:

* ``redact(text)`` on one string; it runs *before* any truncation, so a cut
  cannot leave half a key behind;
* ``scrub(value)`` through dicts, lists and tuples (keys too);
* ``stream()`` for text that arrives in pieces: a key split across two
  THOUGHT_DELTAs is caught because the tail that could be the start of a key is
  held back until the next piece (or the end) decides;
* ``scrub_error(exc)`` an exception whose text carries a secret becomes a
  ``NeuronError`` with the text redacted (type name kept, no chained cause).

Values shorter than 4 characters are not treated as secrets (they would redact
ordinary text).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import NeuronError

__all__ = ["MASK", "Secrets", "StreamRedactor"]

MASK = "***"
_MIN_LEN = 4


class Secrets:
    """The values one Neuron must never leak."""

    __slots__ = ("_values",)

    def __init__(self, values: Sequence[str | None] = ()) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        found = {v for v in values if isinstance(v, str) and len(v) >= _MIN_LEN}
        self._values = tuple(sorted(found, key=len, reverse=True))

    def __bool__(self) -> bool:
        return bool(self._values)

    def __repr__(self) -> str:
        return f"<Secrets: {len(self._values)}>"

    def redact(self, text: str) -> str:
        for secret in self._values:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def scrub(self, value: Any) -> Any:
        """*value* with every secret replaced, through dicts, lists and tuples."""
        if not self._values:
            return value
        return self._scrub(value)

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {self._scrub(k): self._scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._scrub(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self._scrub(v) for v in value)
        return value

    def stream(self) -> StreamRedactor:
        return StreamRedactor(self)

    def scrub_error(self, exc: BaseException) -> BaseException:
        """*exc* itself if its text is clean, else a ``NeuronError`` saying the same, redacted."""
        text = str(exc)
        clean = self.redact(text)
        if clean == text:
            return exc
        if isinstance(exc, NeuronError):
            return _same_kind(exc, clean)
        return NeuronError(f"{type(exc).__name__}: {clean}")

    def held_prefix(self, text: str) -> int:
        """Length of the longest end of *text* that is the start of a secret (not a whole one)."""
        best = 0
        for secret in self._values:
            for k in range(min(len(secret) - 1, len(text)), best, -1):
                if text.endswith(secret[:k]):
                    best = k
                    break
        return best


def _same_kind(exc: NeuronError, message: str) -> NeuronError:
    """A NeuronError of *exc*'s class with *message* (its ``status``, if any, kept)."""
    clone = NeuronError.__new__(type(exc))
    Exception.__init__(clone, message)
    if hasattr(exc, "status"):  # NeuronHTTPError
        clone.status = exc.status  # type: ignore[attr-defined]
    return clone


class StreamRedactor:
    """Redacts text that arrives in pieces; ``feed`` returns what is safe to show now."""

    __slots__ = ("_held", "_secrets")

    def __init__(self, secrets: Secrets) -> None:
        self._secrets = secrets
        self._held = ""

    def feed(self, piece: str) -> str:
        if not self._secrets:
            return piece
        text = self._secrets.redact(self._held + piece)
        keep = self._secrets.held_prefix(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """The end of the stream: what was held back (masked when it is most of a secret)."""
        held, self._held = self._held, ""
        return MASK if len(held) >= _MIN_LEN else held
