"""``cosmo answer``: a human in the loop, from a terminal.

Watches a namespace for CLARIFICATION and PERMISSION requests, shows each one and
answers it:

* discrete answers by default (any role): CLARIFICATION_ANSWER / PERMISSION_DECISION with
  parent = the request (``answer_clarification``, ``grant_permission``, ``deny_permission``);
* ``--redispatch``: a follow-up TASK to the asking neuron on the same trace
  (``respond_to_clarification`` / ``respond_to_permission``), for neurons that expect it.

Interactive by default (one question at a time, read from the terminal).  For scripts,
``--answer TEXT`` answers every clarification, ``--grant`` / ``--deny`` every permission,
and ``--once`` exits after the first answer.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio
import click
import orjson

from ..dendrite import Dendrite
from ..signal import Signal, SignalType
from ..synapse.connect import connect_synapse
from ._common import backend_option, bus_options, echo_json, json_option, run_async, until_signalled
from .stdin import StdinLines

__all__ = ["answer"]

#: Requests waiting for the person at the terminal; the oldest is answered first.
_QUEUE = 100


@click.command()
@bus_options
@click.option("--neuron", default=None, help="Only requests from this neuron.")
@click.option("--trace", default=None, help="Only requests on this trace (a prefix is enough).")
@click.option("--answer", "fixed_answer", default=None, help="Answer every CLARIFICATION with this text.")
@click.option("--grant/--deny", "fixed_grant", default=None, help="Decide every PERMISSION this way.")
@click.option("--reason", default=None, help="Reason sent with permission decisions.")
@click.option("--redispatch", is_flag=True, help="Answer with a follow-up TASK to the asking neuron.")
@click.option("--once", is_flag=True, help="Exit after answering one request.")
@json_option
@backend_option
def answer(
    url: str, namespace: str, neuron: str | None, trace: str | None, fixed_answer: str | None,
    fixed_grant: bool | None, reason: str | None, redispatch: bool, once: bool, as_json: bool, backend: str,
) -> None:  # fmt: skip
    """Show CLARIFICATION / PERMISSION requests on the namespace and answer them."""

    def wanted(sig: Signal) -> bool:
        if neuron and sig.neuron != neuron:
            return False
        return not (trace and not sig.trace_id.startswith(trace))

    async def main() -> None:
        synapse = await connect_synapse(url)
        send, receive = anyio.create_memory_object_stream[Signal](_QUEUE)
        try:
            me = Dendrite(
                synapse=synapse, namespace=namespace, dendrite_id=f"cosmo-answer-{os.getpid()}", heartbeat_s=0
            )

            async def enqueue(sig: Signal) -> None:
                if wanted(sig):
                    await send.send(sig)

            me.on_clarification(enqueue)
            me.on_permission(enqueue)
            async with me, anyio.create_task_group() as tg:
                click.echo(f"cosmo answer: waiting for requests on {namespace}", err=True)

                async def stop_on_signal() -> None:
                    await until_signalled()
                    tg.cancel_scope.cancel()

                tg.start_soon(stop_on_signal)
                lines = StdinLines()
                async with receive:
                    async for request in receive:
                        done = await _handle(me, request, lines)
                        if done and once:
                            break
                tg.cancel_scope.cancel()
        finally:
            send.close()
            await synapse.close()  # shields its own shutdown

    async def _handle(me: Dendrite, request: Signal, lines: StdinLines) -> bool:
        _show(request)
        if request.type is SignalType.CLARIFICATION:
            text = fixed_answer
            if text is None:
                click.echo("answer> ", nl=False, err=True)
                text = await lines.readline()
                if text is None:
                    raise click.ClickException("stdin closed before an answer was given")
            value: Any = _maybe_json(text)
            if redispatch:
                sent = await me.respond_to_clarification(request, answer=value)
            else:
                sent = await me.answer_clarification(request, answer=value)
        else:
            granted = fixed_grant
            if granted is None:
                click.echo("grant? [y/N] ", nl=False, err=True)
                line = await lines.readline()
                if line is None:
                    raise click.ClickException("stdin closed before a decision was given")
                granted = line.strip().lower() in ("y", "yes")
            if redispatch:
                sent = await me.respond_to_permission(request, granted=granted, reason=reason)
            elif granted:
                sent = await me.grant_permission(request, reason=reason)
            else:
                sent = await me.deny_permission(request, reason=reason)
        if as_json:
            echo_json({"request": _wire(request), "answer": _wire(sent)})
        else:
            click.echo(f"  → sent {sent.type.value} {sent.id}")
        return True

    def _show(request: Signal) -> None:
        if as_json:
            return
        p = request.payload
        who = request.neuron or "?"
        click.echo(f"\n{request.type.value} from {who}  trace {request.trace_id}  ({request.id})")
        if request.type is SignalType.CLARIFICATION:
            click.echo(f"  question: {p.get('question', '')}")
        else:
            click.echo(f"  action:   {p.get('action', '')}")
            if p.get("scope"):
                click.echo(f"  scope:    {orjson.dumps(p['scope']).decode()}")
            if p.get("reason"):
                click.echo(f"  reason:   {p['reason']}")
        if p.get("context"):
            click.echo(f"  context:  {orjson.dumps(p['context']).decode()[:300]}")
        sys.stdout.flush()

    run_async(main, backend)


def _maybe_json(text: str) -> Any:
    """An answer typed as JSON (``{"unit": "C"}``, ``42``) is sent as that value; else as text."""
    text = text.strip()
    if text[:1] in "{[" or text in ("true", "false", "null"):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return text


def _wire(sig: Signal) -> dict[str, Any]:
    from ..codec import signal_to_dict

    return signal_to_dict(sig)
