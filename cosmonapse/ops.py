"""Request/reply correlation ("op Pathways", §9): replies found by their ``parent_id``.

RECALL→RECALLED, IMPRINT→IMPRINTED, CLARIFICATION→CLARIFICATION_ANSWER,
PERMISSION→PERMISSION_DECISION, TASK_OFFER→BID and STOP→STOPPED are all a
request Signal followed by replies whose ``parent_id`` is the request's id.
The Dendrite's router files such replies into the matching ``ReplyOp`` (a
dict lookup, no user code), and the caller reads them with a deadline.

An op bound to its trace fails with ``OpCancelled`` when the trace ends
(FINAL/ERROR), is STOPped, or the Dendrite stops, so no caller waits on a
dead trace.  Ops are always used as context managers so they leave the table.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType

import anyio

from .errors import CosmonapseError
from .signal import Signal, SignalType

__all__ = ["OpCancelled", "OpTable", "ReplyOp"]

#: Replies a single op keeps unread before it drops new ones (a flood of BIDs, say).
MAX_OP_BUFFER = 1024


class OpCancelled(CosmonapseError):
    """The request's trace ended, was STOPped, or the Dendrite stopped before a reply came."""


class ReplyOp:
    """Replies to one request, read in arrival order."""

    __slots__ = ("_buf", "_error", "_table", "_wakeup", "bound_to_trace", "request_id", "trace_id", "types")

    def __init__(
        self,
        table: OpTable,
        request_id: str,
        trace_id: str,
        types: frozenset[SignalType],
        bound_to_trace: bool,
    ) -> None:
        self._table = table
        self.request_id: str = request_id
        self.trace_id: str = trace_id
        self.types: frozenset[SignalType] = types
        self.bound_to_trace: bool = bound_to_trace
        self._buf: list[Signal] = []
        self._error: BaseException | None = None
        self._wakeup: anyio.Event | None = None

    def deliver(self, sig: Signal) -> None:
        if self._error is None and len(self._buf) < MAX_OP_BUFFER:
            self._buf.append(sig)
            self._wake()

    def fail(self, error: BaseException) -> None:
        """Make readers raise *error* once the buffered replies are read."""
        if self._error is None:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def take_all(self) -> list[Signal]:
        """Everything buffered so far (without waiting)."""
        out, self._buf = self._buf, []
        return out

    async def next(self, deadline: float | None) -> Signal | None:
        """The next reply, or None once *deadline* (``anyio.current_time()`` based) passes."""
        while not self._buf:
            if self._error is not None:
                raise self._error
            if deadline is not None and anyio.current_time() >= deadline:
                return None
            self._wakeup = ev = anyio.Event()
            with anyio.move_on_after(None if deadline is None else deadline - anyio.current_time()):
                await ev.wait()
        return self._buf.pop(0)

    def close(self) -> None:
        self._table._forget(self)

    def __enter__(self) -> ReplyOp:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class OpTable:
    """The open ops of one Dendrite, by request id and by trace."""

    __slots__ = ("_by_id", "_by_trace")

    def __init__(self) -> None:
        self._by_id: dict[str, ReplyOp] = {}
        self._by_trace: dict[str, set[ReplyOp]] = {}

    def __bool__(self) -> bool:
        return bool(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[ReplyOp]:
        return iter(list(self._by_id.values()))

    def open(
        self,
        request_id: str,
        trace_id: str,
        types: frozenset[SignalType] | set[SignalType],
        *,
        bound_to_trace: bool = True,
    ) -> ReplyOp:
        """Start collecting replies to *request_id*; register it before publishing the request."""
        op = ReplyOp(self, request_id, trace_id, frozenset(types), bound_to_trace)
        self._by_id[request_id] = op
        if bound_to_trace:
            self._by_trace.setdefault(trace_id, set()).add(op)
        return op

    def deliver(self, sig: Signal) -> bool:
        """File *sig* into the op waiting for it (by ``parent_id``); True when one took it."""
        parent = sig.parent_id
        op = self._by_id.get(parent) if parent is not None else None
        if op is None or sig.type not in op.types:
            return False
        op.deliver(sig)
        return True

    def fail_trace(self, trace_id: str, why: str) -> int:
        """Fail every trace-bound op on *trace_id*; returns how many."""
        ops = self._by_trace.pop(trace_id, None)
        for op in ops or ():
            op.fail(OpCancelled(f"trace {trace_id} {why} before the reply to {op.request_id} arrived"))
        return len(ops or ())

    def fail_all(self, why: str) -> None:
        for op in list(self._by_id.values()):
            op.fail(OpCancelled(f"{why} before the reply to {op.request_id} arrived"))

    def _forget(self, op: ReplyOp) -> None:
        if self._by_id.get(op.request_id) is op:
            del self._by_id[op.request_id]
        ops = self._by_trace.get(op.trace_id)
        if ops is not None:
            ops.discard(op)
            if not ops:
                del self._by_trace[op.trace_id]
