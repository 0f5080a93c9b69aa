"""The delivery chain through the GitHub forge and the Vercel deploy backends, against loopback fakes
that answer as the vendors document (tests/delivery/fakes.py), errors included.

The runs here are state rows over real git branches (the sandbox part of a run is the e2e tests'): what
is under test is approve → PR → merge at the approved SHA → Vercel preview → promote → rollback, and
every vendor error on the way.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.delivery import approve as delivery
from corral.delivery.pr import ensure_pull_request
from corral.errors import DeployError, MergeRefused, WorkspaceError
from corral.forge.github import GitHubForge
from corral.forge.redacting import RedactingForge
from corral.services import Services
from corral.settings import Settings
from corral.state.machine import Phase
from corral.state.models import RunRecord
from tests.delivery.fakes import FakeGitHub, FakeVercel
from tests.delivery.runs import awaiting_run, git

GH_TOKEN = "ghp_fake-loopback-token-000"
VC_TOKEN = "vercel-fake-loopback-token-000"


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[FakeGitHub, FakeVercel]]:
    bare = tmp_path / "github-shop.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    github, vercel = FakeGitHub(GH_TOKEN, "acme/shop", bare), FakeVercel(VC_TOKEN, "prj_shop")
    monkeypatch.setenv("GITHUB_TOKEN", GH_TOKEN)
    monkeypatch.setenv("VERCEL_TOKEN", VC_TOKEN)
    yield github, vercel
    github.close()
    vercel.close()


@pytest.fixture
def repo(tmp_path: Path, fakes: tuple[FakeGitHub, FakeVercel]) -> Path:
    github, vercel = fakes
    root = tmp_path / "shop"
    root.mkdir()
    (root / "corral.toml").write_text(
        f"""[project]
name = "shop"

[approval]
approvers = ["bob", "carol"]

[forge]
backend = "github"
repository = "acme/shop"
remote = "file://{github.bare}"
api_url = "{github.url}"

