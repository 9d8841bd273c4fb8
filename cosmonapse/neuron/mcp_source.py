"""The ``mcp`` source: a stdio MCP server driven through the official ``mcp`` SDK.

Who owns the session (structured concurrency)
----------------------------------------------
An MCP ``ClientSession`` and its stdio transport own tasks (a reader, a
writer, the dispatcher), so their context managers must be entered and
exited by one task, and that task needs a parent that outlives a single
TASK.  The Neuron has no task group of its own, so it *offers* one
long-running task, :meth:`McpNeuron.serve`, and lets its host run it:

* ``async with neuron:`` — the Neuron opens a task group and starts
  ``serve`` in it; ``aclose()`` / leaving the block stops it;
* or a host task group runs it: ``await tg.start(neuron.serve)`` (a Dendrite
  can do this for the Neurons it hosts, then its stop cancels the session).

While ``serve`` runs, the session is opened lazily by the first call,
initialised once and shared by every call — calls run concurrently from their
own tasks (the SDK correlates replies), each bounded by ``timeout``.  A
session that breaks (the server exited) is retired and the next call opens a
fresh one.  ``aclose()`` returns once the server process is gone.

Without a host there is nothing a session could live in, so each call opens a
short-lived session in the calling task (spawn, initialise, call, shut down):
correct and leak-free, only slower.

Input (§22): ``tool`` (else the Neuron's ``tool``, else the server's only
tool), ``arguments`` or ``args`` (else every other input key), or
``__list_tools__`` for the catalogue.  Output: ``{response, result, is_error,
content, meta: {tool, server, command}}``; catalogue ``{tools: [{name,
description, input_schema}]}``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TextIO

import anyio
from anyio.abc import TaskGroup, TaskStatus

from .base import NeuronSource
from .errors import NeuronConfigError, NeuronConnectionError, NeuronError, NeuronInputError, NeuronTimeout

__all__ = ["MCP_PRESETS", "McpNeuron"]

log: logging.Logger = logging.getLogger("cosmonapse.neuron.mcp")

#: ``server=`` presets: the command line that starts each well-known server.
MCP_PRESETS: dict[str, list[str]] = {
    "filesystem": ["npx", "-y", "@modelcontextprotocol/server-filesystem"],
    "memory": ["npx", "-y", "@modelcontextprotocol/server-memory"],
    "everything": ["npx", "-y", "@modelcontextprotocol/server-everything"],
    "sequentialthinking": ["npx", "-y", "@modelcontextprotocol/server-sequential-thinking"],
    "fetch": ["uvx", "mcp-server-fetch"],
    "git": ["uvx", "mcp-server-git"],
    "time": ["uvx", "mcp-server-time"],
}

_CONNECTION_CLOSED = -32000
_CONTROL_KEYS = frozenset({"tool", "arguments", "args", "__list_tools__"})


def _mcp_error_class() -> type[Exception]:
    try:
        from mcp.shared.exceptions import MCPError
    except ImportError:  # mcp 1.x
        from mcp.shared.exceptions import McpError as MCPError  # type: ignore[attr-defined,no-redef]
    return MCPError


def _leaf(exc: BaseException) -> BaseException:
    """The single exception inside (nested) one-member exception groups, as task groups wrap them."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class _Generation:
    """One attempt at a session: callers wait on ``ready``; the runner waits on ``release``."""

    def __init__(self) -> None:
        self.ready = anyio.Event()
        self.release = anyio.Event()
        self.session: Any = None
        self.error: BaseException | None = None
        self.tools: list[str] | None = None


