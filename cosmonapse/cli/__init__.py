"""``cosmo``: the command line.  One click group per noun (``cosmo synapse ...``)."""

from __future__ import annotations

import logging

import click

from .. import __version__
from .conformance import conformance
from .synapse import synapse

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cosmo")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
    help="Log level of the cosmonapse loggers (stderr).",
)
def cli(log_level: str) -> None:
    """Cosmonapse tools: run a dev bus, manage namespaces."""
    logging.basicConfig(level=log_level.upper(), format="cosmo: %(levelname)s: %(message)s")


cli.add_command(synapse)
cli.add_command(conformance)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``cosmo`` console script and ``python -m cosmonapse``."""
    cli.main(args=argv, prog_name="cosmo")