[deploy]
backend = "vercel"
project_id = "prj_shop"
repository = "acme/shop"
api_url = "{vercel.url}"
poll_seconds = 0.01
"""
    )
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return root


@pytest.fixture
def services() -> Iterator[Services]:
    services = Services(Settings())
    yield services
    services.close()


def make_run(services: Services, repo: Path, github: FakeGitHub, name: str) -> RunRecord:
    """A run at awaiting_approval, its PR opened by corral (which pushes the branch to the fake's git)."""
    record = awaiting_run(services, repo, "shop", name)
    ensure_pull_request(services.forge(delivery._config(record)), record, "main", f"added {name}")
    return record


def test_github_and_vercel_chain_with_their_errors(
    services: Services, repo: Path, fakes: tuple[FakeGitHub, FakeVercel]
) -> None:
    github, vercel = fakes
    first = make_run(services, repo, github, "alpha")
    pr = github.pulls[1]
    assert pr["head"] == first.branch and first.run_id in pr["body"] and "alpha.txt" in pr["body"]
    head = first.meta["head_commit"]
    assert github.statuses[head] == [
        {"state": "success", "context": "corral/checks", "description": "pytest -q"}
    ]

    # 409: the head moved on GitHub after the review; nothing merges, the run waits for a new approval.
    assert github.head_of(first.branch) == head  # pushed by corral before the PR opened
    github.heads[first.branch] = "f" * 40
    with pytest.raises(MergeRefused, match="moved since"):
        delivery.approve(services, first.run_id, approver="bob")
    assert services.state().get_run(first.run_id).phase is Phase.AWAITING_APPROVAL
    assert not github.pulls[1]["merged"] and vercel.deployments == {}
    del github.heads[first.branch]

    # 405: not mergeable.
    github.unmergeable.add(1)
    with pytest.raises(MergeRefused, match="not mergeable"):
        delivery.approve(services, first.run_id, approver="bob")
    assert services.state().get_run(first.run_id).phase is Phase.AWAITING_APPROVAL
    github.unmergeable.clear()

    done = delivery.approve(services, first.run_id, approver="bob", comment="lgtm")
    assert done.phase is Phase.STAGED and done.deployment is not None
    merges = [r for r in github.requests if r[0] == "PUT"]
    assert merges[-1][2]["sha"] == head and "Approved-by: bob" in merges[-1][2]["commit_message"]
    assert done.merge_commit == github.pulls[1]["merge_commit_sha"]
    (created,) = [r[2] for r in vercel.requests if r[:2] == ("POST", "/v13/deployments")]
    assert created["gitSource"] == {
        "type": "github",
        "org": "acme",
        "repo": "shop",
        "ref": "main",
        "sha": done.merge_commit,
    }
    assert "target" not in created  # a preview
    assert done.deployment.url == f"https://{vercel.deployments[done.deployment.id]['url']}"
    assert vercel.production == ""

    promoted = delivery.promote(services, first.run_id, approver="carol")
    assert vercel.production == done.deployment.id and promoted.phase is Phase.PROMOTED
    assert promoted.deployment is not None and promoted.deployment.url == "https://prj_shop.vercel.app"

    second = make_run(services, repo, github, "beta")
    staged = delivery.approve(services, second.run_id, approver="carol")
    assert staged.deployment is not None
    delivery.promote(services, second.run_id, approver="bob")
    assert vercel.production == staged.deployment.id

    # Vercel ERROR and CANCELED: the run fails with Vercel's message, production stays where it was.
    for state, message in (("ERROR", 'Command "npm run build" exited with 1'), ("CANCELED", "")):
        vercel.outcomes.append((state, message))
        broken = make_run(services, repo, github, f"gamma-{state.lower()}")
        with pytest.raises(DeployError, match=f"ended {state}"):
            delivery.approve(services, broken.run_id, approver="bob")
        record = services.state().get_run(broken.run_id)
        assert record.phase is Phase.FAILED and state in record.failure_reason
        assert (message or "canceled") in record.failure_reason
        assert vercel.production == staged.deployment.id
        failed = [e for e in services.audit().read(broken.run_id) if e.kind == "deploy.failed"]
        assert len(failed) == 1 and state in failed[0].reason

    back = delivery.rollback(services, "shop", approver="bob")
    assert back.id == done.deployment.id and vercel.production == done.deployment.id
    assert ("POST", f"/v1/projects/prj_shop/rollback/{done.deployment.id}") in [
        r[:2] for r in vercel.requests
    ]

    # GitHub review comments become candidate preferences, once each.
    github.review_comments[1] = [
        {
            "id": 9,
            "user": {"login": "dana"},
            "body": "Prefer pathlib over os.path here.",
            "created_at": "2026-12-01T10:00:00Z",
        }
    ]
    ids = delivery.pull_review_comments(services, first.run_id)
    assert len(ids) == 1 and delivery.pull_review_comments(services, first.run_id) == []
    comments = [e for e in services.audit().read(first.run_id) if e.kind == "review.comment"]
    assert [(c.actor, c.source, c.preference_id) for c in comments] == [("human:dana", "github", ids[0])]

    for run in (first, second):
        assert services.audit().verify(run.run_id).ok


def test_github_422_is_a_clear_error(
    services: Services, repo: Path, fakes: tuple[FakeGitHub, FakeVercel]
) -> None:
    github, _ = fakes
    run = make_run(services, repo, github, "alpha")
    forge = services.forge(delivery._config(run))
    assert isinstance(forge, RedactingForge) and isinstance(forge.inner, GitHubForge)
    with pytest.raises(WorkspaceError, match="A pull request already exists for acme:corral/"):
        forge.open_pull_request(repo, head=run.branch, base="main", title="again", body="", author="corral")
    with pytest.raises(MergeRefused, match="Validation Failed; PullRequest sha missing"):
        forge.merge(1, approver="human:bob", sha="")
    with pytest.raises(WorkspaceError, match="not a human approver"):
        forge.merge(1, approver="agent:r1", sha=run.meta["head_commit"])
    assert not github.pulls[1]["merged"]
