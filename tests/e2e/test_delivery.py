"""The delivery chain on the demo project, all real: runs in sandboxes, the PR, the refusals, a real git
merge with the approver's trailer, builds in a sandbox served over HTTP, promote, rollback, the audit.

One test walks the chain on shared runs (a sandbox run costs 10-20 s here): each refusal is asserted to
change nothing (no approval, no moved ref, no deployment), and the faults are injected on the way: a
merge conflict, and a crash between merge and stage that a rerun of `corral approve` recovers.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from corral.cli import app
from corral.delivery import approve as delivery
from corral.demo import DEMO_CONFIG, DEMO_FILES, DEMO_TASK, demo_playbook_path
from corral.deploy.local import LocalDeploy
from corral.errors import ApprovalRefused, DeployError, MergeRefused
from corral.forge.local import LocalForge
from corral.services import Services
from corral.settings import Settings
from corral.state.machine import Phase
from tests.delivery.runs import awaiting_run
from tests.e2e.conftest import git, make_repo, run_task

pytestmark = pytest.mark.docker

BUILD = (
    "mkdir -p dist && python3 -c \"from calc.ops import add; t = open('README.md').readline().strip(); "
    "open('dist/index.html', 'w').write(f'<h1>{t}</h1><p>add(2, 3) = {add(2, 3)}</p>')\""
)
CONFIG = (
    DEMO_CONFIG
    + f"""
[sandbox]
hidden_paths = ["secrets/**"]

[approval]
approvers = ["alice", "bob", "carol"]

[deploy]
build = '''{BUILD}'''
output = "dist"
"""
)

README_PLAYBOOK = """
turns:
  - tool_use:
      - {name: Read, input: {file_path: "{workspace}/README.md"}}
  - tool_use:
      - name: Edit
        input: {file_path: "{workspace}/README.md", old_string: "# calc", new_string: "# calc v2"}
  - text: Renamed the page title.
"""

LINK_PLAYBOOK = """
turns:
  - tool_use:
      - {name: Bash, input: {command: "cd {workspace} && ln -s secrets/token peek", description: link}}
  - text: Added a convenience link.
