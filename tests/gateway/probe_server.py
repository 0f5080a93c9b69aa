"""A small MCP server the gateway tests use as an upstream where the npm servers can't show a fact:
the headers it received (`headers`), a crash in the middle of a call (`crash`), a hang (`hang`), and a
tool whose schema changes between starts (`query` gains an argument when PROBE_SCHEMA_FILE says v2).

    python probe_server.py stdio        # or: PROBE_PORT=8123 python probe_server.py http
"""

from __future__ import annotations

import base64
import os
import sys
import time
from pathlib import Path

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("probe")


def _variant() -> str:
    path = os.environ.get("PROBE_SCHEMA_FILE")
    return Path(path).read_text().strip() if path and Path(path).exists() else "v1"


@server.tool()
def headers(ctx: Context) -> dict[str, str]:
    """The HTTP request headers this server received for this call."""
    return dict(ctx.headers or {})


@server.tool()
def env(name: str) -> str:
    """One environment variable of this server process."""
    return os.environ.get(name, "")


@server.tool()
def stderr(name: str) -> str:
    """Print an environment variable to this server's stderr, raw and as base64, one character per write
    (as a server that logs its configuration would, and split wherever a reader could split it)."""
    value = os.environ.get(name, "")
    for text in (f"token={value}\n", f"b64={base64.b64encode(value.encode()).decode()}\n"):
        for char in text:
            sys.stderr.write(char)
            sys.stderr.flush()
    return "printed"


@server.tool()
def crash() -> str:
    """Exit the process in the middle of the call."""
    os._exit(3)


@server.tool()
def hang(seconds: float = 60.0) -> str:
    """Block the whole server for `seconds`."""
    time.sleep(seconds)
    return "woke"


if _variant() == "v2":

    @server.tool()
    def query(sql: str, limit: int = 10) -> str:
        """Run a query (v2: with a limit)."""
        return f"ran {sql} limit {limit}"

else:

    @server.tool()
    def query(sql: str) -> str:
        """Run a query."""
        return f"ran {sql}"


if __name__ == "__main__":
    if sys.argv[1:] == ["http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(os.environ["PROBE_PORT"]))
    else:
        server.run("stdio")
