"""Publish one complete synthetic trace for the Prism browser test (run as a script).

python tests/prism_publish.py URL NAMESPACE TRACE_ID OTEL_TRACE_ID

TASK (with a W3C traceparent) → THOUGHT_DELTAs → TOOL_CALL/TOOL_RESULT (``tool_name``) →
ERROR → STOP (rollback) → STOPPED (rolled back).  Exits once the broker has them all.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio

from cosmonapse import Directed, Signal, SignalType, connect_synapse

T = SignalType


async def main(url: str, ns: str, trace: str, otel: str) -> None:
    def sig(
        t: SignalType, payload: dict[str, Any], parent: Signal | None, who: str | None, **meta: Any
    ) -> Signal:
        parent_id = parent.id if parent else None
        directed = Directed(who) if who else None
        return Signal(
            type=t, trace_id=trace, parent_id=parent_id, directed=directed, payload=payload, meta=meta
        )

    task = sig(
        T.TASK, {"input": {"q": "use a tool"}}, None, "tooler", traceparent=f"00-{otel}-00f067aa0ba902b7-01"
    )
    out = [task]
    out += [
        sig(T.THOUGHT_DELTA, {"delta": d, "seq": i}, task, "tooler")
        for i, d in enumerate(["thinking ", "about ", "tools"])
    ]
    call = sig(T.TOOL_CALL, {"tool": "count", "tool_name": "word_counter", "args": {}}, task, "tooler")
    out += [call, sig(T.TOOL_RESULT, {"tool": "count", "error": "boom"}, call, "tooler")]
    out.append(
        sig(T.ERROR, {"code": "E_TOOL", "message": "tool failed", "recoverable": False}, task, "tooler")
    )
    stop = sig(T.STOP, {"rollback": True, "reason": "undo"}, None, None)
    out += [stop, sig(T.STOPPED, {"rolled_back": True, "cancelled": 0, "compensated": 2}, stop, None)]
    async with await connect_synapse(url) as bus:
        echo = anyio.Event()

        async def seen(_: Signal) -> None:
            echo.set()

        await bus.subscribe(f"cosmonapse.{ns}.AUDIT", seen)
        for s in out:
            await bus.publish(f"cosmonapse.{ns}.{s.type.value}", s)
        # a last Signal that comes back to us: everything before it reached the broker
        audit = {"kind": "GUARDED", "domain": "security", "outcome": "recovered", "attempt": 1}
        await bus.publish(f"cosmonapse.{ns}.AUDIT", Signal(type=T.AUDIT, payload=audit))
        with anyio.fail_after(10):
            await echo.wait()


if __name__ == "__main__":
    url, ns, trace, otel = sys.argv[1:5]
    anyio.run(main, url, ns, trace, otel)
