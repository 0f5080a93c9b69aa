"""The lean streamable HTTP transport's session rules, and the SDK transport kept as an alternative."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from corral.forge.local import LocalForge
from corral.gateway.run import RunGateway, RunGatewayHandle, RunGatewaySpec
from corral.gateway.serve import Transport
from tests.gateway.conftest import INIT, MemorySink, mcp_client

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(params=["lean", "sdk"])
def handle(
    request: pytest.FixtureRequest, sock: Path, sink: MemorySink, tmp_path: Path
) -> Iterator[RunGatewayHandle]:
    transport: Transport = request.param
    spec = RunGatewaySpec(
        "run-t", ["forge.list_checks"], sock, forge=LocalForge(tmp_path / "f"), transport=transport
    )
    h = RunGateway.start(spec, sink)
    yield h
    h.stop()


def client(handle: RunGatewayHandle, token: str | None = None) -> httpx2.AsyncClient:
    headers = {**HEADERS, "Authorization": f"Bearer {token or handle.token}"}
    return httpx2.AsyncClient(
        transport=httpx2.AsyncHTTPTransport(uds=str(handle.socket_path)), headers=headers
    )


async def post(http: httpx2.AsyncClient, body: Any, session: str | None = None) -> httpx2.Response:
    headers = {"Mcp-Session-Id": session} if session else {}
    return await http.post("http://localhost/mcp", json=body, headers=headers)


async def test_sdk_client_works_over_both_transports(handle: RunGatewayHandle, sink: MemorySink) -> None:
    async with mcp_client(handle.socket_path, handle.token) as session:
        names = [t.name for t in (await session.list_tools()).tools]
        result = await session.call_tool("forge_list_checks", {"number": 4})
    assert names == ["forge_list_checks"]
    # This gateway binds no repository to the run, so the call is refused before the forge is asked.
    assert result.is_error and json.loads(result.content[0].text)["rule"] == "run-scope"
    assert [c.outcome for c in sink.calls()] == ["denied"]


async def test_sessions_are_bound_to_the_token_that_opened_them(handle: RunGatewayHandle) -> None:
    other, _ = handle.gateway.authority.mint(run_id="run-t", grants=["forge.list_checks"], ttl_seconds=60)
    async with client(handle) as mine, client(handle, other) as theirs:
        opened = await post(mine, INIT)
        assert opened.status_code == 200
        session = opened.headers["mcp-session-id"]
        assert opened.json()["result"]["protocolVersion"] == "2025-06-18"
        listed = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        assert (await post(mine, listed, session)).status_code == 200
        assert (await post(theirs, listed, session)).status_code == 404  # not theirs: as if unknown
        assert (await post(mine, listed, "no-such-session")).status_code == 404


@pytest.mark.parametrize("transport", ["lean"])
async def test_lean_transport_shape(
    sock: Path, sink: MemorySink, tmp_path: Path, transport: Transport
) -> None:
    spec = RunGatewaySpec(
        "run-l", ["forge.list_checks"], sock, forge=LocalForge(tmp_path / "f"), transport=transport
    )
    h = RunGateway.start(spec, sink)
    try:
        async with client(h) as http:
            session = (await post(http, INIT)).headers["mcp-session-id"]
            note = await post(http, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
            assert note.status_code == 202 and note.content == b""
            assert (
                await http.get("http://localhost/mcp", headers={"Mcp-Session-Id": session})
            ).status_code == 405
            missing = await post(http, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
            assert missing.status_code == 400
            unknown = await post(http, {"jsonrpc": "2.0", "id": 4, "method": "resources/list"}, session)
            assert unknown.json()["error"]["code"] == -32601
            bad = await post(
                http, {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"x": 1}}, session
            )
            assert bad.json()["error"]["code"] == -32602
            ping = await post(http, {"jsonrpc": "2.0", "id": 6, "method": "ping"}, session)
            assert ping.json() == {"jsonrpc": "2.0", "id": 6, "result": {}}
            gone = await http.delete("http://localhost/mcp", headers={"Mcp-Session-Id": session})
            assert gone.status_code == 200
            after = await post(http, {"jsonrpc": "2.0", "id": 7, "method": "ping"}, session)
            assert after.status_code == 404
    finally:
        h.stop()


class FailingSink(MemorySink):
    """An audit store that cannot persist: durable appends fail."""

    def emit(self, event: Any, *, durable: bool = False) -> Any:
        if durable:
            raise OSError("audit spool is full")
        return super().emit(event, durable=durable)


async def test_a_decision_that_cannot_be_audited_does_not_run(sock: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    forge = LocalForge(tmp_path / "f")
    h = RunGateway.start(RunGatewaySpec("run-a", ["forge.open_pull_request"], sock, forge=forge, repo=repo,
                                        head="corral/run-a"), FailingSink())  # fmt: skip
    try:
        async with client(h) as http:
            session = (await post(http, INIT)).headers["mcp-session-id"]
            call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": "forge_open_pull_request", "arguments": {"title": "t"}}}  # fmt: skip
            answer = (await post(http, call, session)).json()
        assert (
            answer["error"]["code"] == -32603 and "could not serve tools/call" in answer["error"]["message"]
        )
        assert forge.list() == []  # fail closed: the upstream never ran
    finally:
        h.stop()
