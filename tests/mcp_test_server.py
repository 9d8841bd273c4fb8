"""A tiny stdio MCP server for the ``mcp`` Neuron tests (run as a subprocess).

Tools: ``add`` (structured result), ``echo``, ``pid`` (which process answers:
proves one session is reused), ``fail`` (a tool error), ``meet`` (returns
only once two calls are in flight together: proves concurrency without
sleeps), ``hang`` (never returns: per-request timeouts) and ``crash`` (the
server exits mid-call).
"""

from __future__ import annotations

import os

import anyio

try:
    from mcp.server.mcpserver import MCPServer as Server  # mcp 2.x
    from mcp.server.mcpserver.exceptions import ToolError
except ImportError:  # mcp 1.x
    from mcp.server.fastmcp import FastMCP as Server  # type: ignore[no-redef]
    from mcp.server.fastmcp.exceptions import ToolError  # type: ignore[no-redef]

server = Server("cosmonapse-test", log_level="WARNING")
_meeting: dict = {}


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def pid() -> str:
    """The server's process id."""
    return str(os.getpid())


@server.tool()
def fail(reason: str = "boom") -> str:
    """Always fail (a deliberate tool error: the message reaches the client)."""
    raise ToolError(reason)


@server.tool()
async def meet(name: str) -> str:
    """Return only once two calls are in flight at the same time."""
    if "both" not in _meeting:
        _meeting["both"] = anyio.Event()
    _meeting["count"] = _meeting.get("count", 0) + 1
    if _meeting["count"] >= 2:
        _meeting["both"].set()
    await _meeting["both"].wait()
    return f"{name} met"


@server.tool()
def crash() -> str:
    """Exit the server process at once (a crashed server)."""
    os._exit(3)


@server.tool()
async def hang() -> str:
    """Never return."""
    await anyio.sleep_forever()
    return "unreachable"


if __name__ == "__main__":
    server.run("stdio")
