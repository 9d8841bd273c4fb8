"""``cosmo doppler``: tail a namespace in the terminal, or (``--prism``) open it in Prism.

The tail is read-only: it subscribes to ``cosmonapse.<ns>.>`` and publishes nothing.
One line per Signal: time, type, neuron, trace, a short payload; ``--json`` prints each
Signal's wire JSON instead.  Filters combine (all must match); ``--count`` exits after
that many printed Signals, which is what scripts want.
"""

from __future__ import annotations

import anyio
import click
import orjson

from ..signal import Signal, SignalType
from ..subjects import namespace_wildcard
from ..synapse.connect import connect_synapse
from ._common import (
    StdoutClosed,
    backend_option,
    bus_options,
    echo_json,
    emit_line,
    json_option,
    run_async,
    until_signalled,
)
from .prism import prism_options, run_prism

__all__ = ["doppler", "short_payload", "tail_line"]

_TYPES = click.Choice([t.value for t in SignalType], case_sensitive=False)
_WIDTH = 72


def short_payload(sig: Signal, width: int = _WIDTH) -> str:
    """The payload on one line, cut to *width* characters; deltas and tools shown by what matters."""
    p = sig.payload
    if sig.type is SignalType.THOUGHT_DELTA and isinstance(p.get("delta"), str):
        text = repr(p["delta"])
    elif sig.type in (SignalType.TOOL_CALL, SignalType.TOOL_RESULT) and (p.get("tool_name") or p.get("tool")):
        rest = {k: v for k, v in p.items() if k not in ("tool", "tool_name")}
        text = f"{p.get('tool_name') or p.get('tool')} {orjson.dumps(rest, default=str).decode()}"
    else:
        text = orjson.dumps(p, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def tail_line(sig: Signal) -> str:
    """``HH:MM:SS.mmm TYPE neuron trace payload`` for one Signal."""
    ts = sig.ts
    clock = ts[11:23] if len(ts) >= 19 and ts[10] in "T " else ts
    who = sig.neuron or "-"
    return f"{clock:<12} {sig.type.value:<20} {who:<18} {sig.trace_id:<31} {short_payload(sig)}"


class TailFilter:
    """``--type`` (any of), ``--trace`` and ``--neuron`` (prefixes allowed)."""

    def __init__(self, types: tuple[str, ...], trace: str | None, neuron: str | None) -> None:
        self.types: frozenset[SignalType] = frozenset(SignalType(t.upper()) for t in types)
        self.trace = trace
        self.neuron = neuron

    def __call__(self, sig: Signal) -> bool:
        if self.types and sig.type not in self.types:
            return False
        if self.trace and not sig.trace_id.startswith(self.trace):
            return False
        return not (self.neuron and sig.neuron != self.neuron)


@click.command()
@bus_options
@click.option(
    "--type", "-t", "types", multiple=True, type=_TYPES, metavar="TYPE", help="Only this type (repeatable)."
)
@click.option("--trace", default=None, help="Only this trace (a prefix is enough).")
@click.option("--neuron", default=None, help="Only Signals whose directed.id is this neuron.")
@click.option("--count", "-c", type=click.IntRange(min=1), default=None, help="Exit after N Signals.")
@json_option
@click.option("--prism", "with_prism", is_flag=True, help="Serve the namespace in Prism instead.")
@prism_options
@backend_option
def doppler(
    url: str,
    namespace: str,
    types: tuple[str, ...],
    trace: str | None,
    neuron: str | None,
    count: int | None,
    as_json: bool,
    with_prism: bool,
    backend: str,
    **prism_kw: object,
) -> None:
    """Tail the bus: one line per Signal on the namespace, until Ctrl-C (or --count)."""
    if with_prism:
        run_prism(url=url, namespace=namespace, backend=backend, **prism_kw)  # type: ignore[arg-type]
        return
    keep = TailFilter(types, trace, neuron)

    async def main() -> None:
        synapse = await connect_synapse(url)
        try:
            done = anyio.Event()
            printed = 0

            async def show(sig: Signal) -> None:
                nonlocal printed
                if done.is_set() or not keep(sig):
                    return
                try:
                    if as_json:
                        echo_json(sig)
                    else:
                        emit_line(tail_line(sig))
                except StdoutClosed:
                    done.set()  # `cosmo doppler | head`: the reader left, so do we
                    return
                printed += 1
                if count is not None and printed >= count:
                    done.set()

            await synapse.subscribe(namespace_wildcard(namespace), show)
            click.echo(f"cosmo doppler: tailing {namespace} on {url.split('?', 1)[0]}", err=True)
            async with anyio.create_task_group() as tg:

                async def stop_on_signal() -> None:
                    await until_signalled()
                    done.set()

                tg.start_soon(stop_on_signal)
                await done.wait()
                tg.cancel_scope.cancel()
        finally:
            await synapse.close()  # shields its own shutdown

    run_async(main, backend)
