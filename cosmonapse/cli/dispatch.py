"""``cosmo dispatch``: a one-shot orchestrator from the terminal.

It runs a Dendrite (role orchestrator, no Axons) for the one call, through its public
API: ``dispatch`` / ``dispatch_task`` for a TASK, ``dispatch_offer`` for bidding.  While
waiting it streams the trace's THOUGHT_DELTAs as they come, then prints the reply.

Exit status: 0 for a reply (AGENT_OUTPUT, FINAL, CLARIFICATION, PERMISSION), 1 for an
ERROR reply, a timeout or a bus failure, 2 for bad options.
"""

from __future__ import annotations

import os
import sys
from typing import Any, cast

import anyio
import click
import orjson

from ..dendrite import Dendrite
from ..pathway import Pathway, PathwayScope
from ..signal import TERMINAL_SCOPE_TYPES, WAIT_TYPES, Signal, SignalType
from ..synapse.connect import connect_synapse
from ._common import backend_option, bus_options, echo_json, json_option, run_async

__all__ = ["dispatch", "parse_input"]


def parse_input(text: str) -> dict[str, Any]:
    """``--input``: a JSON object, ``-`` for stdin, or ``@FILE``."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        with open(text[1:], encoding="utf-8") as fh:
            text = fh.read()
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--input") from None
    if not isinstance(value, dict):
        raise click.BadParameter(f"must be a JSON object, got {type(value).__name__}", param_hint="--input")
    return value


def _caps(_ctx: click.Context, _param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    caps = [c.strip() for c in value.split(",") if c.strip()]
    return caps or None


@click.command()
@bus_options
@click.option("--neuron", default=None, help="Address one neuron by id.")
@click.option(
    "--capabilities",
    "capabilities",
    default=None,
    callback=_caps,
    metavar="CAP[,CAP...]",
    help="Route to any neuron with these capabilities (a queue group picks one).",
)
@click.option(
    "--open-call",
    is_flag=True,
    help="Neither --neuron nor --capabilities: the first catch-all Axon of every host runs it.",
)
@click.option(
    "--input", "input_text", default="{}", show_default=True, metavar="JSON|-|@FILE", help="TASK input."
)
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the reply.")
@click.option(
    "--timeout",
    "timeout_s",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds to wait for the reply.",
)
@click.option(
    "--scope",
    type=click.Choice(["all", "terminal"]),
    default="all",
    show_default=True,
    help="all: the first reply; terminal: FINAL/ERROR (the worker promotes its output).",
)
@click.option("--offer", is_flag=True, help="Bid it out (TASK_OFFER → BID → TASK_AWARDED).")
@click.option(
    "--select",
    type=click.Choice(["first_bid", "lowest_cost", "highest_confidence"]),
    default="first_bid",
    show_default=True,
    help="With --offer: how the winning bid is chosen.",
)
@click.option(
    "--deadline-ms",
    default=250,
    show_default=True,
    type=click.IntRange(min=1),
    help="With --offer: the bidding window.",
)
@click.option("--trace-id", default=None, help="Use this trace id (default: a new one).")
@click.option("--quiet", "-q", is_flag=True, help="Do not stream THOUGHT_DELTAs.")
@json_option
@backend_option
def dispatch(
    url: str, namespace: str, neuron: str | None, capabilities: list[str] | None, open_call: bool,
    input_text: str, wait: bool, timeout_s: float, scope: str, offer: bool, select: str, deadline_ms: int,
    trace_id: str | None, quiet: bool, as_json: bool, backend: str,
) -> None:  # fmt: skip
    """Send one TASK (or offer) and print the reply; THOUGHT_DELTAs stream as they come."""
    if neuron and capabilities:
        raise click.UsageError("give --neuron or --capabilities, not both")
    if open_call and (neuron or capabilities or offer):
        raise click.UsageError("--open-call takes no --neuron, --capabilities or --offer")
    if not (neuron or capabilities or open_call or offer):
        raise click.UsageError("give --neuron, --capabilities, --offer or --open-call")
    if offer and neuron:
        raise click.UsageError("--offer bids work out by capabilities; it takes no --neuron")
    task_input = parse_input(input_text)
    outcome: dict[str, Any] = {}

    async def main() -> None:
        synapse = await connect_synapse(url)
        try:
            orch = Dendrite(
                synapse=synapse, namespace=namespace, dendrite_id=f"cosmo-dispatch-{os.getpid()}",
                heartbeat_s=0,
            )  # fmt: skip
            async with orch:
                outcome["reply"] = await _run(orch)
        finally:
            await synapse.close()  # shields its own shutdown

    async def _run(orch: Dendrite) -> Signal | None:
        pw_scope = cast(PathwayScope, scope)
        common: dict[str, Any] = {"input": task_input, "capabilities": capabilities, "trace_id": trace_id}
        if not wait and not offer:
            task = await orch.dispatch_task(neuron=neuron, open_call=open_call, **common)
            _announce(task)
            return None
        if offer:
            pw = await orch.dispatch_offer(
                select=select,
                deadline_ms=deadline_ms,
                scope=pw_scope,
                **common,
            )
        else:
            pw = await orch.dispatch(neuron=neuron, scope=pw_scope, open_call=open_call, **common)
        try:
            if pw.task is not None:
                _announce(pw.task)
            if not wait:
                return None
            return await _reply(pw)
        finally:
            await pw.close()

    def _announce(first: Signal) -> None:
        what = "offer" if first.type is SignalType.TASK_OFFER else "TASK"
        click.echo(f"cosmo dispatch: {what} {first.id} trace {first.trace_id}", err=True)
        if not wait and as_json:
            echo_json(first)

    async def _reply(pw: Pathway) -> Signal:
        done_types = WAIT_TYPES if scope == "all" else TERMINAL_SCOPE_TYPES
        streamed = False

        async def show_delta(sig: Signal) -> None:
            nonlocal streamed
            delta = sig.payload.get("delta")
            if quiet or not isinstance(delta, str):
                return
            streamed = True
            click.echo(delta, nl=False, err=as_json)
            (sys.stderr if as_json else sys.stdout).flush()

        if scope == "terminal":
            pw.on(SignalType.THOUGHT_DELTA)(show_delta)
        try:
            with anyio.fail_after(timeout_s):
                async for sig in pw:
                    if sig.type is SignalType.THOUGHT_DELTA:
                        await show_delta(sig)
                    elif sig.type in done_types:
                        if streamed:
                            click.echo("", err=as_json)
                        return sig
        except TimeoutError:
            pass
        target = neuron or (f"capabilities {capabilities}" if capabilities else "an open call")
        raise click.ClickException(f"no reply from {target} within {timeout_s:g} s (trace {pw.trace_id})")

    run_async(main, backend)
    reply = outcome.get("reply")
    if reply is None:
        if wait:
            raise click.ClickException("the trace ended without a reply")
        return
    if as_json:
        echo_json(reply)
    else:
        _print_reply(reply)
    if reply.type is SignalType.ERROR:
        sys.exit(1)


def _print_reply(reply: Signal) -> None:
    p = reply.payload
    who = reply.neuron or "?"
    if reply.type is SignalType.AGENT_OUTPUT:
        body: Any = p.get("output")
    elif reply.type is SignalType.FINAL:
        body = p.get("result")
    elif reply.type is SignalType.ERROR:
        body = f"{p.get('code')}: {p.get('message')}"
    elif reply.type is SignalType.CLARIFICATION:
        body = f"asks: {p.get('question')}  (answer it with `cosmo answer`)"
    elif reply.type is SignalType.PERMISSION:
        body = f"asks permission to {p.get('action')}  (answer it with `cosmo answer`)"
    else:
        body = p
    text = body if isinstance(body, str) else orjson.dumps(body, option=orjson.OPT_INDENT_2).decode()
    click.echo(f"{reply.type.value} from {who} (trace {reply.trace_id}):")
    click.echo(text)
