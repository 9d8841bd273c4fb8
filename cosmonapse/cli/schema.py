"""``cosmo schema``: the JSON Schema of the envelope and of each type's payload."""

from __future__ import annotations

import click
import orjson

from ..signal import SignalType
from .wire_schema import envelope_schema, payload_schema, schema_document

__all__ = ["schema"]


@click.command()
@click.argument("type_name", required=False, metavar="[TYPE|envelope]")
@click.option("--list", "list_types", is_flag=True, help="List the Signal types.")
@click.option("--compact", is_flag=True, help="One line instead of indented JSON.")
def schema(type_name: str | None, list_types: bool, compact: bool) -> None:
    """Print JSON Schema (2020-12): everything, the envelope, or one type's payload."""
    if list_types:
        for t in SignalType:
            click.echo(t.value)
        return
    if type_name is None:
        doc = schema_document()
    elif type_name.lower() == "envelope":
        doc = envelope_schema()
    else:
        try:
            doc = payload_schema(SignalType(type_name.upper()))
        except ValueError:
            raise click.BadParameter(
                f"unknown type {type_name!r}; `cosmo schema --list` shows them", param_hint="TYPE"
            ) from None
    option = 0 if compact else orjson.OPT_INDENT_2
    click.echo(orjson.dumps(doc, option=option).decode())