"""


def fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url + "index.html", timeout=10) as response:
        return response.status, response.read().decode()


def snapshot(services: Services, repo: Path, run_id: str) -> tuple[Any, ...]:
    """What a refusal must leave as it was."""
    record = services.state().get_run(run_id)
    deploys = LocalDeploy(services.settings.home / "deploy").list()
    return (
        git(repo, "rev-parse", "main").strip(),
        record.phase,
        record.version,
        len(services.state().list_approvals(run_id)),
        len(deploys),
        len(services.audit().read(run_id)),
    )


def test_run_pr_approve_merge_stage_promote_rollback_with_every_refusal(
    agent_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_playbook: Any
) -> None:
    files = {**DEMO_FILES, "secrets/token": "s3cr3t-token-value\n"}
    repo = make_repo(tmp_path / "demo", files, CONFIG)
    monkeypatch.setenv("CORRAL_USER", "alice")
    fix = run_task(repo, DEMO_TASK, demo_playbook_path())
    link = run_task(repo, "add a link", write_playbook(LINK_PLAYBOOK, "link.yaml"))
    title = run_task(repo, "rename the title", write_playbook(README_PLAYBOOK, "readme.yaml"))
    assert fix.record.phase == "awaiting_approval" and fix.record.requester == "alice"
    assert link.record.phase == "awaiting_approval" and link.record.checks_passed is False
    assert title.record.phase == "awaiting_approval", title.record.failure_reason
    assert title.record.checks_passed is False  # started from the base, where add still subtracts
    assert fix.of("run.created")[0].actor == "human:alice"
    (commit,) = fix.of("commit.made")
    assert "+    return a + b" in commit.patch  # the audit holds what ships

    # The run's pull request was opened by corral (the agent opened none), with the checks on it.
    forge = LocalForge(fix.settings.home / "forge")
    (pr,) = [p for p in forge.list(repo) if p.head == fix.record.branch]
    assert pr.author == "corral" and fix.run_id in pr.body and "calc/ops.py" in pr.body
    assert [(c.name, c.status) for c in pr.checks] == [("corral/checks", "passed")]
    assert fix.of("pr.opened")[0].number == pr.number

    services = Services(Settings())
    try:

        def refused(run_id: str, who: str, match: str, **kw: Any) -> None:
            before = snapshot(services, repo, run_id)
            with pytest.raises(ApprovalRefused, match=match):
                delivery.approve(services, run_id, approver=who, **kw)
            assert snapshot(services, repo, run_id) == before

        refused(fix.run_id, "alice", "asked for run")  # the requester, though not self-approvable
        refused(fix.run_id, "mallory", "not in \\[approval\\].approvers")
        refused(link.run_id, "bob", "checks failed")
        refused(link.run_id, "bob", "protected paths: peek -> secrets/token", override=True)

        # Approve: a merge commit with the approver's trailer, the checkout updated, a preview served.
        old_main = git(repo, "rev-parse", "main").strip()
        done = delivery.approve(services, fix.run_id, approver="bob", comment="ship it")
        assert done.phase is Phase.STAGED and done.deployment is not None
        head = fix.record.meta["head_commit"]
        assert git(repo, "rev-parse", "main^1", "main^2").split() == [old_main, head]
        assert done.merge_commit == git(repo, "rev-parse", "main").strip()
        assert "Approved-by: bob" in git(repo, "log", "-1", "--format=%B", "main")
        assert "return a + b" in (repo / "calc" / "ops.py").read_text()
        assert git(repo, "status", "--porcelain") == ""
        assert fetch(done.deployment.url) == (200, "<h1># calc</h1><p>add(2, 3) = 5</p>")
        assert forge.get(pr.number).state == "merged"
        refused(fix.run_id, "carol", "already approved")

        # Promote: its own approval, under the same rules.
        before = snapshot(services, repo, fix.run_id)
        with pytest.raises(ApprovalRefused, match="asked for run"):
            delivery.promote(services, fix.run_id, approver="alice")
        assert snapshot(services, repo, fix.run_id) == before
        first = delivery.promote(services, fix.run_id, approver="carol")
        assert first.phase is Phase.PROMOTED and first.deployment is not None
        production = first.deployment.url
        assert fetch(production) == (200, "<h1># calc</h1><p>add(2, 3) = 5</p>")

        # A conflict: the user changed the title on main meanwhile. The run stays awaiting approval.
        (repo / "README.md").write_text((repo / "README.md").read_text().replace("# calc", "# calc (mine)"))
        git(repo, "-c", "user.name=u", "-c", "user.email=u@u", "commit", "-qam", "my title")
        before_main = git(repo, "rev-parse", "main").strip()
        with pytest.raises(MergeRefused, match=r"conflicts with main in: README\.md"):
            delivery.approve(services, title.run_id, approver="bob", override=True)
        record = services.state().get_run(title.run_id)
        assert record.phase is Phase.AWAITING_APPROVAL and record.meta["conflicts"] == ["README.md"]
        assert git(repo, "rev-parse", "main").strip() == before_main
        assert [e.conflicts for e in services.audit().read(title.run_id) if e.kind == "merge.refused"] == [
            ["README.md"]
        ]

        # A crash between merge and stage; rerunning approve stages without merging twice.
        git(repo, "-c", "user.name=u", "-c", "user.email=u@u", "revert", "--no-edit", "HEAD")

        def crash(*_a: Any, **_k: Any) -> Any:
            raise KeyboardInterrupt

        with monkeypatch.context() as patch:
            patch.setattr(delivery, "_stage", crash)
            with pytest.raises(KeyboardInterrupt):
                delivery.approve(services, title.run_id, approver="bob", override=True)
        assert services.state().get_run(title.run_id).phase is Phase.MERGED
        merged_at = git(repo, "rev-parse", "main").strip()
        resumed = delivery.approve(services, title.run_id, approver="bob", override=True)
        assert resumed.resumed and resumed.phase is Phase.STAGED and resumed.deployment is not None
        assert git(repo, "rev-parse", "main").strip() == merged_at
        assert git(repo, "log", "--format=%H", "--grep", f"Corral-Run: {title.run_id}", "main").split() == [
            merged_at
        ]
        assert fetch(resumed.deployment.url) == (200, "<h1># calc v2</h1><p>add(2, 3) = 5</p>")

        second = delivery.promote(services, title.run_id, approver="carol")
        assert second.deployment is not None and second.deployment.url == production
        assert fetch(production) == (200, "<h1># calc v2</h1><p>add(2, 3) = 5</p>")

        back = delivery.rollback(services, "demo", approver="bob")
        assert back.id == first.deployment.id
        assert fetch(production) == (200, "<h1># calc</h1><p>add(2, 3) = 5</p>")

        # Every step is in the audit with its actor, and the chains verify.
        events = services.audit().read(fix.run_id)
        steps = [(e.kind, e.actor) for e in events if e.actor.startswith("human:")]
        for step in [
            ("run.created", "human:alice"),
            ("approval.granted", "human:bob"),
            ("merge.made", "human:bob"),
            ("deploy.staged", "human:bob"),
            ("approval.granted", "human:carol"),
            ("deploy.promoted", "human:carol"),
            ("deploy.rolled_back", "human:bob"),
        ]:
            assert step in steps, step
        granted = [e for e in events if e.kind == "approval.granted"]
        assert [(g.subject, g.head_sha) for g in granted] == [("run", head), ("promote", done.merge_commit)]
        approvals = services.state().list_approvals(fix.run_id)
        assert [(a.actor, a.subject, a.head_sha) for a in approvals] == [
            ("bob", "run", head),
            ("carol", "deploy_promotion", done.merge_commit),
        ]
        granted_title = [e for e in services.audit().read(title.run_id) if e.kind == "approval.granted"]
        assert [(g.subject, g.override) for g in granted_title] == [
            ("run", True),
            ("run", True),
            ("promote", False),
        ]
        # (the approval whose merge was refused, the one that merged, the promotion)
        for run_id in (fix.run_id, title.run_id, link.run_id):
            assert services.audit().verify(run_id).ok, run_id

        # `corral show` tells the same story: the PR, who decided at which commit, the merge, the deploys.
        shown = CliRunner().invoke(app, ["show", fix.run_id, "--repo", str(repo), "--json"])
        assert shown.exit_code == 0, shown.output
        delivered = json.loads(shown.output)["delivery"]
        assert delivered["pull_request"] == pr.number and delivered["merge_commit"] == done.merge_commit
        assert [(d["actor"], d["decision"], d["subject"], d["head_sha"]) for d in delivered["decisions"]] == [
            ("bob", "approved", "run", head),
            ("carol", "approved", "deploy_promotion", done.merge_commit),
        ]
        assert [(d["deployment_id"], d["state"]) for d in delivered["deployments"]] == [
            (done.deployment.id, "staged"),
            (first.deployment.id, "promoted"),
            (first.deployment.id, "rolled_back"),
        ]
        text = CliRunner().invoke(app, ["show", fix.run_id, "--repo", str(repo)]).output
        assert f"pr       #{pr.number}" in text and f"merged   {done.merge_commit[:12]}" in text
        assert f"approved run by bob at {head[:10]}" in text
    finally:
        services.close()


SITE_CONFIG = """[project]
name = "site"

