"""``cosmo registry list``: who is on the namespace right now.

Publishes one DISCOVER (with the ``--capability`` filter, if any) and collects the
REGISTERs that answer it during ``--wait`` seconds: hosts answer after a random 0-100 ms
(protocol §7.5), so the default second is plenty on one machine.
"""

from __future__ import annotations

from typing import Any

import anyio
import click

from ..signal import Signal, SignalType
from ..subjects import subject_for
from ..synapse.connect import connect_synapse
from ._common import backend_option, bus_options, echo_json, json_option, run_async

__all__ = ["registry"]


@click.group()
def registry() -> None:
    """The participants of a namespace (DISCOVER / REGISTER)."""


def _entry(sig: Signal) -> dict[str, Any]:
    p = sig.payload
    caps = p.get("capabilities")
    if not isinstance(caps, list):
        caps = list(sig.directed.capabilities) if sig.directed else []
    return {
        "neuron_id": sig.neuron,
        "role": p.get("role") or ("engram" if p.get("engram") else "neuron"),
        "kind": sig.directed.type if sig.directed else None,
        "capabilities": [str(c) for c in caps],
        "version": p.get("version"),
        "catch_all": bool(sig.meta.get("catch_all")),
        "registered_at": sig.ts,
    }


@registry.command("list")
@bus_options
@click.option("--capability", "-c", default=None, help="Only participants with this capability.")
@click.option(
    "--wait", "wait_s", default=1.0, show_default=True, type=click.FloatRange(min=0.05, max=60),
    help="Seconds to collect REGISTERs after the DISCOVER.",
)  # fmt: skip
@json_option
@backend_option
def list_(
    url: str, namespace: str, capability: str | None, wait_s: float, as_json: bool, backend: str
) -> None:
    """DISCOVER, collect the REGISTERs that answer, print the roster."""
    seen: dict[str, dict[str, Any]] = {}

    async def main() -> None:
        synapse = await connect_synapse(url)
        try:

            async def collect(sig: Signal) -> None:
                if sig.neuron:
                    seen[sig.neuron] = _entry(sig)

            await synapse.subscribe(subject_for(namespace, SignalType.REGISTER), collect)
            payload: dict[str, Any] = {"capabilities": [capability]} if capability else {}
            await synapse.publish(
                subject_for(namespace, SignalType.DISCOVER), Signal(type=SignalType.DISCOVER, payload=payload)
            )
            await anyio.sleep(wait_s)  # allowed: the collection window is the command's contract
        finally:
            await synapse.close()  # shields its own shutdown

    run_async(main, backend)
    rows = sorted(seen.values(), key=lambda r: str(r["neuron_id"]))
    if capability:
        rows = [r for r in rows if capability in r["capabilities"]]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"no participants answered on {namespace} within {wait_s:g} s")
        return
    click.echo(f"{'NEURON':<24} {'ROLE':<9} {'VERSION':<9} CAPABILITIES")
    for r in rows:
        caps = ", ".join(r["capabilities"]) + ("  (catch-all)" if r["catch_all"] else "")
        click.echo(f"{r['neuron_id']!s:<24} {r['role']!s:<9} {r['version'] or '-'!s:<9} {caps}")
