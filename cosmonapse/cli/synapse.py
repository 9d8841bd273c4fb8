"""``cosmo synapse ...``: run the dev bus and manage its namespaces (§17.3 management ops)."""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
from typing import Any

import anyio
import click
import orjson

from ..errors import SynapseError
from ..synapse.dev import DEFAULT_PORT, open_dev_link, parse_cosmo_url
from ..synapse.dev_limits import DEFAULT_LIMITS, DevBusLimits
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
@click.option(
    "--max-connections",
    default=DEFAULT_LIMITS.max_connections,
    show_default=True,
    type=click.IntRange(min=1),
    help="Open connections accepted; more are refused with an err.",
)
@click.option(
    "--auth-timeout",
    default=DEFAULT_LIMITS.auth_timeout,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="With --token: how long a new connection has to authenticate.",
)
@click.option(
    "--tail",
    is_flag=True,
    help="Print one line per published Signal (dropped, not waited for, if stdout is slow).",
)
@click.option(
    "--quiet", "-q", is_flag=True, help="Only the listening line and errors: no tail, no log below ERROR."
)
@click.option("--backend", type=_BACKENDS, default="asyncio", show_default=True, help="Event loop to run on.")
def start(
    transport: str,
    host: str,
    port: int,
    namespace: str,
    token: str | None,
    max_line: int,
    max_connections: int,
    auth_timeout: float,
    tail: bool,
    quiet: bool,
    backend: str,
) -> None:
    """Run the dev bus (TRANSPORT: memory) until Ctrl-C, SIGTERM or `cosmo synapse stop`."""
    if token == "":
        token = None
    if tail and quiet:
        raise click.UsageError("--tail and --quiet exclude each other")
    if quiet:
        logging.getLogger("cosmonapse").setLevel(logging.ERROR)
    limits = DevBusLimits(max_connections=max_connections, auth_timeout=auth_timeout)
    printer = TailPrinter(sys.stdout) if tail else None
    server = DevSynapseServer(
        host,
        port,
        token=token,
        max_line=max_line,
        limits=limits,
        on_publish=printer.signal if printer is not None else None,
    )
    try:
        anyio.run(_serve, server, namespace, printer, quiet, backend=backend)
    except KeyboardInterrupt:  # Ctrl-C before the signal receiver was installed
        pass
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None
    finally:
        if printer is not None:
            printer.close()


async def _serve(server: DevSynapseServer, namespace: str, printer: TailPrinter | None, quiet: bool) -> None:
    # Signals are caught from before the listening line: a SIGTERM sent as soon as a
    # supervisor reads that line stops the bus cleanly (exit 0), not by the default action.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with server, anyio.create_task_group() as tg:
            registered = anyio.Event()
            tg.start_soon(_hold_namespace, server, namespace, registered, tg.cancel_scope)
            with anyio.fail_after(10):
                await registered.wait()
            auth = " (token required)" if server.token else ""
            click.echo(f"cosmo synapse listening on {server.url} (namespace {namespace}){auth}")
            sys.stdout.flush()
            if printer is not None:
                printer.start()  # from here on stdout is the printer's: nothing else writes to it
            async for _ in signals:
                break
            tg.cancel_scope.cancel()
    if not quiet:
        _say(printer, f"cosmo synapse stopped (namespace {namespace}, {server.stats.published} signals)")


def _say(printer: TailPrinter | None, text: str) -> None:
    """A status line: through the tail printer when there is one (it never blocks), else echoed."""
    if printer is not None:
        printer.line(text)
    else:
        click.echo(text)


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
                # stderr: stdout may belong to a --tail printer nobody reads.
                click.echo(f"namespace {namespace} stopped by a management request", err=True)
                scope.cancel()
                return


