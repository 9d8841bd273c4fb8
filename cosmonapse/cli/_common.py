"""What the bus commands share: the --url/-n/--backend/--json options and how they run."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import click
import orjson

from ..codec import signal_to_dict
from ..errors import CosmonapseError
from ..signal import Signal
from ..synapse.connect import make_synapse
from ..synapse.dev import DEFAULT_PORT

__all__ = [
    "DEFAULT_BUS",
    "StdoutClosed",
    "backend_option",
    "bus_options",
    "echo_json",
    "emit_line",
    "json_option",
    "run_async",
    "until_signalled",
]

DEFAULT_BUS = f"cosmo://127.0.0.1:{DEFAULT_PORT}"
F = TypeVar("F", bound=Callable[..., Any])


def _check_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        make_synapse(value)  # builds, does not connect
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _check_namespace(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value or any(c in value for c in ".*> \t"):
        raise click.BadParameter(f"must be one subject token (no '.', '*', '>', spaces): {value!r}")
    return value


def bus_options(fn: F) -> F:
    """``--url`` (cosmo:// or nats://) and ``-n/--namespace``."""
    fn = click.option(
        "--namespace", "-n", default="dev", show_default=True, callback=_check_namespace,
        help="Namespace to work on.",
    )(fn)  # fmt: skip
    return click.option(
        "--url", default=DEFAULT_BUS, show_default=True, envvar="SYNAPSE_URL", callback=_check_url,
        help="Bus URL: cosmo://host:port or nats://host:port (also $SYNAPSE_URL).",
    )(fn)  # fmt: skip


def backend_option(fn: F) -> F:
    return click.option(
        "--backend", type=click.Choice(["asyncio", "trio"]), default="asyncio", show_default=True,
        help="Event loop to run on.",
    )(fn)  # fmt: skip


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON).")(fn)


class StdoutClosed(Exception):
    """The reader of our stdout went away (``cosmo doppler | head``): stop quietly."""


def emit_line(text: str) -> None:
    """Print one line and flush; ``StdoutClosed`` when nobody reads stdout any more."""
    try:
        click.echo(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        raise StdoutClosed from None


def echo_json(value: Any) -> None:
    """One compact JSON value on one line of stdout (Signals as their wire dict)."""
    if isinstance(value, Signal):
        value = signal_to_dict(value)
    emit_line(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode())


async def until_signalled() -> None:
    """Return at the first SIGINT or SIGTERM."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


def run_async(main: Callable[[], Awaitable[Any]], backend: str) -> Any:
    """Run *main* on *backend*; bus failures become one clear line and exit status 1."""
    try:
        return anyio.run(main, backend=backend)
    except (KeyboardInterrupt, StdoutClosed):
        return None
    except (CosmonapseError, OSError, TimeoutError) as exc:
        raise click.ClickException(_describe(exc)) from None
    except BaseExceptionGroup as group:
        inner = _single(group)
        if isinstance(inner, StdoutClosed):
            return None
        if isinstance(inner, click.ClickException):
            raise inner from None
        if isinstance(inner, CosmonapseError | OSError | TimeoutError):
            raise click.ClickException(_describe(inner)) from None
        raise


def _single(group: BaseExceptionGroup[Any]) -> BaseException:
    """The one exception at the bottom of nested single-member groups (else the group)."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
