"""Fault fixtures: the scripted model behind a loopback HTTP upstream that fails on cue, and the one
check every fault test ends with (the run is recorded, nothing acknowledged is lost, nothing leaked)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
import uvicorn
from starlette.types import Message, Receive, Scope, Send

from corral.model.playbook import Playbook
from corral.model.scripted import error_body, scripted_app
from corral.services import Services
from corral.state.machine import AT_REST, TERMINAL
from tests.e2e.conftest import RunResult, agent_image, docker_client, leftovers, write_playbook

__all__ = [
    "FaultyUpstream",
    "agent_image",
    "assert_recorded",
    "docker_client",
    "faulty_upstream",
    "write_playbook",
]


@dataclass
class FaultyUpstream:
    """The scripted model as a live upstream (ANTHROPIC_BASE_URL) that fails the main thread's requests
    (those that carry tools) as told; side requests are always answered."""

    playbook: Playbook
    errors: list[tuple[int, str]] = field(default_factory=list)
    """One (status, Anthropic error type) per main request, in order; once used up, requests succeed."""
    always: tuple[int, str] | None = None
    """Every main request fails so."""
    retry_after: str | None = None
    stall_after: int | None = None
    """Every main request's stream stops after this many SSE events and sends nothing more."""
    hang_unstreamed: bool = False
    """A main request that does not stream (Claude Code's fallback after a stalled stream) gets no answer."""
    hits: list[float] = field(default_factory=list)
    """When each main request arrived (monotonic)."""
    url: str = ""
    released: threading.Event = field(default_factory=threading.Event)

    def _failure(self) -> tuple[int, str] | None:
        index = len(self.hits) - 1
        if self.always is not None:
            return self.always
        return self.errors[index] if index < len(self.errors) else None

    async def _silence(self) -> None:
        """Nothing more, with the connection open: what a hung upstream does (until the test ends)."""
        while not self.released.is_set():
            await anyio.sleep(0.1)

    def app(self) -> Any:
        inner = scripted_app(self.playbook, "/workspace")

        async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["path"] != "/v1/messages":
                await inner(scope, receive, send)
                return
            chunks: list[bytes] = []
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            body = b"".join(chunks)
            parsed = json.loads(body)
            main = bool(parsed.get("tools"))
            if main:
                self.hits.append(time.monotonic())
            failure = self._failure() if main else None
            if failure is not None:
                status, error_type = failure
                payload = json.dumps(error_body(error_type, f"fault injected: {status}")).encode()
                headers = [(b"content-type", b"application/json"), (b"request-id", b"req_fault")]
                if self.retry_after is not None:
                    headers.append((b"retry-after", self.retry_after.encode()))
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": payload})
                return
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if replayed:
                    return dict(await receive())
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            if main and self.hang_unstreamed and not parsed.get("stream"):
                await self._silence()
                return
            if not main or self.stall_after is None:
                await inner(scope, replay, send)
                return
            events = 0

            async def stalling(message: Message) -> None:
                nonlocal events
                if message["type"] == "http.response.body" and message.get("body"):
                    events += 1
                    if events > self.stall_after:  # type: ignore[operator]
                        await self._silence()
                        return
                await send(message)

            await inner(scope, replay, stalling)

        return asgi


@contextmanager
def faulty_upstream(upstream: FaultyUpstream, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyUpstream]:
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(upstream.app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    upstream.url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("ANTHROPIC_BASE_URL", upstream.url)
    try:
        yield upstream
    finally:
        upstream.released.set()
        server.should_exit = True
        thread.join(10)


def assert_recorded(result: RunResult, docker_client: Any) -> None:
    """The run ended in a recorded phase, its audit ends as its state does, every event it holds is
    in the store in an unbroken chain, and no container, socket directory or worktree is left."""
    record = result.record
    assert record.phase in AT_REST | TERMINAL, record.phase
    assert result.events[-1].kind == "run.finished" and result.events[-1].phase == record.phase
    assert [e.seq for e in result.events] == list(range(1, len(result.events) + 1))
    services = Services(result.settings)
    try:
        report = services.audit().verify(result.run_id, strict=True)
    finally:
        services.close()
    assert report.ok, report.summary()
    assert leftovers(docker_client, result.settings, result.run_id) == []
