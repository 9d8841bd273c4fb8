"""``cosmo validate``: check frames against the protocol rules and say what is wrong, where.

Sources: a file (JSON Lines, one JSON array of frames, or one JSON object), ``-`` for stdin,
or ``--live``: a real subscription to ``cosmonapse.<ns>.>``.  On ``cosmo://`` the live form
reads the raw frames off the dev bus, so it sees frames the SDK's decoder would drop; on
``nats://`` it goes through the Synapse API, which drops undecodable frames itself (their
payloads are still checked).

Rules: the envelope as the reference decoder applies them (§1.2; ``--strict`` also refuses
missing id / trace_id / ts), then the payload of the type (§4, see ``cosmo schema``).
Warnings (valid, but worth knowing): ids not in ULID form, fields a lenient receiver had to
fill in, top-level keys receivers ignore.  Exit status 1 when any frame is invalid.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import attrs
import click
import orjson

from ..codec import signal_from_dict, signal_to_dict
from ..errors import SignalDecodeError
from ..signal import Signal
from ..subjects import namespace_wildcard
from ..synapse.connect import connect_synapse
from ..synapse.dev import open_dev_link, parse_cosmo_url
from ._common import backend_option, bus_options, echo_json, json_option, run_async, until_signalled
from .wire_schema import payload_problems

__all__ = ["Verdict", "check_frame", "validate"]

_KEYS = frozenset({"v", "id", "trace_id", "parent_id", "type", "directed", "ts", "payload", "meta"})
_ULID = {
    "id": re.compile(r"^evt_[0-9A-HJKMNP-TV-Z]{26}$"),
    "trace_id": re.compile(r"^trc_[0-9A-HJKMNP-TV-Z]{26}$"),
}


@attrs.define
class Verdict:
    """What is wrong with one frame (``errors``) and what is merely odd (``warnings``)."""

    where: str
    type: str | None = None
    id: str | None = None
    errors: list[dict[str, str | None]] = attrs.field(factory=list)
    warnings: list[dict[str, str | None]] = attrs.field(factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {"where": self.where, "ok": self.ok, "type": self.type, "id": self.id,
                "errors": self.errors, "warnings": self.warnings}  # fmt: skip

    def lines(self) -> Iterator[str]:
        what = " ".join(x for x in (self.type, self.id) if x)
        for e in self.errors:
            yield f"{self.where}: error: {_at(e)}{e['message']}" + (f"  [{what}]" if what else "")
        for w in self.warnings:
            yield f"{self.where}: warning: {_at(w)}{w['message']}" + (f"  [{what}]" if what else "")


def _at(problem: dict[str, str | None]) -> str:
    return f"{problem['field']}: " if problem.get("field") else ""


def check_frame(raw: Any, where: str, *, strict: bool = False) -> Verdict:
    """Check one decoded JSON value (or the text of a frame) as a Signal."""
    verdict = Verdict(where)
    if isinstance(raw, str | bytes):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            verdict.errors.append({"field": None, "message": f"not JSON: {exc}"})
            return verdict
    if isinstance(raw, dict):
        verdict.type = raw.get("type") if isinstance(raw.get("type"), str) else None
        verdict.id = raw.get("id") if isinstance(raw.get("id"), str) else None
    try:
        sig = signal_from_dict(raw, strict=strict)
    except SignalDecodeError as exc:
        message = str(exc).removeprefix("invalid Signal: ")
        if exc.field:
            message = message.removeprefix(f"field {exc.field!r}: ")
        verdict.errors.append({"field": exc.field, "message": message})
        return verdict
    for where, what in payload_problems(sig.type, sig.payload):
        verdict.errors.append({"field": where, "message": what})
    for key in sig.filled:
        verdict.warnings.append(
            {"field": key, "message": "missing; a lenient receiver fills it in (send one)"}
        )
    for key, pattern in _ULID.items():
        value = getattr(sig, key)
        if key not in sig.filled and not pattern.match(value):
            verdict.warnings.append({"field": key, "message": f"not a ULID id ({value!r})"})
    extra = sorted(set(raw) - _KEYS) if isinstance(raw, dict) else []
    if extra:
        verdict.warnings.append(
            {"field": None, "message": f"unknown top-level keys ignored by receivers: {extra}"}
        )
    return verdict


def _frames(text: str, name: str) -> Iterator[tuple[str, Any]]:
    """(where, frame) pairs: a JSON array, one JSON object, or JSON Lines."""
    stripped = text.strip()
    if stripped[:1] in "[{":
        try:
            whole = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            whole = None
        if isinstance(whole, list):
            for i, frame in enumerate(whole):
                yield f"{name}[{i}]", frame
            return
        if isinstance(whole, dict):
            yield f"{name}:1", whole
            return
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield f"{name}:{n}", line


@click.command()
@click.argument("source", required=False, metavar="FILE|-")
@click.option("--live", is_flag=True, help="Check the frames on a real bus subscription instead.")
@bus_options
@click.option("--count", "-c", type=click.IntRange(min=1), default=None, help="--live: exit after N frames.")
@click.option("--strict", is_flag=True, help="Also refuse frames without id, trace_id or ts.")
@click.option("--quiet", "-q", is_flag=True, help="Print problems only (files: the default).")
@json_option
@backend_option
def validate(
    source: str | None, live: bool, url: str, namespace: str, count: int | None, strict: bool, quiet: bool,
    as_json: bool, backend: str,
) -> None:  # fmt: skip
    """Check Signal frames (FILE, - for stdin, or --live on a bus) against the protocol."""
    if live == (source is not None):
        raise click.UsageError("give a FILE (or - for stdin), or --live")
    if live:
        _live(url, namespace, count, strict, quiet, as_json, backend)
        return
    assert source is not None
    if source == "-":
        text, name = sys.stdin.read(), "<stdin>"
    else:
        try:
            with open(source, encoding="utf-8") as fh:
                text, name = fh.read(), source
        except OSError as exc:
            raise click.BadParameter(str(exc), param_hint="FILE") from None
    total = bad = warned = 0
    for where, frame in _frames(text, name):
        verdict = check_frame(frame, where, strict=strict)
        total += 1
        bad += not verdict.ok
        warned += bool(verdict.warnings)
        if as_json:
            echo_json(verdict.to_json())
        else:
            for line in verdict.lines():
                click.echo(line)
    if not as_json:
        click.echo(f"{total} frames: {total - bad} valid, {bad} invalid, {warned} with warnings", err=True)
    if bad:
        sys.exit(1)


def _live(
    url: str, namespace: str, count: int | None, strict: bool, quiet: bool, as_json: bool, backend: str
) -> None:
    seen = {"total": 0, "bad": 0}
    done = anyio.Event()

    def report(frame: Any, subject: str) -> None:
        verdict = check_frame(frame, subject, strict=strict)
        seen["total"] += 1
        seen["bad"] += not verdict.ok
        if as_json:
            echo_json(verdict.to_json())
        elif verdict.errors or verdict.warnings:
            for line in verdict.lines():
                click.echo(line)
        elif not quiet:
            click.echo(f"{subject}: ok  [{verdict.type} {verdict.id}]")
        sys.stdout.flush()
        if count is not None and seen["total"] >= count:
            done.set()

    async def raw_dev() -> None:
        host, port, token = parse_cosmo_url(url)
        async with await open_dev_link(host, port, token=token) as link:
            sub = {
                "op": "sub",
                "sub_id": "cosmo-validate",
                "subject": namespace_wildcard(namespace),
                "queue_group": None,
            }
            await link.send(sub)
            await link.send({"op": "ping"})
            while (await link.receive()).get("op") != "pong":
                pass
            _started()
            while not done.is_set():
                msg = await link.receive()
                if msg.get("op") == "msg":
                    report(msg.get("frame"), str(msg.get("subject")))

    async def through_synapse() -> None:
        synapse = await connect_synapse(url)
        try:

            async def check(sig: Signal) -> None:
                if not done.is_set():
                    report(signal_to_dict(sig), f"{namespace_wildcard(namespace)[:-2]}.{sig.type.value}")

            await synapse.subscribe(namespace_wildcard(namespace), check)
            _started()
            await done.wait()
        finally:
            await synapse.close()  # shields its own shutdown

    def _started() -> None:
        click.echo(f"cosmo validate: checking frames on {namespace} ({url.split('?', 1)[0]})", err=True)

    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def reader() -> None:
                await (raw_dev() if url.lower().startswith("cosmo://") else through_synapse())
                tg.cancel_scope.cancel()

            async def stopper() -> None:
                await until_signalled()
                done.set()
                tg.cancel_scope.cancel()

            async def counted() -> None:
                await done.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(reader)
            tg.start_soon(stopper)
            tg.start_soon(counted)

    run_async(main, backend)
    if not as_json:
        click.echo(
            f"{seen['total']} frames: {seen['total'] - seen['bad']} valid, {seen['bad']} invalid", err=True
        )
    if seen["bad"]:
        sys.exit(1)
