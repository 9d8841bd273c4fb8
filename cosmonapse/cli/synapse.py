"""``cosmo synapse ...``: run the dev bus and manage its namespaces (§17.3 management ops)."""

from __future__ import annotations

import signal
import sys
from typing import Any

import anyio
import click
import orjson

from ..errors import SynapseError
from ..synapse.dev import DEFAULT_PORT, open_dev_link, parse_cosmo_url
from ..synapse.dev_server import DevSynapseServer
from ..synapse.framing import DEFAULT_MAX_LINE

__all__ = ["synapse"]

_BACKENDS = click.Choice(["asyncio", "trio"])
_TOKEN_ENV = "COSMO_SYNAPSE_TOKEN"
_ANY_TO_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


@click.group()
def synapse() -> None:
    """Run a cosmo:// dev bus and manage its namespaces."""


# -- start ---------------------------------------------------------------------
@synapse.command("start")
@click.argument("transport", type=click.Choice(["memory"]))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    default=DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="0 = any free port.",
)
@click.option("--namespace", "-n", default="dev", show_default=True, help="Namespace to register.")
@click.option(
    "--token",
    envvar=_TOKEN_ENV,
    default=None,
    help=f"Shared token clients must send first (also ${_TOKEN_ENV}).",
)
@click.option(
    "--max-line",
    default=DEFAULT_MAX_LINE,
    show_default=True,
    type=click.IntRange(min=1),
    metavar="BYTES",
    help="Longest line accepted; longer ones get an err and are skipped.",
)
@click.option("--tail", is_flag=True, help="Print one line per published Signal.")
@click.option("--backend", type=_BACKENDS, default="asyncio", show_default=True, help="Event loop to run on.")
def start(
    transport: str,
    host: str,
    port: int,
    namespace: str,
    token: str | None,
    max_line: int,
    tail: bool,
    backend: str,
) -> None:
    """Run the dev bus (TRANSPORT: memory) until Ctrl-C, SIGTERM or `cosmo synapse stop`."""
    if token == "":
        token = None
    server = DevSynapseServer(host, port, token=token, max_line=max_line, on_publish=_tail if tail else None)
    try:
        anyio.run(_serve, server, namespace, backend=backend)
    except KeyboardInterrupt:  # Ctrl-C before the signal receiver was installed
        pass
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None


async def _serve(server: DevSynapseServer, namespace: str) -> None:
    async with server, anyio.create_task_group() as tg:
        registered = anyio.Event()
        tg.start_soon(_hold_namespace, server, namespace, registered, tg.cancel_scope)
        with anyio.fail_after(10):
            await registered.wait()
        auth = " (token required)" if server.token else ""
        click.echo(f"cosmo synapse listening on {server.url} (namespace {namespace}){auth}")
        sys.stdout.flush()
        await _until_signalled()
        tg.cancel_scope.cancel()
    click.echo(f"cosmo synapse stopped (namespace {namespace}, {server.stats.published} signals)")


async def _until_signalled() -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


async def _hold_namespace(
    server: DevSynapseServer, namespace: str, registered: anyio.Event, scope: anyio.CancelScope
) -> None:
    """Register *namespace* over our own connection, as the reference does; stop on ``ns_stopping``."""
    host = _ANY_TO_LOOPBACK.get(server.host, server.host)
    async with await open_dev_link(host, server.port, token=server.token) as link:
        await link.send({"op": "ns_register", "namespace": namespace, "transport": "memory"})
        while True:
            msg = await link.receive()
            if msg.get("op") == "ns_registered":
                registered.set()
            elif msg.get("op") == "ns_stopping" and msg.get("namespace") == namespace:
                click.echo(f"namespace {namespace} stopped by a management request")
                scope.cancel()
                return


def _tail(subject: str, frame: Any) -> None:
    try:
        sig = orjson.loads(frame) if isinstance(frame, str) else {}
    except orjson.JSONDecodeError:
        sig = {}
    if not isinstance(sig, dict):
        sig = {}
    click.echo(
        f"{sig.get('ts', '?'):<28} {sig.get('type', '?'):<20} {sig.get('trace_id', '?'):<31} {subject}"
    )


# -- management ------------------------------------------------------------------
_URL = click.option(
    "--url", default=f"cosmo://127.0.0.1:{DEFAULT_PORT}", show_default=True, help="Dev bus URL."
)


@synapse.command("stop")
@_URL
@click.option("--namespace", "-n", required=True, help="Namespace to stop.")
@click.option("--token", envvar=_TOKEN_ENV, default=None, help=f"Token of the bus (also ${_TOKEN_ENV}).")
def stop(url: str, namespace: str, token: str | None) -> None:
    """Stop a namespace; `cosmo synapse start` that owns it shuts its bus down."""
    answer = _request(url, token, {"op": "mgmt_stop", "namespace": namespace})
    click.echo(f"stopped namespace {answer.get('namespace')} on {url.split('?', 1)[0]}")


@synapse.command("view")
@_URL
@click.option("--namespace", "-n", default=None, help="Show one namespace in detail.")
@click.option("--token", envvar=_TOKEN_ENV, default=None, help=f"Token of the bus (also ${_TOKEN_ENV}).")
@click.option("--json", "as_json", is_flag=True, help="Print the server's answer as JSON.")
def view(url: str, namespace: str | None, token: str | None, as_json: bool) -> None:
    """List the namespaces registered on a dev bus (or one, with --namespace)."""
    op = {"op": "mgmt_info", "namespace": namespace} if namespace else {"op": "mgmt_list"}
    answer = _request(url, token, op)
    if as_json:
        click.echo(orjson.dumps(answer).decode())
    elif namespace:
        for key in ("namespace", "transport", "signal_count", "client_count", "started_at"):
            click.echo(f"{key:<13} {answer.get(key)}")
    else:
        rows = answer.get("namespaces") or []
        if not rows:
            click.echo("no namespaces registered")
        for row in rows:
            click.echo(
                f"{row.get('namespace')!s:<20} {row.get('transport')!s:<10} "
                f"{row.get('signal_count')!s:>8}  {row.get('started_at')}"
            )


def _request(url: str, token: str | None, message: dict[str, Any]) -> dict[str, Any]:
    """One management round trip; a clear ClickException on any failure."""
    try:
        host, port, url_token = parse_cosmo_url(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--url") from None
    answer: dict[str, Any] = {}

    async def go() -> None:
        nonlocal answer
        with anyio.fail_after(10):
            async with await open_dev_link(host, port, token=token or url_token) as link:
                await link.send(message)
                answer = await link.receive()

    try:
        anyio.run(go)
    except (SynapseError, TimeoutError, anyio.EndOfStream) as exc:
        raise click.ClickException(str(exc) or "no answer from the dev bus") from None
    if answer.get("op") == "err":
        raise click.ClickException(str(answer.get("message")))
    return answer
