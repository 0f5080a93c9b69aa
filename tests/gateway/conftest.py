"""Gateway test fixtures: an in-memory audit sink, the npm MCP servers, an MCP client over a socket."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from corral.events import Event, GatewayCall, GatewayDecision

E = TypeVar("E", bound=Event)
HERE = Path(__file__).parent


class MemorySink:
    """EventSink that keeps events in a list and redacts registered secrets like the real audit log."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.durable: list[bool] = []
        self.secrets: dict[str, str] = {}
        self._lock = threading.Lock()

    def emit(self, event: E, *, durable: bool = False) -> E:
        with self._lock:
            event.seq = len(self.events)
            self.events.append(event)
            self.durable.append(durable)
        return event

    def register_secret(self, name: str, value: str) -> None:
        self.secrets[name] = value

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    def decisions(self) -> list[GatewayDecision]:
        return self.of(GatewayDecision)

    def calls(self) -> list[GatewayCall]:
        return self.of(GatewayCall)

    def dump(self) -> str:
        return "\n".join(e.model_dump_json(by_alias=True) for e in self.events)


def npm_dir() -> Path:
    value = os.environ.get("CORRAL_TEST_NPM_DIR")
    if not value:
        if os.environ.get("CORRAL_REQUIRE_SERVICES") == "1":
            pytest.fail("CORRAL_TEST_NPM_DIR is not set but CORRAL_REQUIRE_SERVICES=1")
        pytest.skip("CORRAL_TEST_NPM_DIR is not set (run .ci/services.sh)")
    return Path(value)


def everything_entry() -> Path:
    entry = npm_dir() / "node_modules/@modelcontextprotocol/server-everything/dist/index.js"
    if not entry.is_file():
        pytest.fail(f"{entry} is missing: the npm MCP servers are not installed")
    return entry


def memory_entry() -> Path:
    return npm_dir() / "node_modules/@modelcontextprotocol/server-memory/dist/index.js"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@contextlib.contextmanager
def http_server(argv: list[str], env: dict[str, str], port: int) -> Iterator[str]:
    """Run an MCP server on a loopback port for the test; yield its /mcp URL."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def everything_http() -> Iterator[str]:
    """server-everything in streamable HTTP mode (it reads PORT)."""
    port = free_port()
    env = {"PATH": os.environ["PATH"], "PORT": str(port), "HOME": os.environ.get("HOME", "/tmp")}
    with http_server(["node", str(everything_entry()), "streamableHttp"], env, port) as url:
        yield url


@pytest.fixture
def probe_http() -> Iterator[str]:
    """The header-probe upstream (tests/gateway/probe_server.py) over streamable HTTP."""
    port = free_port()
    env = {**os.environ, "PROBE_PORT": str(port)}
    with http_server([sys.executable, str(HERE / "probe_server.py"), "http"], env, port) as url:
        yield url


def _ignore_anyio_unix_reader_race() -> None:
    """anyio 4.16's unix-socket stream registers `Future.set_result` as a raw reader callback; when the
    read is cancelled at shutdown the reader can still fire on the cancelled future and the loop reports
    InvalidStateError. It is harmless and client-side only (the gateway serves through uvicorn), so the
    test client's loop drops exactly that report and passes everything else on."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    if getattr(previous, "_corral_filter", False):
        return

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if isinstance(context.get("exception"), asyncio.InvalidStateError) and "Future.set_result" in str(
            context.get("message", "")
        ):
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handler._corral_filter = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)


@contextlib.asynccontextmanager
async def mcp_client(
    socket_path: Path, token: str | None, extra_headers: dict[str, str] | None = None
) -> AsyncIterator[ClientSession]:
    _ignore_anyio_unix_reader_race()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(extra_headers or {})
    transport = httpx2.AsyncHTTPTransport(uds=str(socket_path))
    async with (
        httpx2.AsyncClient(transport=transport, headers=headers, timeout=30) as http,
        streamable_http_client("http://localhost/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def raw_post(socket_path: Path, token: str | None, body: dict[str, Any]) -> httpx2.Response:
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=str(socket_path))) as http:
        return await http.post("http://localhost/mcp", json=body, headers=headers)


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
def sock(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Unix socket paths must stay short (108 bytes): pytest's tmp dirs can be long.
    import tempfile

    return Path(tempfile.mkdtemp(prefix="cgw-", dir="/tmp")) / "gateway.sock"


INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"},
    },
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
