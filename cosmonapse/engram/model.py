"""The Engram data model shared by every backend (§14.2): entries, hits, receipts, matching.

An entry as written by ``imprint`` is ``{id?, content, tags?, meta?}`` (other
keys are dropped); as stored and returned it is ``{id, content, tags, version,
created_at, updated_at, merge_key?, meta?}``.  Matching and scoring live here
so the in-memory and SQLite backends answer a query the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import attrs

__all__ = [
    "DEFAULT_TOP_K",
    "IMPRINT_OPS",
    "RECALL_MODES",
    "Hit",
    "Hits",
    "ImprintReceipt",
    "RecallResult",
    "clean_entry",
    "content_text",
    "deep_merge",
    "first_hits",
    "now_iso",
    "score_entry",
    "stored_form",
    "top_k_of",
    "union_tags",
]

IMPRINT_OPS = frozenset({"add", "append", "merge", "upsert", "delete"})
RECALL_MODES = frozenset({"first", "merge", "all"})
DEFAULT_TOP_K = 50


@attrs.frozen
class Hit:
    """One recalled entry and how well it matched (0..1)."""

    id: str
    entry: dict[str, Any]
    score: float = 1.0

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "entry": self.entry, "score": self.score}

    @classmethod
    def from_wire(cls, data: Any) -> Hit | None:
        if not isinstance(data, dict) or not isinstance(data.get("entry"), dict):
            return None
        entry = data["entry"]
        score = data.get("score", 1.0)
        return cls(
            str(data.get("id") or entry.get("id") or ""), entry, float(score) if score is not None else 1.0
        )


class Hits(list[Hit]):
    """A backend's answer: the hits, and whether more matched than ``top_k``."""

    truncated: bool = False


@attrs.frozen
class RecallResult:
    """What ``recall`` returns: hits from every engram that answered, best first.

    It reads as its hits: ``if await d.recall(...)``, ``len(result)``, ``for hit in result``
    and ``result[0]`` mean what they mean for ``result.hits``.
    """

    hits: list[Hit]
    engram_ids: list[str]
    truncated: bool = False
    took_ms: float = 0.0
    #: engram id → error text, for engrams that answered with an error.
    errors: dict[str, str] = attrs.field(factory=dict)

    @property
    def entries(self) -> list[dict[str, Any]]:
        return [h.entry for h in self.hits]

    def __bool__(self) -> bool:
        return bool(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    def __getitem__(self, index: int) -> Hit:
        return self.hits[index]


@attrs.frozen
class ImprintReceipt:
    """The outcome of one write on one engram; ``error`` is set when it refused."""

    engram_id: str
    op: str
    id: str | None = None
    version: int | None = None
    took_ms: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the engram applied the write (no ``error``)."""
        return self.error is None

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"engram_id": self.engram_id, "op": self.op}
        for key in ("id", "version", "took_ms", "error"):
            value = getattr(self, key)
            if value is not None:
                payload[key] = value
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ImprintReceipt:
        version = payload.get("version")
        took = payload.get("took_ms")
        return cls(
            engram_id=str(payload.get("engram_id") or ""),
            op=str(payload.get("op") or ""),
            id=payload.get("id"),
            version=int(version) if isinstance(version, int | float) else None,
            took_ms=float(took) if isinstance(took, int | float) else None,
            error=payload.get("error"),
        )


def now_iso() -> str:
    """UTC now with a fixed microsecond width, so timestamps sort as text."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def clean_entry(entry: Any) -> dict[str, Any]:
    """Keep the written keys ``id``, ``content``, ``tags``, ``meta``; tags as a list of strings."""
    if not isinstance(entry, dict):
        raise TypeError(f"an engram entry must be a dict, not {type(entry).__name__}")
    out: dict[str, Any] = {"content": entry.get("content")}
    if entry.get("id"):
        out["id"] = str(entry["id"])
    tags = entry.get("tags")
    out["tags"] = [str(t) for t in tags] if isinstance(tags, list | tuple) else []
    meta = entry.get("meta")
    out["meta"] = dict(meta) if isinstance(meta, dict) else {}
    return out


def deep_merge(old: Any, new: Any) -> Any:
    """Dicts merge recursively, lists concatenate without duplicates, anything else is replaced."""
    if isinstance(old, dict) and isinstance(new, dict):
        merged = dict(old)
        for key, value in new.items():
            merged[key] = deep_merge(old[key], value) if key in old else value
        return merged
    if isinstance(old, list) and isinstance(new, list):
        return old + [v for v in new if v not in old]
    return new


def union_tags(old: Iterable[str], new: Iterable[str]) -> list[str]:
    out = list(old)
    out.extend(t for t in new if t not in out)
    return out


def content_text(content: Any) -> str:
    """The text a ``text`` query searches: the string itself, else its JSON."""
    if isinstance(content, str):
        return content
    return json.dumps(content, ensure_ascii=False, sort_keys=True, default=str)


def score_entry(
    stored: dict[str, Any], query: dict[str, Any], filters: dict[str, Any] | None
) -> float | None:
    """The score of *stored* for *query* (0..1), or None when it does not match.

    Query keys: ``text`` (case-insensitive substring of the content), ``tag``,
    ``merge_key``, ``id``.  Filters: ``tags`` (all required), ``since`` /
    ``until`` (ISO strings compared with ``updated_at``).
    """
    if query.get("id") is not None and stored.get("id") != query["id"]:
        return None
    if query.get("merge_key") is not None and stored.get("merge_key") != query["merge_key"]:
        return None
    tags = stored.get("tags") or []
    if query.get("tag") is not None and query["tag"] not in tags:
        return None
    if filters:
        wanted = filters.get("tags")
        if wanted and not all(t in tags for t in wanted):
            return None
        updated = str(stored.get("updated_at") or "")
        if filters.get("since") and updated < str(filters["since"]):
            return None
        if filters.get("until") and updated > str(filters["until"]):
            return None
    text = query.get("text")
    if not text:
        return 1.0
    haystack = content_text(stored.get("content"))
    if str(text).lower() not in haystack.lower():
        return None
    return min(1.0, len(str(text)) / max(1, len(haystack)))


def first_hits(
    stored: Iterator[dict[str, Any]],
    query: dict[str, Any],
    filters: dict[str, Any] | None,
    min_confidence: float | None,
) -> Hits:
    """The first ``top_k`` entries of *stored* (already in recall order) that match, scored.

    Reads one entry past ``top_k`` at most, to tell whether the answer is truncated.
    """
    k = top_k_of(query)
    hits = Hits()
    for entry in stored:
        score = score_entry(entry, query, filters)
        if score is None or (min_confidence is not None and score < min_confidence):
            continue
        if len(hits) == k:
            hits.truncated = True
            break
        hits.append(Hit(entry["id"], entry, score))
    return hits


def top_k_of(query: dict[str, Any]) -> int:
    try:
        k = int(query.get("top_k") or DEFAULT_TOP_K)
    except (TypeError, ValueError):
        k = DEFAULT_TOP_K
    return max(1, k)


def stored_form(
    entry_id: str,
    content: Any,
    tags: list[str],
    meta: dict[str, Any],
    version: int,
    created_at: str,
    updated_at: str,
    merge_key: str | None,
) -> dict[str, Any]:
    """An entry as stored and returned (``merge_key`` only if set, ``meta`` only if non-empty)."""
    out: dict[str, Any] = {
        "id": entry_id,
        "content": content,
        "tags": tags,
        "version": version,
        "created_at": created_at,
        "updated_at": updated_at,
    }
    if merge_key is not None:
        out["merge_key"] = merge_key
    if meta:
        out["meta"] = meta
    return out
