"""Parsers for streamed answers: Server-Sent Events and newline-delimited JSON.

Pure functions over async iterators of text lines, so they can be tested
without a network and reused by every source (OpenAI-compatible and TGI and
Anthropic speak SSE; Ollama speaks NDJSON).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any

import attrs
import orjson

__all__ = ["SseEvent", "iter_ndjson", "iter_sse"]


@attrs.frozen
class SseEvent:
    """One dispatched SSE event (``event`` defaults to ``"message"`` as in the spec)."""

    data: str
    event: str = "message"
    id: str | None = None

    def json(self) -> Any:
        return orjson.loads(self.data)


async def iter_sse(lines: AsyncIterable[str]) -> AsyncGenerator[SseEvent, None]:
    """Turn SSE lines into events: ``data:`` lines accumulate, a blank line dispatches.

    Comment lines (``:``) are skipped; an event left unterminated at end of
    input is dropped, as the HTML spec says — callers detect a truncated
    stream by the missing end marker.
    """
    data: list[str] = []
    event = ""
    last_id: str | None = None
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield SseEvent(data="\n".join(data), event=event or "message", id=last_id)
            data, event = [], ""
            continue
        if line.startswith(":"):
            continue
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
        elif field == "id":
            last_id = value


async def iter_ndjson(lines: AsyncIterable[str]) -> AsyncGenerator[Any, None]:
    """Decode one JSON document per non-blank line; a bad line raises ``ValueError`` naming it."""
    async for raw in lines:
        line = raw.strip()
        if not line:
            continue
        try:
            yield orjson.loads(line)
        except orjson.JSONDecodeError:
            raise ValueError(f"stream line is not JSON: {line[:200]!r}") from None
