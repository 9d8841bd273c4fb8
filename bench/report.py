"""One table format for the benches that carry targets: value, baseline, ratio, target, pass/fail."""

from __future__ import annotations

from typing import Any

__all__ = ["format_table", "verdict"]


def verdict(ok: bool | None) -> str:
    """``met`` / ``MISSED`` / blank (a row with no target of its own)."""
    return "" if ok is None else ("met" if ok else "MISSED")


def _num(value: float | None, width: int) -> str:
    if value is None:
        return " " * width
    return f"{value:{width}.2f}" if abs(value) < 100 else f"{value:{width},.0f}"


def format_table(title: str, rows: list[dict[str, Any]]) -> str:
    """Rows of {metric, value, baseline, ratio, target, ok}; numbers right-aligned."""
    width = max([len(r["metric"]) for r in rows] + [6])
    lines = [title, f"{'metric':{width}} {'value':>10} {'baseline':>10} {'ratio':>7}  {'target':28} result"]
    for r in rows:
        lines.append(
            f"{r['metric']:{width}} {_num(r['value'], 10)} {_num(r.get('baseline'), 10)} "
            f"{_num(r.get('ratio'), 7)}  {r.get('target', ''):28} {verdict(r.get('ok'))}"
        )
    return "\n".join(lines)
