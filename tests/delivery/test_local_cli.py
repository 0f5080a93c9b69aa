"""The delivery commands on the local forge, through the CLI: approve (no [deploy]: it stops at merged),
comment, reject closing the pull request, and refusals exiting 2 with nothing changed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.cli import app
from corral.delivery.pr import ensure_pull_request, find_pull_request
from corral.forge.local import LocalForge
from corral.services import Services
from corral.settings import Settings
from corral.state.machine import Phase
from tests.delivery.runs import awaiting_run, git


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    root.mkdir()
    (root / "corral.toml").write_text(
        '[project]\nname = "shop"\n\n[approval]\napprovers = ["bob", "alice"]\n'
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


def cli(monkeypatch: pytest.MonkeyPatch, user: str, *args: str) -> tuple[int, str]:
    """Exit code and output; a corral error (what `corral.cli.main` prints) is part of the output."""
    monkeypatch.setenv("CORRAL_USER", user)
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output + (str(result.exception) if result.exception else "")


def test_approve_comment_and_reject_through_the_cli(
    services: Services, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = awaiting_run(services, repo, "shop", "alpha")
    forge = LocalForge(services.settings.home / "forge")
    ensure_pull_request(forge, run, "main", "added alpha")
    main_before = git(repo, "rev-parse", "main").strip()

    code, output = cli(monkeypatch, "alice", "approve", run.run_id, "--repo", str(repo))
    assert code != 0 and "alice asked for run" in output and "allow_self_approval" in output
    assert git(repo, "rev-parse", "main").strip() == main_before
    assert services.state().list_approvals(run.run_id) == []

    code, output = cli(
        monkeypatch, "bob", "comment", run.run_id, "Name files in kebab-case.", "--repo", str(repo), "--json"
    )
    assert code == 0, output
    answer = json.loads(output)
    assert services.state().list_approvals(run.run_id) == []  # a comment is not an approval
    pr = find_pull_request(forge, run)
    assert pr is not None and answer["pull_request"] == pr.number
    assert [(c.author, c.body) for c in pr.comments] == [("human:bob", "Name files in kebab-case.")]
    from corral.state.preferences import get_preference

    (pref_id,) = answer["preferences"]
    candidate = get_preference(services.state(), pref_id)
    assert (candidate.source_kind, candidate.rule, candidate.created_by) == (
        "review",
        "Name files in kebab-case.",
        "bob",
    )

    code, output = cli(monkeypatch, "bob", "approve", run.run_id, "--repo", str(repo), "--json")
    assert code == 0, output
    done = json.loads(output)
    assert done["phase"] == "merged" and done["deployment"] is None
    assert git(repo, "rev-parse", "main").strip() == done["merge_commit"]
    assert services.state().get_run(run.run_id).phase is Phase.MERGED
    assert "Approved-by: bob" in git(repo, "log", "-1", "--format=%B", "main")
    code, output = cli(monkeypatch, "alice", "approve", run.run_id, "--repo", str(repo))
    assert code != 0 and "already approved" in output  # merged, nothing to deploy: a second approval
    assert len(services.state().list_approvals(run.run_id)) == 1

    other = awaiting_run(services, repo, "shop", "beta")
    ensure_pull_request(forge, other, "main", "added beta")
    code, output = cli(
        monkeypatch, "bob", "reject", other.run_id, "--feedback", "not now", "--repo", str(repo)
    )
    assert code == 0, output
    closed = find_pull_request(forge, other)
    assert closed is not None and closed.state == "closed"
    events = [e.kind for e in services.audit().read(run.run_id)]
    assert events.count("approval.granted") == 1 and "review.comment" in events and "merge.made" in events
