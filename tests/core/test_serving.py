"""corral/serving.py: the one way the proxy and the gateway serve an ASGI app in a thread."""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from corral.errors import ConfigError, ServeError
from corral.forge.local import LocalForge
from corral.gateway.run import RunGateway, RunGatewaySpec
from corral.serving import MAX_HEAD_BYTES, BackgroundServer, unix_in_use
from tests.gateway.conftest import MemorySink


def hello_app(text: str) -> Starlette:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse(text)

    return Starlette(routes=[Route("/", hello)])


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cs", dir="/tmp"))  # sun_path holds 108 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


def get_unix(path: Path) -> str:
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), base_url="http://local") as client:
        return client.get("/").text


def test_unix_socket_served_and_removed_on_stop(short_dir: Path) -> None:
    path = short_dir / "app.sock"
    server = BackgroundServer(hello_app("one"), name="test app")
    server.start(unix_path=path, unix_mode=0o600)
    try:
        assert get_unix(path) == "one" and unix_in_use(path)
        assert path.stat().st_mode & 0o777 == 0o600
        with pytest.raises(ServeError, match="already serving"):
            server.start(tcp=("127.0.0.1", 0))
    finally:
        server.stop()
    assert not path.exists()
    server.stop()  # idempotent


def test_in_use_socket_refused_and_left_serving(short_dir: Path) -> None:
    path = short_dir / "app.sock"
    first = BackgroundServer(hello_app("first"), name="first app")
    first.start(unix_path=path)
    try:
        second = BackgroundServer(hello_app("second"), name="second app")
        with pytest.raises(ServeError, match=r"second app on .*app\.sock: the path is in use"):
            second.start(unix_path=path)
        second.stop()
        # The refused server took nothing away: the first still owns and answers on the path.
        assert get_unix(path) == "first"
    finally:
        first.stop()


def test_stale_socket_replaced_and_other_files_refused(short_dir: Path) -> None:
    path = short_dir / "app.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays and nothing listens: what a killed run leaves
    assert path.is_socket() and not unix_in_use(path)
    server = BackgroundServer(hello_app("fresh"), name="test app")
    server.start(unix_path=path)
    try:
        assert get_unix(path) == "fresh"
    finally:
        server.stop()
    plain = short_dir / "notes.txt"
    plain.write_text("not a socket")
    with pytest.raises(ServeError, match="in use"):
        BackgroundServer(hello_app("x"), name="test app").start(unix_path=plain)
    assert plain.read_text() == "not a socket"


def test_tcp_port_served_and_busy_port_refused() -> None:
    server = BackgroundServer(hello_app("tcp"), name="test app")
    server.start(tcp=("127.0.0.1", 0))
    try:
        assert server.port and httpx.get(f"http://127.0.0.1:{server.port}/").text == "tcp"
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            other = BackgroundServer(hello_app("x"), name="other app")
            with pytest.raises(ServeError, match=f"other app on 127.0.0.1:{taken.getsockname()[1]}"):
                other.start(tcp=("127.0.0.1", taken.getsockname()[1]))
    finally:
        server.stop()
    with pytest.raises(ServeError, match="needs a unix socket path or a TCP address"):
        BackgroundServer(hello_app("x"), name="test app").start()


def echo_size_app() -> Starlette:
    async def size(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(len(await request.body())))

    return Starlette(routes=[Route("/", size, methods=["POST"])])


def test_request_head_is_capped_but_a_large_body_is_not() -> None:
    server = BackgroundServer(echo_size_app(), name="test app")
    server.start(tcp=("127.0.0.1", 0))
    assert server.port is not None
    try:
        # A body far over the head cap, in one request and then again on the same connection.
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as client:
            for _ in range(2):
                assert client.post("/", content=b"b" * (4 * MAX_HEAD_BYTES)).text == str(4 * MAX_HEAD_BYTES)
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
            conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
            pad = b"x-pad: " + b"a" * 65536 + b"\r\n"
            sent = 0
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                while sent < 64 * MAX_HEAD_BYTES:
                    conn.sendall(pad)
                    sent += len(pad)
            answer = conn.recv(200)
        assert answer.startswith(b"HTTP/1.1 431 ")
        assert sent < 64 * MAX_HEAD_BYTES, "the server kept reading an endless head"
    finally:
        server.stop()


def test_around_runs_on_the_server_loop_and_its_error_reaches_start(short_dir: Path) -> None:
    steps: list[str] = []

    @contextlib.asynccontextmanager
    async def around() -> AsyncIterator[None]:
        steps.append("enter")
        yield
        steps.append("exit")

    server = BackgroundServer(hello_app("x"), name="test app", around=around)
    server.start(unix_path=short_dir / "a.sock")
    assert steps == ["enter"] and server.running
    server.stop()
    assert steps == ["enter", "exit"] and not server.running

    @contextlib.asynccontextmanager
    async def failing() -> AsyncIterator[None]:
        raise ConfigError("upstream x is misconfigured", hint="fix it")
        yield

    broken = BackgroundServer(hello_app("x"), name="test app", around=failing)
    with pytest.raises(ConfigError, match="upstream x is misconfigured"):
        broken.start(unix_path=short_dir / "b.sock")
    assert not (short_dir / "b.sock").exists()


def test_gateway_refuses_a_socket_another_gateway_serves(short_dir: Path, tmp_path: Path) -> None:
    # The gateway used to delete its socket file unchecked: a second gateway on the same path took it
    # over from the first, which kept running without a way in.
    path = short_dir / "gateway.sock"
    sink = MemorySink()
    first = RunGateway.start(
        RunGatewaySpec("run-a", ["forge.list_checks"], path, forge=LocalForge(tmp_path / "f")), sink
    )
    try:
        with pytest.raises(ServeError, match=r"gateway on .*gateway\.sock: the path is in use"):
            RunGateway.start(
                RunGatewaySpec("run-b", ["forge.list_checks"], path, forge=LocalForge(tmp_path / "g")), sink
            )
        assert unix_in_use(path)
        params = {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        }
        listed = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}
        headers = {"Authorization": f"Bearer {first.token}", "Accept": "application/json, text/event-stream"}
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
            answer = client.post("http://localhost/mcp", json=listed, headers=headers)
        assert answer.status_code == 200 and answer.json()["result"]["serverInfo"]["name"] == "corral"
    finally:
        first.stop()
    assert not path.exists()
