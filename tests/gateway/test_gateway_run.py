"""The gateway end to end: a real MCP client (the `mcp` SDK) over the run's unix socket, real npm MCP
servers as upstreams, and the audit events the run's sink received for every case."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.deploy.local import LocalDeploy
from corral.events import GatewayCall, GatewayDecision, PrOpened, SecretRequested
from corral.forge.local import LocalForge
from corral.gateway.config import GatewayFileConfig, UpstreamConfig
from corral.gateway.ratelimit import Bucket, RateLimitConfig
from corral.gateway.run import RunGateway, RunGatewayHandle, RunGatewaySpec
from tests.gateway.conftest import HERE, INIT, MemorySink, everything_entry, mcp_client, raw_post

pytestmark = [pytest.mark.npm, pytest.mark.anyio, pytest.mark.timeout(120)]

SECRET = "sk-upstream-canary-7f3a9c21"


def everything() -> UpstreamConfig:
    return UpstreamConfig(
        command="node",
        args=[str(everything_entry()), "stdio"],
        env={"EVERYTHING_API_KEY": "${secret:EVERYTHING_KEY}"},
        timeout_seconds=2.0,
    )


def probe(**kw: Any) -> UpstreamConfig:
    return UpstreamConfig(command=sys.executable, args=[str(HERE / "probe_server.py"), "stdio"], **kw)


@pytest.fixture
def start(sock: Path, sink: MemorySink, tmp_path: Path) -> Iterator[Callable[..., RunGatewayHandle]]:
    handles: list[RunGatewayHandle] = []
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)

    def _start(
        grants: list[str], upstreams: dict[str, UpstreamConfig] | None = None, **kw: Any
    ) -> RunGatewayHandle:
        config = GatewayFileConfig(
            upstreams=upstreams if upstreams is not None else {"everything": everything()},
            **kw.pop("config_kw", {}),
        )
        spec = RunGatewaySpec(
            "run-1",
            grants,
            sock,
            config=config,
            secret_refs={"EVERYTHING_KEY": "env:CORRAL_TEST_UPSTREAM_KEY"},
            environ={"CORRAL_TEST_UPSTREAM_KEY": SECRET},
            forge=LocalForge(tmp_path / "forge"),
            deploy=LocalDeploy(tmp_path / "deploy"),
            repo=repo,
            head="corral/run-1",
            **kw,
        )
        handle = RunGateway.start(spec, sink)
        handles.append(handle)
        return handle

    yield _start
    for handle in handles:
        handle.stop()


def body(result: Any) -> dict[str, Any]:
    return json.loads(result.content[0].text)


def last(sink: MemorySink, kind: type[Any]) -> Any:
    events = sink.of(kind)
    assert events, f"no {kind.__name__} event was emitted"
    return events[-1]


async def test_grant_allows_and_audits_decision_then_call(start: Any, sink: MemorySink) -> None:
    handle = start(["everything.echo"])
    async with mcp_client(handle.socket_path, handle.token) as client:
        result = await client.call_tool("everything_echo", {"message": "hello"})
    assert not result.is_error and result.content[0].text == "Echo: hello"
    decision, call = last(sink, GatewayDecision), last(sink, GatewayCall)
    assert (decision.allowed, decision.rule, decision.tool_name) == (
        True,
        "everything.echo",
        "everything.echo",
    )
    assert decision.token_id == handle.token_id and decision.policy_version == handle.policy_version
    assert sink.durable[sink.events.index(decision)] is True  # durable before the upstream ran
    assert sink.events.index(decision) < sink.events.index(call)
    assert call.outcome == "ok" and call.arguments == {"message": "hello"}
    assert call.arguments_hash == decision.arguments_hash and len(call.arguments_hash) == 64
    assert call.result_bytes > 0 and call.upstream_ms > 0


async def test_ungranted_tool_is_denied_with_structured_reason(start: Any, sink: MemorySink) -> None:
    handle = start(["everything.echo"])
    async with mcp_client(handle.socket_path, handle.token) as client:
        result = await client.call_tool("everything_get-sum", {"a": 1, "b": 2})
    assert result.is_error
    deny = body(result)
    assert deny["denied"] is True and deny["rule"] == "default-deny" and deny["tool"] == "everything.get-sum"
    assert "no grant" in deny["reason"]
    decision, call = last(sink, GatewayDecision), last(sink, GatewayCall)
    assert not decision.allowed and decision.rule == "default-deny"
    assert call.outcome == "denied" and call.upstream_ms == 0 and call.arguments == {"a": 1, "b": 2}


async def test_argument_constraint_pass_and_fail(start: Any, sink: MemorySink) -> None:
    handle = start(['everything.echo(message ~ "^safe:")', 'deploy.stage(target == "preview")'])
    async with mcp_client(handle.socket_path, handle.token) as client:
        ok = await client.call_tool("everything_echo", {"message": "safe: hi"})
        bad = await client.call_tool("everything_echo", {"message": "rm -rf /"})
        staged = await client.call_tool("deploy_stage", {})  # the schema default "preview" applies
        refused = await client.call_tool("deploy_stage", {"target": "staging"})
    assert not ok.is_error and ok.content[0].text == "Echo: safe: hi"
    assert bad.is_error and body(bad)["rule"] == 'everything.echo(message ~ "^safe:")'
    assert "does not hold" in body(bad)["reason"]
    assert not staged.is_error and body(staged)["target"] == "preview"
    assert refused.is_error and body(refused)["rule"] == 'deploy.stage(target == "preview")'
    decisions = sink.decisions()
    assert [d.allowed for d in decisions] == [True, False, True, False]
    assert [c.outcome for c in sink.calls()] == ["ok", "denied", "ok", "denied"]


async def test_merge_and_promote_are_never_reachable_with_an_agent_token(
    start: Any, sink: MemorySink
) -> None:
    handle = start(["forge.*", "deploy.*"])
    assert "mcp__corral__forge_merge_pull_request" not in handle.allowed_tool_names()
    assert "mcp__corral__deploy_promote" not in handle.allowed_tool_names()
    async with mcp_client(handle.socket_path, handle.token) as client:
        opened = await client.call_tool(
            "forge_open_pull_request", {"title": "Fix the bug", "body": "details"}
        )
        merge = await client.call_tool("forge_merge_pull_request", {"number": body(opened)["number"]})
        promote = await client.call_tool("deploy_promote", {"deployment_id": "dep_x"})
    assert not opened.is_error and body(opened)["head"] == "corral/run-1"
    assert last(sink, PrOpened).number == body(opened)["number"]
    assert body(merge)["rule"] == "never-grantable" and body(promote)["rule"] == "never-grantable"
    denied = [d for d in sink.decisions() if not d.allowed]
    assert {d.tool_name for d in denied} == {"forge.merge_pull_request", "deploy.promote"}


async def test_tools_list_shows_each_token_only_its_tools(start: Any) -> None:
    handle = start(["everything.echo", "forge.list_checks"])
    other_token, _ = handle.gateway.authority.mint(
        run_id="run-1", grants=["everything.get-sum"], ttl_seconds=60
    )
    async with mcp_client(handle.socket_path, handle.token) as client:
        names = sorted(t.name for t in (await client.list_tools()).tools)
    async with mcp_client(handle.socket_path, other_token) as client:
        other = sorted(t.name for t in (await client.list_tools()).tools)
    assert names == ["everything_echo", "forge_list_checks"]
    assert other == ["everything_get-sum"]
    assert handle.allowed_tool_names() == ["mcp__corral__everything_echo", "mcp__corral__forge_list_checks"]


async def test_read_class_comes_from_the_operator_table_not_upstream_hints(start: Any) -> None:
    # Every server-everything tool claims readOnlyHint; only the operator's table counts.
    handle = start(
        ["everything.*:read", "forge.*:read"], config_kw={"annotations": {"everything.get-sum": "read"}}
    )
    assert handle.allowed_tool_names() == [
        "mcp__corral__everything_get-sum",
        "mcp__corral__forge_list_checks",
    ]


@pytest.mark.parametrize("problem", ["expired", "revoked", "wrong_audience", "malformed"])
async def test_bad_tokens_get_401_and_no_upstream_call(start: Any, sink: MemorySink, problem: str) -> None:
    handle = start(["everything.echo"])
    authority = handle.gateway.authority
    token = handle.token
    if problem == "expired":
        token, _ = authority.mint(run_id="run-1", grants=["everything.echo"], ttl_seconds=-1)
    elif problem == "revoked":
        handle.revoke()
    elif problem == "wrong_audience":
        token, _ = authority.mint(
            run_id="run-1", grants=["everything.echo"], ttl_seconds=60, audience="elsewhere"
        )
    else:
        token = "not-a-corral-token"
    calls_before = len(sink.calls())
    response = await raw_post(handle.socket_path, token, INIT)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token" and problem in response.json()["error_description"]
    assert len(sink.calls()) == calls_before  # nothing reached an upstream
    # An attributable token is audited on its run; a malformed one on this gateway's run, with no id.
    decision = last(sink, GatewayDecision)
    assert (decision.allowed, decision.rule) == (False, f"token:{problem}")
    assert (decision.token_id == "") is (problem == "malformed")


async def test_another_gateways_token_is_refused_and_audited_here_by_its_public_id(
    start: Any, sink: MemorySink, tmp_path: Path
) -> None:
    # Another run's gateway (its own store and audience) mints a live token; this run's gateway does
    # not know it, and records the attempt on this run, naming the token by its id, never its secret.
    handle = start(["forge.open_pull_request"], upstreams={})
    other = RunGateway.start(
        RunGatewaySpec("run-2", ["forge.open_pull_request"], tmp_path / "o.sock", forge=LocalForge(tmp_path)),
        MemorySink(),
    )
    try:
        response = await raw_post(handle.socket_path, other.token, INIT)
        assert response.status_code == 401 and "unknown" in response.json()["error_description"]
        decision = last(sink, GatewayDecision)
        assert (decision.allowed, decision.rule, decision.token_id) == (
            False,
            "token:unknown",
            other.token_id,
        )
        assert decision.reason.startswith("token unknown: no token of this gateway")
        assert other.token.rpartition("_")[2] not in sink.dump()
        assert (await raw_post(other.socket_path, other.token, INIT)).status_code == 200  # live there
    finally:
        other.stop()
    for forged in (f"crt_{'G' * 16}_x", f"crt_{other.token_id}", "sk-ant-pasted-key"):
        assert (await raw_post(handle.socket_path, forged, INIT)).status_code == 401
        assert last(sink, GatewayDecision).token_id == ""  # not a token id: nothing of it is recorded


async def test_use_limit_counts_calls_then_refuses(start: Any, sink: MemorySink) -> None:
    handle = start(["everything.echo"])
    token, record = handle.gateway.authority.mint(
        run_id="run-1", grants=["everything.echo"], ttl_seconds=60, max_uses=2
    )
    async with mcp_client(handle.socket_path, token) as client:
        results = [await client.call_tool("everything_echo", {"message": str(i)}) for i in range(3)]
    assert [r.is_error for r in results] == [False, False, True]
    assert body(results[2])["rule"] == "token:exhausted"
    assert [c.outcome for c in sink.calls()] == ["ok", "ok", "denied"]
    assert last(sink, GatewayDecision).rule == "token:exhausted"
    assert handle.gateway.authority.store.get(record.token_id).uses == 2  # type: ignore[union-attr]


async def test_missing_token_is_401(start: Any) -> None:
    handle = start(["everything.echo"])
    response = await raw_post(handle.socket_path, None, INIT)
    assert response.status_code == 401


async def test_rate_limit_per_tool_and_per_token(start: Any, sink: MemorySink) -> None:
    limits = RateLimitConfig(
        per_token=Bucket(rate=0.001, burst=3), per_tool={"everything.echo": Bucket(rate=0.001, burst=2)}
    )
    handle = start(["everything.echo", "everything.get-sum"], config_kw={"rate_limits": limits})
    async with mcp_client(handle.socket_path, handle.token) as client:
        echoes = [await client.call_tool("everything_echo", {"message": str(i)}) for i in range(3)]
        sums = [await client.call_tool("everything_get-sum", {"a": 1, "b": 1}) for _ in range(2)]
    assert [r.is_error for r in echoes] == [False, False, True]
    assert (
        body(echoes[2])["rule"] == "rate-limit:tool:everything.echo" and body(echoes[2])["retry_after_s"] > 0
    )
    assert [r.is_error for r in sums] == [False, True]
    assert body(sums[1])["rule"] == "rate-limit:token"
    rules = [d.rule for d in sink.decisions() if not d.allowed]
    assert rules == ["rate-limit:tool:everything.echo", "rate-limit:token"]


async def test_credentials_reach_the_upstream_but_never_the_agent_or_audit(
    start: Any, sink: MemorySink
) -> None:
    handle = start(["everything.get-env", "everything.echo"])
    async with mcp_client(handle.socket_path, handle.token) as client:
        env_result = await client.call_tool("everything_get-env", {})
        echoed = await client.call_tool("everything_echo", {"message": f"leak {SECRET}"})
    text = env_result.content[0].text
    # The upstream saw the secret (it printed its env), but the gateway redacted it on the way back.
    assert '"EVERYTHING_API_KEY": "[secret:EVERYTHING_KEY]"' in text
    assert SECRET not in text and SECRET not in echoed.content[0].text
    assert SECRET not in sink.dump()
    assert last(sink, GatewayCall).arguments == {"message": "leak [secret:EVERYTHING_KEY]"}
    requested = last(sink, SecretRequested)
    assert (requested.name, requested.provider) == ("EVERYTHING_KEY", "env")
    assert sink.secrets == {"EVERYTHING_KEY": SECRET}
    assert SECRET not in json.dumps(handle.mcp_config("http://127.0.0.1:1/mcp"))
    # The host's environment is not inherited by a stdio upstream beyond the SDK's safe list.
    assert "CORRAL_TEST_NPM_DIR" not in text


async def test_inbound_headers_and_token_are_not_forwarded(
    start: Any, probe_http: str, sink: MemorySink
) -> None:
    upstream = UpstreamConfig(url=probe_http, headers={"X-Upstream-Auth": "Bearer ${secret:EVERYTHING_KEY}"})
    handle = start(["probe.headers"], upstreams={"probe": upstream})
    async with mcp_client(
        handle.socket_path, handle.token, {"X-Agent-Says": "hi", "Cookie": "c=1"}
    ) as client:
        result = await client.call_tool("probe_headers", {})
    seen = {k.lower(): v for k, v in json.loads(result.content[0].text).items()}
    assert seen["x-upstream-auth"] == "Bearer [secret:EVERYTHING_KEY]"  # injected, and redacted on return
    assert "x-agent-says" not in seen and "cookie" not in seen
    assert handle.token not in result.content[0].text and handle.token.split("_")[-1] not in json.dumps(seen)
    assert seen.get("authorization") is None
    assert SECRET not in sink.dump()


async def test_streamable_http_upstream_and_second_stdio_upstream(
    start: Any, everything_http: str, sink: MemorySink
) -> None:
    from tests.gateway.conftest import memory_entry

    upstreams = {
        "remote": UpstreamConfig(url=everything_http),
        "memory": UpstreamConfig(command="node", args=[str(memory_entry())]),
    }
    handle = start(["remote.echo", "memory.read_graph"], upstreams=upstreams)
    async with mcp_client(handle.socket_path, handle.token) as client:
        echoed = await client.call_tool("remote_echo", {"message": "over http"})
        graph = await client.call_tool("memory_read_graph", {})
    assert echoed.content[0].text == "Echo: over http"
    assert not graph.is_error
    assert [c.outcome for c in sink.calls()] == ["ok", "ok"]


async def test_upstream_crash_gives_error_restarts_and_others_keep_serving(
    start: Any, sink: MemorySink
) -> None:
    handle = start(
        ["probe.crash", "probe.query", "everything.echo"],
        upstreams={"probe": probe(), "everything": everything()},
    )
    upstream = handle.gateway.upstreams["probe"]
    async with mcp_client(handle.socket_path, handle.token) as client:
        crashed = await client.call_tool("probe_crash", {})
        other = await client.call_tool("everything_echo", {"message": "still here"})
        again = await client.call_tool("probe_query", {"sql": "select 1"})
    assert crashed.is_error and body(crashed)["error"] == "crash"
    assert other.content[0].text == "Echo: still here"
    assert not again.is_error and again.content[0].text == "ran select 1"  # served by the restarted process
    assert upstream.restarts >= 1  # type: ignore[attr-defined]
    assert [c.outcome for c in sink.calls()] == ["crash", "ok", "ok"]


async def test_hanging_upstream_is_cut_at_its_timeout(start: Any, sink: MemorySink) -> None:
    handle = start(["probe.hang", "probe.query"], upstreams={"probe": probe(timeout_seconds=1.0)})
    async with mcp_client(handle.socket_path, handle.token) as client:
        hung = await client.call_tool("probe_hang", {"seconds": 60})
        after = await client.call_tool("probe_query", {"sql": "select 2"})
    assert hung.is_error and body(hung)["error"] == "timeout"
    assert after.content[0].text == "ran select 2"
    call = sink.calls()[0]
    assert call.outcome == "timeout" and 900 < call.upstream_ms < 30_000


async def test_changed_schema_is_refused_until_revalidated(
    start: Any, sink: MemorySink, tmp_path: Path
) -> None:
    variant = tmp_path / "variant"
    variant.write_text("v1")
    handle = start(
        ["probe.query", "probe.crash"], upstreams={"probe": probe(env={"PROBE_SCHEMA_FILE": str(variant)})}
    )
    async with mcp_client(handle.socket_path, handle.token) as client:
        assert not (await client.call_tool("probe_query", {"sql": "select 1"})).is_error
        variant.write_text("v2")
        await client.call_tool("probe_crash", {})  # the restarted upstream lists the new schema
        refused = await client.call_tool("probe_query", {"sql": "select 1"})
        listed = [t.name for t in (await client.list_tools()).tools]
        handle.gateway.revalidate()
        allowed = await client.call_tool("probe_query", {"sql": "select 1", "limit": 5})
    assert body(refused)["rule"] == "schema-changed"
    assert body(refused)["validated_hash"] != body(refused)["current_hash"]
    assert "probe_query" not in listed
    assert allowed.content[0].text == "ran select 1 limit 5"
    versions = {d.policy_version for d in sink.decisions() if d.allowed}
    assert len(versions) == 2  # the re-validated policy has a new version