class McpNeuron(NeuronSource):
    """Calls tools of a stdio MCP server; see the module docstring for session ownership."""

    def __init__(
        self,
        source: str = "mcp",
        *,
        command: str | None = None,
        args: Sequence[str] = (),
        server: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        tool: str | None = None,
        timeout: float = 60.0,
        startup_timeout: float = 30.0,
        errlog: TextIO | None = None,
    ) -> None:
        if server is not None:
            if server not in MCP_PRESETS:
                known = ", ".join(sorted(MCP_PRESETS))
                raise NeuronConfigError(f"unknown mcp server preset {server!r}; known: {known}")
            preset = MCP_PRESETS[server]
            command, args = preset[0], [*preset[1:], *args]
        if not command:
            raise NeuronConfigError("Neuron(source='mcp') needs command= (plus args=) or server=<preset>")
        try:
            from mcp import StdioServerParameters
        except ImportError as exc:  # pragma: no cover - optional dependency
            raise NeuronConfigError(
                "the mcp source needs the 'mcp' package: pip install 'cosmonapse[mcp]'"
            ) from exc
        self.source = source
        self.command: list[str] = [command, *args]
        self.server = server
        self.tool = tool
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self.errlog = errlog
        self._params = StdioServerParameters(
            command=command,
            args=list(args),
            env=dict(env) if env else None,
            cwd=os.fspath(cwd) if cwd is not None else None,
        )
        self._gen = _Generation()
        self._wake = anyio.Event()
        self._wanted = False
        self._stopping = False
        self._serving = False
        self._done: anyio.Event | None = None
        self._own_tg: TaskGroup | None = None

    def __repr__(self) -> str:
        return f"<Neuron source='mcp' command={self.command[0]!r} serving={self._serving}>"

    # -- life cycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> McpNeuron:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            await tg.start(self.serve)
        except BaseException:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
            raise
        self._own_tg = tg
        return self

    async def __aexit__(self, *exc: Any) -> None:
        tg, self._own_tg = self._own_tg, None
        try:
            await self.aclose()
        finally:
            if tg is not None:
                tg.cancel_scope.cancel()  # a no-op unless aclose() itself was interrupted
                await tg.__aexit__(*exc)

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Host the shared session until ``aclose()`` or cancellation (run it in a task group)."""
        if self._serving:
            raise RuntimeError("this mcp Neuron is already being served")
        self._serving, self._stopping, self._wanted = True, False, False
        self._done = anyio.Event()
        self._gen = _Generation()
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                if self._stopping:
                    return
                if self._wanted:
                    self._wanted = False
                    await self._host(self._gen)
        finally:
            self._serving = False
            gen = self._gen
            if not gen.ready.is_set():
                gen.error = gen.error or NeuronError("mcp Neuron closed")
                gen.ready.set()
            self._done.set()

    async def aclose(self) -> None:
        """Stop the shared session, if any, and wait until the server process is gone."""
        if not self._serving or self._done is None:
            return
        self._stopping = True
        self._retire(self._gen)
        self._wake.set()
        await self._done.wait()

    def _retire(self, gen: _Generation) -> None:
        """Stop handing *gen* out; its runner closes it. New callers get a fresh generation."""
        gen.session = None
        gen.release.set()
        if self._gen is gen:
            self._gen = _Generation()

    @asynccontextmanager
    async def _open_session(self) -> AsyncIterator[Any]:
        from mcp import ClientSession, stdio_client

        async with (
            stdio_client(self._params, errlog=self.errlog or sys.stderr) as (read, write),
            ClientSession(read, write) as session,
        ):
            with anyio.fail_after(self.startup_timeout):
                await session.initialize()
            yield session

    async def _host(self, gen: _Generation) -> None:
        try:
            async with self._open_session() as session:
                if not self._stopping and not gen.release.is_set():
                    gen.session = session
                    gen.ready.set()
                    await gen.release.wait()
        except Exception as exc:
            gen.error = exc
            log.debug("mcp session for %s ended with an error", self.command[0], exc_info=True)
        finally:
            self._retire(gen)
            if not gen.ready.is_set():
                gen.error = gen.error or NeuronError("mcp Neuron closed while the session was starting")
                gen.ready.set()

    async def _shared_session(self) -> _Generation:
        gen = self._gen
        if gen.session is None and not gen.ready.is_set():
            self._wanted = True
            self._wake.set()
        with anyio.fail_after(self.startup_timeout + 10):
            await gen.ready.wait()
        if gen.session is None:
            raise self._startup_error(gen.error)
        return gen

    def _startup_error(self, exc: BaseException | None) -> NeuronError:
        cmd = " ".join(self.command)
        exc = _leaf(exc) if exc is not None else None
        if isinstance(exc, TimeoutError):
            limit = f"startup_timeout={self.startup_timeout:g} s"
            return NeuronTimeout(f"mcp server `{cmd}` did not finish initialising within {limit}")
        if isinstance(exc, NeuronError):
            return exc
        detail = f"{type(exc).__name__}: {exc}" if exc is not None else "unknown error"
        return NeuronConnectionError(f"could not start mcp server `{cmd}`: {detail}")

    # -- calls ------------------------------------------------------------------------------------

    async def __call__(self, input: dict[str, Any], context: Any) -> dict[str, Any]:
        if self._serving and not self._stopping:
            gen = await self._shared_session()
            try:
                return await self._invoke(gen.session, gen, input)
            except NeuronConnectionError:
                self._retire(gen)
                raise
        try:
            async with self._open_session() as session:
                return await self._invoke(session, _Generation(), input)
        except BaseException as exc:
            leaf = _leaf(exc)
            if isinstance(leaf, NeuronError):
                raise leaf from None
            if isinstance(leaf, OSError | TimeoutError):
                raise self._startup_error(leaf) from None
            raise

    async def _tool_names(self, session: Any, gen: _Generation) -> list[str]:
        if gen.tools is None:
            listing = await self._request(session.list_tools(), "tools/list")
            gen.tools = [t.name for t in listing.tools]
        return gen.tools

    async def _invoke(self, session: Any, gen: _Generation, input: dict[str, Any]) -> dict[str, Any]:
        if input.get("__list_tools__"):
            listing = await self._request(session.list_tools(), "tools/list")
            return {
                "tools": [
                    {
                        "name": t.name,
                        "description": t.description or "",
                        "input_schema": t.model_dump(mode="json", by_alias=True).get("inputSchema") or {},
                    }
                    for t in listing.tools
                ]
            }
        tool = input.get("tool") or self.tool
        if not tool:
            names = await self._tool_names(session, gen)
            if len(names) != 1:
                raise NeuronInputError(
                    f"mcp server `{self.command[0]}` offers {len(names)} tools ({', '.join(names)}): "
                    "say which with input.tool or Neuron(tool=...)"
                )
            tool = names[0]
        arguments = input.get("arguments", input.get("args"))
        if arguments is None:
            arguments = {k: v for k, v in input.items() if k not in _CONTROL_KEYS}
        if not isinstance(arguments, dict):
            raise NeuronInputError("input.arguments (or args) must be an object")
        result = await self._request(session.call_tool(tool, arguments), f"tools/call {tool!r}")
        raw = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        content = raw.get("content") or []
        text = "\n".join(b.get("text", "") for b in content if b.get("type") == "text")
        return {
            "response": text,
            "result": raw.get("structuredContent"),
            "is_error": bool(raw.get("isError")),
            "content": content,
            "meta": {"tool": tool, "server": self.server, "command": list(self.command)},
        }

    async def _request(self, coro: Any, what: str) -> Any:
        """Await one MCP request under the per-request timeout, mapping SDK errors to ours."""
        mcp_error = _mcp_error_class()
        try:
            with anyio.fail_after(self.timeout):
                return await coro
        except TimeoutError:
            raise NeuronTimeout(
                f"mcp server `{self.command[0]}` did not answer {what} within timeout={self.timeout:g} s"
            ) from None
        except mcp_error as exc:
            code = getattr(getattr(exc, "error", None), "code", None)
            if code == _CONNECTION_CLOSED:
                raise NeuronConnectionError(
                    f"mcp server `{self.command[0]}` closed the connection during {what} (did it exit?)"
                ) from None
            raise NeuronError(f"mcp server `{self.command[0]}` refused {what}: {exc}") from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise NeuronConnectionError(
                f"mcp server `{self.command[0]}` is gone (connection closed during {what})"
            ) from None
