"""``cosmo conformance URL -n NS``: check the agents on a live bus against the protocol, rule by rule."""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
import click

from ..errors import SynapseError

__all__ = ["conformance"]


def _json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object")
    return data


@click.command("conformance")
@click.argument("url", required=False)
@click.option("--namespace", "-n", default="dev", show_default=True, help="Namespace of the agents.")
@click.option("--neuron", "neurons", multiple=True, help="Probe this neuron (repeatable); default: all.")
@click.option(
    "--input", "input_", callback=_json_object, help='TASK input as JSON (default {"prompt": ...}).'
)
@click.option(
    "--slow-input", callback=_json_object, help="Input that keeps a neuron busy, for the STOP rule."
)
@click.option("--timeout", "timeout_s", default=5.0, show_default=True, type=click.FloatRange(min=0.01))
@click.option(
    "--discover-wait", default=1.0, show_default=True, type=click.FloatRange(min=0), help="Seconds."
)
@click.option("--stop-after", default=0.3, show_default=True, type=click.FloatRange(min=0), help="Seconds.")
@click.option(
    "--heartbeat-wait", default=0.0, show_default=True, type=click.FloatRange(min=0), help="Seconds."
)
@click.option(
    "--spawn", metavar="CMD", help="Start this worker first, terminate it at the end (for DEREGISTER)."
)
@click.option(
    "--record", "record_path", type=click.Path(dir_okay=False), help="Save the transcript (JSON Lines)."
)
@click.option("--transcript", type=click.Path(exists=True, dir_okay=False), help="Judge a saved transcript.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--backend", type=click.Choice(["asyncio", "trio"]), default="asyncio", show_default=True)
def conformance(
    url: str | None,
    namespace: str,
    neurons: tuple[str, ...],
    input_: dict[str, Any] | None,
    slow_input: dict[str, Any] | None,
    timeout_s: float,
    discover_wait: float,
    stop_after: float,
    heartbeat_wait: float,
    spawn: str | None,
    record_path: str | None,
    transcript: str | None,
    as_json: bool,
    backend: str,
) -> None:
    """Probe the agents on URL (cosmo:// or nats://) and print PASS/FAIL per rule; exit 1 on a failure."""
    from ..testing.conformance import ConformanceOptions, Transcript, judge, record

    if transcript is not None:
        taken = Transcript.load(transcript)
    elif url is None:
        raise click.UsageError("give a bus URL (cosmo://... or nats://...) or --transcript FILE")
    else:
        options = ConformanceOptions(
            timeout_s=timeout_s,
            discover_wait_s=discover_wait,
            input=input_ or ConformanceOptions().input,
            slow_input=slow_input,
            stop_after_s=stop_after,
            heartbeat_wait_s=heartbeat_wait,
            neurons=neurons,
            spawn=spawn,
        )
        try:
            taken = anyio.run(lambda: record(url, namespace, options), backend=backend)
        except (SynapseError, OSError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        if record_path:
            taken.save(record_path)
    report = judge(taken)
    click.echo(json.dumps(report.to_json(), indent=2) if as_json else report.render())
    sys.exit(0 if report.passed else 1)
