"""A run's token reaches only its own run's pull request and deployments (issue 9, item 6).

Another project's pull request sits in the same local forge as the run's own: a real MCP client over
the run's socket, with the default grants, tries to read its checks and comment on it, and the gateway
refuses with an audited `run-scope` denial that says nothing about the other project.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.config import GatewayConfig
from corral.deploy.local import LocalDeploy
from corral.events import DeployRequested, GatewayCall, GatewayDecision
from corral.forge import Check
from corral.forge.local import LocalForge
from corral.gateway.run import RunGateway, RunGatewayHandle, RunGatewaySpec
from tests.gateway.conftest import MemorySink, mcp_client

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

DEFAULT_GRANTS = list(GatewayConfig().grants)
PRIVATE = "private: the billing service's staging key rotated at 04:00"


def git_repo(path: Path) -> Path:
    """A repository with `main` and the run's branch one commit ahead (what a merge needs)."""
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "base"], check=True)
    ahead = subprocess.run(
        [*git, "commit-tree", "-p", "HEAD", "-m", "run change", "HEAD^{tree}"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    subprocess.run([*git, "update-ref", "refs/heads/corral/run-1", ahead], check=True)
    return path


def branch_head(repo: Path, branch: str) -> str:
    cmd = ["git", "-C", str(repo), "rev-parse", f"refs/heads/{branch}"]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def forge(tmp_path: Path) -> LocalForge:
    return LocalForge(tmp_path / "forge")


@pytest.fixture
def deploy(tmp_path: Path) -> LocalDeploy:
    return LocalDeploy(tmp_path / "deploy")


@pytest.fixture
def handle(
    sock: Path, sink: MemorySink, tmp_path: Path, forge: LocalForge, deploy: LocalDeploy
) -> Iterator[RunGatewayHandle]:
    spec = RunGatewaySpec(
        "run-1", DEFAULT_GRANTS, sock, forge=forge, deploy=deploy,
        repo=git_repo(tmp_path / "repo"), head="corral/run-1",
    )  # fmt: skip
    h = RunGateway.start(spec, sink)
    yield h
    h.stop()


def body(result: Any) -> dict[str, Any]:
    return json.loads(result.content[0].text)


def victims(forge: LocalForge, tmp_path: Path, handle: RunGatewayHandle) -> tuple[int, int]:
    """Another project's PR (with a private check summary), and another run's PR in this repository."""
    other = forge.open_pull_request(
        git_repo(tmp_path / "other-project"), head="feature/x", base="main", title="Other", body="",
        author="human:bob",
    )  # fmt: skip
    forge.record_check(other.number, Check(name="deploy-check", status="failed", summary=PRIVATE))
    repo = handle.binding.repo
    assert repo is not None
    sibling = forge.open_pull_request(
        repo, head="corral/run-2", base="main", title="Sibling", body="", author="agent:run-2"
    )
    return other.number, sibling.number


async def test_other_projects_and_other_runs_prs_are_refused_and_audited(
    handle: RunGatewayHandle, sink: MemorySink, forge: LocalForge, tmp_path: Path
) -> None:
    other, sibling = victims(forge, tmp_path, handle)
    missing = 99
    async with mcp_client(handle.socket_path, handle.token) as client:
        read = await client.call_tool("forge_list_checks", {"number": other})
        wrote = await client.call_tool("forge_comment", {"number": other, "body": "safe to merge"})
        sibling_write = await client.call_tool("forge_comment", {"number": sibling, "body": "lgtm"})
        absent = await client.call_tool("forge_list_checks", {"number": missing})
    for result, number in ((read, other), (wrote, other), (sibling_write, sibling), (absent, missing)):
        assert result.is_error
        refusal = body(result)
        assert (refusal["denied"], refusal["rule"], refusal["run_id"]) == (True, "run-scope", "run-1")
        assert f"pull request {number} is not this run's" in refusal["reason"]
        assert "corral/run-1" in refusal["reason"] and "opened none yet" in refusal["reason"]

    # Existing elsewhere and not existing at all read the same: nothing about other projects leaks.
    def shape(result: Any, number: int) -> str:
        return str(body(result)["reason"]).replace(f"pull request {number} ", "pull request N ")

    assert shape(read, other) == shape(absent, missing)
    assert PRIVATE not in json.dumps([body(r) for r in (read, wrote, sibling_write, absent)])
    assert "other-project" not in sink.dump() and "feature/x" not in sink.dump()
    # The victims are untouched.
    assert forge.get(other).comments == [] and forge.get(sibling).comments == []
    # Each refusal is a durable gateway decision, then a denied call that never reached the forge.
    decisions, calls = sink.of(GatewayDecision), sink.of(GatewayCall)
    assert [(d.tool_name, d.allowed, d.rule) for d in decisions] == [
        ("forge.list_checks", False, "run-scope"),
        ("forge.comment", False, "run-scope"),
        ("forge.comment", False, "run-scope"),
        ("forge.list_checks", False, "run-scope"),
    ]
    assert all(sink.durable[sink.events.index(d)] for d in decisions)
    assert [(c.outcome, c.upstream_ms) for c in calls] == [("denied", 0.0)] * 4


async def test_the_runs_own_pr_stays_reachable(
    handle: RunGatewayHandle, sink: MemorySink, forge: LocalForge, tmp_path: Path
) -> None:
    other, _sibling = victims(forge, tmp_path, handle)
    async with mcp_client(handle.socket_path, handle.token) as client:
        opened = body(await client.call_tool("forge_open_pull_request", {"title": "Fix", "body": "b"}))
        forge.record_check(opened["number"], Check(name="pytest", status="passed", summary="12 passed"))
        checks = await client.call_tool("forge_list_checks", {"number": opened["number"]})
        commented = await client.call_tool("forge_comment", {"number": opened["number"], "body": "done"})
        still = await client.call_tool("forge_list_checks", {"number": other})
    assert not checks.is_error and body(checks)["checks"][0]["summary"] == "12 passed"
    assert not commented.is_error and body(commented) == {"number": opened["number"], "comments": 1}
    assert forge.get(opened["number"]).comments[0].author == "agent:run-1"
    # Once the run has a PR, a refusal names it, so the agent can correct itself.
    assert f"its pull request is #{opened['number']}" in body(still)["reason"]
    assert [c.outcome for c in sink.of(GatewayCall)] == ["ok", "ok", "ok", "denied"]


async def test_a_human_token_merges_and_promotes_only_its_own_runs(
    handle: RunGatewayHandle, sink: MemorySink, forge: LocalForge, deploy: LocalDeploy, tmp_path: Path
) -> None:
    other, sibling = victims(forge, tmp_path, handle)
    repo = handle.binding.repo
    assert repo is not None
    own = forge.open_pull_request(repo, head="corral/run-1", base="main", title="T", body="", author="a")
    theirs = deploy.stage(run_id="run-2", ref="0" * 40, target="preview")
    mine = deploy.stage(run_id="run-1", ref="1" * 40, target="preview")
    token, _ = handle.gateway.authority.mint(
        run_id="run-1",
        grants=["forge.merge_pull_request", "deploy.promote"],
        ttl_seconds=60,
        principal="human:ann",
    )
    async with mcp_client(handle.socket_path, token) as client:
        sha = branch_head(repo, "corral/run-1")
        refused = [
            await client.call_tool("forge_merge_pull_request", {"number": n, "sha": sha})
            for n in (other, sibling)
        ]
        refused.append(await client.call_tool("deploy_promote", {"deployment_id": theirs.id}))
        merged = await client.call_tool("forge_merge_pull_request", {"number": own.number, "sha": sha})
        promoted = await client.call_tool("deploy_promote", {"deployment_id": mine.id})
    assert [body(r)["rule"] for r in refused] == ["run-scope"] * 3
    assert forge.get(other).state == "open" and forge.get(sibling).state == "open"
    assert deploy.get(theirs.id).state == "staged"
    assert body(merged)["state"] == "merged" and body(promoted)["state"] == "promoted"


async def test_stage_only_records_a_request_for_after_the_checks(
    handle: RunGatewayHandle, sink: MemorySink, deploy: LocalDeploy
) -> None:
    async with mcp_client(handle.socket_path, handle.token) as client:
        staged = await client.call_tool("deploy_stage", {})
        again = await client.call_tool("deploy_stage", {"target": "preview"})
    assert not staged.is_error and body(staged)["state"] == "requested" and body(again)["target"] == "preview"
    assert deploy.list() == []  # nothing is deployed while the agent runs: nothing is committed yet
    assert handle.binding.stage_requests == ["preview"]
    assert [(e.target, e.branch, e.actor) for e in sink.of(DeployRequested)] == [
        ("preview", "corral/run-1", "agent"),
        ("preview", "corral/run-1", "agent"),
    ]


async def test_a_token_bound_to_no_run_reaches_no_pr_and_stages_nothing(
    sock: Path, sink: MemorySink, forge: LocalForge, deploy: LocalDeploy, tmp_path: Path
) -> None:
    pr = forge.open_pull_request(
        git_repo(tmp_path / "p"), head="h", base="main", title="T", body="", author="human:bob"
    )
    h = RunGateway.start(RunGatewaySpec("loose", DEFAULT_GRANTS, sock, forge=forge, deploy=deploy), sink)
    try:
        async with mcp_client(h.socket_path, h.token) as client:
            results = [
                await client.call_tool("forge_list_checks", {"number": pr.number}),
                await client.call_tool("forge_comment", {"number": pr.number, "body": "x"}),
                await client.call_tool("deploy_stage", {}),
            ]
    finally:
        h.stop()
    assert [body(r)["rule"] for r in results] == ["run-scope"] * 3
    assert all("bound to no run" in body(r)["reason"] for r in results)
    assert forge.get(pr.number).comments == [] and deploy.list() == []
