"""``cosmo``: the command line.  One click group or command per noun (``cosmo synapse ...``)."""

from __future__ import annotations

import logging

import click

from .. import __version__
from .answer import answer
from .completion import completion
from .conformance import conformance
from .dispatch import dispatch
from .doppler import doppler
from .prism import prism
from .registry import registry
from .schema import schema
from .synapse import synapse
from .validate import validate

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
    """Cosmonapse tools: run a dev bus, watch it, dispatch, answer, validate."""
    logging.basicConfig(level=log_level.upper(), format="cosmo: %(levelname)s: %(message)s")


# The bus
cli.add_command(synapse)
# Watching it
cli.add_command(doppler)
cli.add_command(prism)
cli.add_command(registry)
# Acting on it
cli.add_command(dispatch)
cli.add_command(answer)
# The protocol
cli.add_command(validate)
cli.add_command(schema)
cli.add_command(conformance)
# The shell
cli.add_command(completion)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``cosmo`` console script and ``python -m cosmonapse``."""
    cli.main(args=argv, prog_name="cosmo")
