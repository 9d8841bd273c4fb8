"""``cosmo prism`` (and ``cosmo doppler --prism``): serve Prism for one namespace of a bus.

The bus URL and the namespace come from this command line only.  Prism binds 127.0.0.1
unless ``--host`` names another address *and* ``--expose`` says that is intended (a
warning is printed then).  The URL printed carries the session token the page needs.
"""

from __future__ import annotations

import sys
import webbrowser
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..prism import MissingExtraError, require_extra
from ..prism.fanout import DEFAULT_HISTORY
from ..prism.guard import is_loopback
from ._common import backend_option, bus_options, run_async, until_signalled

__all__ = ["prism", "prism_options", "run_prism"]

DEFAULT_PRISM_PORT = 7071
F = TypeVar("F", bound=Callable[..., Any])


def prism_options(fn: F) -> F:
    """The options of the Prism server, shared by ``cosmo prism`` and ``cosmo doppler --prism``."""
    options = [
        click.option(
            "--port", default=DEFAULT_PRISM_PORT, show_default=True, type=click.IntRange(0, 65535),
            help="Port of the page (0 = any free port).",
        ),
        click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind."),
        click.option(
            "--expose", is_flag=True,
            help="Allow --host to be a non-loopback address (anyone with the link reads the bus).",
        ),
        click.option(
            "--allow-host", "allowed_hosts", multiple=True, metavar="NAME",
            help="Another host name the page may be reached by (Host/Origin check; repeatable).",
        ),
        click.option("--no-browser", is_flag=True, help="Print the URL, do not open a browser."),
        click.option(
            "--history", default=DEFAULT_HISTORY, show_default=True, type=click.IntRange(min=0),
            help="Signals replayed to a page that opens late.",
        ),
        click.option(
            "--trace-url", default=None, envvar="COSMO_PRISM_TRACE_URL", metavar="TEMPLATE",
            help="Link OTel trace ids to your tracing UI, e.g. http://127.0.0.1:16686/trace/{trace_id}.",
        ),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


def run_prism(
    *,
    url: str,
    namespace: str,
    backend: str,
    port: int,
    host: str,
    expose: bool,
    allowed_hosts: tuple[str, ...],
    no_browser: bool,
    history: int,
    trace_url: str | None = None,
) -> None:
    """Check the options, then serve until Ctrl-C / SIGTERM."""
    try:
        require_extra()
    except MissingExtraError as exc:
        raise click.ClickException(str(exc)) from None
    from ..prism.server import PrismServer

    if not is_loopback(host) and not expose:
        raise click.UsageError(
            f"--host {host} is not a loopback address: anyone who can reach it and has the link "
            "reads every Signal of the namespace. Add --expose if that is what you want."
        )
    if not is_loopback(host):
        click.echo(
            f"cosmo prism: WARNING: serving on {host}, not loopback; the session token in the URL "
            "is the only thing between the network and your bus traffic.",
            err=True,
        )
    try:
        server = PrismServer(
            url, namespace, host=host, port=port, allowed_hosts=allowed_hosts, history=history,
            trace_url=trace_url,
        )  # fmt: skip
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--trace-url") from None

    def ready(page: str) -> None:
        click.echo(f"cosmo prism: {namespace} on {url.split('?', 1)[0]} at {page}")
        sys.stdout.flush()
        if not no_browser:
            webbrowser.open(page)  # allowed: hands the URL to the user's browser, which outlives us

    run_async(lambda: server.serve(until_signalled, ready), backend)
    click.echo("cosmo prism: stopped", err=True)


@click.command()
@bus_options
@prism_options
@backend_option
def prism(**kw: Any) -> None:
    """Serve Prism, the live read-only browser view of a namespace (http://127.0.0.1:7071)."""
    run_prism(**kw)