[deploy]
build = '''mkdir -p dist && cp index.html dist/ \\
  && if [ -e broken.txt ]; then echo 'build: broken.txt found' >&2; exit 3; fi'''
output = "dist"
"""


def test_a_failed_build_fails_the_run_and_leaves_production_as_it_was(
    agent_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "site", {"index.html": "<p>v1</p>"}, SITE_CONFIG)
    services = Services(Settings())
    try:
        good = awaiting_run(services, repo, "site", "good")
        staged = delivery.approve(services, good.run_id, approver="bob")
        promoted = delivery.promote(services, good.run_id, approver="bob")
        assert staged.deployment is not None and promoted.deployment is not None
        production = promoted.deployment.url
        assert fetch(production) == (200, "<p>v1</p>")

        broken = awaiting_run(services, repo, "site", "broken")
        with pytest.raises(DeployError, match=r"exited 3: build: broken\.txt found"):
            delivery.approve(services, broken.run_id, approver="bob")
        record = services.state().get_run(broken.run_id)
        assert record.phase is Phase.FAILED and "broken.txt found" in record.failure_reason
        deploys = LocalDeploy(services.settings.home / "deploy")
        assert [d.state for d in deploys.list(broken.run_id)] == ["failed"]
        assert deploys.production("site") == deploys.get(staged.deployment.id)
        assert fetch(production) == (200, "<p>v1</p>")
    finally:
        services.close()
