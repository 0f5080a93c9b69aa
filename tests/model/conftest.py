"""Fixtures for the model layer: a recording sink, an SSE reader independent of corral's own, and a
fake Anthropic upstream on 127.0.0.1 that records what it receives and streams what a test scripts."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from corral.events import Event

E = TypeVar("E", bound=Event)

PINNED = "claude-sonnet-4-5-20250929"
SMALL = "claude-haiku-4-5-20251001"
RUN_TOKEN = "corral-run-placeholder-7c1d2e"


class RecordingSink:
    """An EventSink that keeps events in memory, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.secrets: dict[str, str] = {}
        self._lock = threading.Lock()

    def emit(self, event: E, *, durable: bool = False) -> E:
        with self._lock:
            self.events.append(event)
        return event

    def register_secret(self, name: str, value: str) -> None:
        self.secrets[name] = value

    def of(self, kind: str) -> list[Any]:
        with self._lock:
            return [e for e in self.events if e.kind == kind]


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


def parse_sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """A deliberately simple SSE reader, separate from corral.model.sse, so that tests of the scripted
    model do not only check it against its own sibling."""
    events: list[tuple[str, dict[str, Any]]] = []
    for block in raw.decode().replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        data = json.loads(lines["data"])
        assert data["type"] == lines["event"], f"event name and data type disagree: {block!r}"
        events.append((lines["event"], data))
    return events


def sse_bytes(events: list[dict[str, Any]]) -> list[bytes]:
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]


@dataclass
class FakeUpstream:
    """What the fake upstream received, and what it answers with."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    json_body: dict[str, Any] | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    """Extra headers of a `json_body` answer (retry-after, say)."""
    gate_after: int | None = None
    """Hold the stream after this many chunks until `gate` is set: proves the proxy does not buffer."""
    gate: threading.Event = field(default_factory=threading.Event)
    gate_timeout: float = 20.0
    gate_released: bool | None = None
    fail_after: int | None = None
    """Break the connection after this many chunks, as a dying upstream would."""
    finished: threading.Event = field(default_factory=threading.Event)
    """Set once the whole body has been handed to the server: a client that sees data before this
    was streamed to, not buffered for."""


def _fake_app(state: FakeUpstream) -> Starlette:
    async def messages(request: Request) -> Response:
        body = await request.body()
        state.requests.append(
            {
                "path": request.url.path,
                "query": request.url.query,
                "headers": dict(request.headers),
                "body": json.loads(body),
            }
        )
        if state.json_body is not None:
            return JSONResponse(state.json_body, state.status, headers=state.headers)

        async def stream() -> Any:
            import anyio.to_thread

            for i, chunk in enumerate(state.chunks):
                if state.fail_after is not None and i == state.fail_after:
                    raise RuntimeError("fake upstream dies mid-stream")
                if state.gate_after is not None and i == state.gate_after:
                    state.gate_released = await anyio.to_thread.run_sync(state.gate.wait, state.gate_timeout)
                yield chunk
            state.finished.set()

        return StreamingResponse(
            stream(), state.status, media_type="text/event-stream", headers={"request-id": "req_fake_1"}
        )

    return Starlette(
        routes=[
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", messages, methods=["POST"]),
        ]
    )


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    state = FakeUpstream()
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_fake_app(state), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "fake upstream did not start"
        time.sleep(0.01)
    state.url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        state.gate.set()
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory for unix sockets (sun_path is limited to 108 bytes)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="cm", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)