class TailPrinter:
    """``--tail``'s output, which must never hold up the bus.

    ``on_publish`` runs inside the server's read loop, so it only formats a line
    and puts it in a bounded queue (``max_lines``); a daemon thread writes the
    queue to the stream's file descriptor.  When the reader of stdout is slower
    than the bus (or gone), the queue fills and further lines are dropped and
    counted; a ``… N lines dropped`` note follows once stdout moves again.
    ``close()`` waits a little for the queue to drain, never for a stuck stdout.
    """

    def __init__(self, stream: Any, *, max_lines: int = 10_000) -> None:
        self._fd: int = stream.fileno()
        self._queue: queue.Queue[bytes | None] = queue.Queue(max_lines)
        self.dropped: int = 0
        self._noted = 0
        self._thread = threading.Thread(  # allowed: stdout writer; a blocked pipe must not block the bus
            target=self._run, name="cosmo-synapse-tail", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def signal(self, subject: str, frame: Any) -> None:
        """The server's ``on_publish`` hook: one line per Signal, never waiting."""
        try:
            sig = orjson.loads(frame) if isinstance(frame, str) else {}
        except orjson.JSONDecodeError:
            sig = {}
        if not isinstance(sig, dict):
            sig = {}
        self.line(
            f"{sig.get('ts', '?'):<28} {sig.get('type', '?'):<20} {sig.get('trace_id', '?'):<31} {subject}"
        )

    def line(self, text: str) -> None:
        try:
            self._queue.put_nowait((text + "\n").encode("utf-8", "replace"))
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            chunks = [item]
            while len(chunks) < 512:  # one write for what is already queued
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._write(b"".join(chunks))
                    return
                chunks.append(more)
            dropped = self.dropped
            if dropped > self._noted:
                chunks.append(f"… {dropped - self._noted} lines dropped (stdout too slow)\n".encode())
                self._noted = dropped
            if not self._write(b"".join(chunks)):
                return

    def _write(self, data: bytes) -> bool:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:  # stdout closed (EPIPE) or broken: nothing more to print
            return False
        return True

    def close(self, timeout_s: float = 1.0) -> None:
        """Let the queued lines out (up to *timeout_s*); report on stderr what never made it."""
        if self._thread.is_alive():
            try:
                self._queue.put(None, timeout=timeout_s)
            except queue.Full:
                pass
            self._thread.join(timeout_s)
        if self._thread.is_alive() or self.dropped:
            left = self._queue.qsize()
            note = f"--tail dropped {self.dropped} lines, {left} left unwritten (stdout too slow)"
            click.echo(f"cosmo synapse: {note}", err=True)


# -- management ------------------------------------------------------------------
_URL = click.option(
    "--url", default=f"cosmo://127.0.0.1:{DEFAULT_PORT}", show_default=True, help="Dev bus URL."
)


@synapse.command("stop")
@_URL
@click.option("--namespace", "-n", required=True, help="Namespace to stop.")
@click.option("--token", envvar=_TOKEN_ENV, default=None, help=f"Token of the bus (also ${_TOKEN_ENV}).")
@click.option(
    "--timeout",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="How long to wait for the bus to shut down.",
)
def stop(url: str, namespace: str, token: str | None, timeout: float) -> None:
    """Stop a namespace; `cosmo synapse start` that owns it shuts its bus down.

    Exits 0 only when the bus really went away: when the namespace's owner keeps
    the bus running (it is not a `cosmo synapse start`), it says so and exits 1.
    """
    where = url.split("?", 1)[0]
    answer, shut_down = _request(url, token, {"op": "mgmt_stop", "namespace": namespace}, wait_eof_s=timeout)
    name = answer.get("namespace")
    if not shut_down:
        raise click.ClickException(
            f"namespace {name} was removed from {where}, but the bus is still running {timeout:g}s later "
            "(its owner is not a `cosmo synapse start` that stops with it)"
        )
    click.echo(f"stopped namespace {name} on {where}; the bus has shut down")


@synapse.command("view")
@_URL
@click.option("--namespace", "-n", default=None, help="Show one namespace in detail.")
@click.option("--token", envvar=_TOKEN_ENV, default=None, help=f"Token of the bus (also ${_TOKEN_ENV}).")
@click.option("--json", "as_json", is_flag=True, help="Print the server's answer as JSON.")
def view(url: str, namespace: str | None, token: str | None, as_json: bool) -> None:
    """List the namespaces registered on a dev bus (or one, with --namespace)."""
    op = {"op": "mgmt_info", "namespace": namespace} if namespace else {"op": "mgmt_list"}
    answer, _ = _request(url, token, op)
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


def _request(
    url: str, token: str | None, message: dict[str, Any], *, wait_eof_s: float | None = None
) -> tuple[dict[str, Any], bool]:
    """One management round trip; a clear ClickException on any failure.

    With *wait_eof_s*, then waits that long for the bus to close the connection;
    returns (answer, whether it did).
    """
    try:
        host, port, url_token = parse_cosmo_url(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--url") from None
    answer: dict[str, Any] = {}
    closed = False

    async def go() -> None:
        nonlocal answer, closed
        with anyio.fail_after(10):
            async with await open_dev_link(host, port, token=token or url_token) as link:
                await link.send(message)
                answer = await link.receive()
                if wait_eof_s is None or answer.get("op") == "err":
                    return
                with anyio.move_on_after(wait_eof_s):
                    try:
                        while True:
                            await link.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                        closed = True

    try:
        anyio.run(go)
    except (SynapseError, TimeoutError, anyio.EndOfStream) as exc:
        raise click.ClickException(str(exc) or "no answer from the dev bus") from None
    if answer.get("op") == "err":
        raise click.ClickException(str(answer.get("message")))
    return answer, closed
