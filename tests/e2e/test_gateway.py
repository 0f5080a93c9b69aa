"""Claude Code in the sandbox reaches outside tools only through the gateway, with the run's token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from corral.forge.local import LocalForge
from corral.services import Services
from corral.state.schema import tokens
from tests.e2e.conftest import leftovers, make_repo, run_task

pytestmark = pytest.mark.docker

PLAYBOOK = """\
turns:
  - tool_use: [{name: mcp__corral__forge_open_pull_request, input: {title: "Fix add", body: "Tests pass."}}]
  - tool_use: [{name: mcp__corral__forge_merge_pull_request, input: {number: 1}}]
  - text: opened the pull request
"""


def test_agent_opens_a_pr_through_the_gateway_and_cannot_merge(
    agent_image: str, docker_client: Any, tmp_path: Path, write_playbook: Any
) -> None:
    repo = make_repo(tmp_path / "r", {"a.py": "x = 1\n"}, "[checks]\ncommand = 'true'\n")
    result = run_task(repo, "open a PR", write_playbook(PLAYBOOK))
    assert result.record.phase == "awaiting_approval", result.record.failure_reason

    decisions = result.of("gateway.decision")
    allowed = [d for d in decisions if d.allowed]
    assert [d.tool_name for d in allowed] == ["forge.open_pull_request"]
    calls = result.of("gateway.call")
    assert [(c.tool_name, c.outcome) for c in calls] == [("forge.open_pull_request", "ok")]
    assert calls[0].token_id == allowed[0].token_id and calls[0].arguments["title"] == "Fix add"
    opened = result.of("pr.opened")
    assert len(opened) == 1 and opened[0].branch == f"corral/{result.run_id}"

    # The merge tool is not even listed for an agent token, so the attempt never reaches an upstream:
    # the model's decision to call it and Claude Code's refusal are on record, and no merge happened.
    attempts = [
        u for r in result.of("model.response") for u in r.tool_uses if u.name.endswith("merge_pull_request")
    ]
    assert len(attempts) == 1
    denied = [d for d in result.of("tool.denied") if d.tool_call_id == attempts[0].id]
    assert [(d.tool_name, d.rule) for d in denied] == [
        ("mcp__corral__forge_merge_pull_request", "not-offered")
    ]
    assert all(not c.tool_name.endswith("merge_pull_request") for c in calls)
    prs = LocalForge(result.settings.home / "forge").list()
    assert [(p.number, p.state) for p in prs] == [(1, "open")]
    assert leftovers(docker_client, result.settings, result.run_id) == []

    # The run's token is on record in the state DB: hashed, scoped to its grants, revoked at run end.
    services = Services(result.settings)
    try:
        with services.state().transaction() as conn:
            rows = conn.execute(sa.select(tokens).where(tokens.c.run_id == result.run_id)).mappings().all()
    finally:
        services.close()
    assert [r["token_id"] for r in rows] == [allowed[0].token_id]
    assert len(rows[0]["secret_hash"]) == 64 and "forge.open_pull_request" in rows[0]["scope"]
    assert rows[0]["revoked_at"] is not None
