"""An incident run's pull request links the incident and lists the evidence the agent read; the list is
bounded, and the agent's arguments cannot break out of it. When the agent opened the pull request
itself, corral says the same in one comment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.audit.redact import Redactor
from corral.delivery.pr import ensure_pull_request
from corral.forge.local import LocalForge
from corral.incident.evidence import MAX_LISTED
from corral.incident.source import parse_source
from corral.services import Services
from corral.settings import Settings
from corral.state.models import RunRecord
from tests.delivery.runs import awaiting_run, git

SECRET = "s3cr+t/Value=with/forms0123456789"


@pytest.fixture
def services() -> Iterator[Services]:
    services = Services(Settings())
    yield services
    services.close()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "calc"
    root.mkdir()
    (root / "README").write_text("calc\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return root


def _read(seq: int, tool: str, arguments: dict[str, Any], outcome: str = "ok") -> dict[str, Any]:
    return {
        "seq": seq,
        "tool": tool,
        "arguments": arguments,
        "arguments_hash": f"{seq:064x}",
        "outcome": outcome,
    }


def _incident_run(services: Services, repo: Path, source: str, evidence: list[dict[str, Any]]) -> RunRecord:
    run = awaiting_run(services, repo, "calc", "fix")
    result = {"text": "fixed add()", "incident": parse_source(source).as_result(), "evidence": evidence}
    services.state().update_run(run.run_id, result=result)
    return services.state().get_run(run.run_id)


def test_the_body_links_the_incident_and_lists_each_read(services: Services, repo: Path) -> None:
    run = _incident_run(
        services,
        repo,
        "https://acme.sentry.io/issues/4211/",
        [
            _read(7, "sentry.get_sentry_resource", {"url": "https://acme.sentry.io/issues/4211/"}),
            _read(9, "sentry.search_events", {"query": "level:error"}, outcome="unavailable"),
        ],
    )
    forge = LocalForge(services.settings.home / "forge")
    pr, opened = ensure_pull_request(forge, run, "main", "fixed add()")
    assert opened
    lines = pr.body.splitlines()
    assert "**Incident:** [sentry:acme/4211](https://acme.sentry.io/issues/4211/)" in lines
    assert "**Evidence read (2):**" in lines
    assert (
        '- `sentry.get_sentry_resource` `{"url":"https://acme.sentry.io/issues/4211/"}` (ok, audit seq 7)'
        in lines
    )
    assert '- `sentry.search_events` `{"query":"level:error"}` (unavailable, audit seq 9)' in lines
    assert pr.comments == []  # corral wrote the body, so no comment repeats it


def test_a_short_form_source_is_named_without_a_link(services: Services, repo: Path) -> None:
    run = _incident_run(services, repo, "datadog:monitor/1234", [])
    pr, _ = ensure_pull_request(LocalForge(services.settings.home / "forge"), run, "main", "")
    lines = pr.body.splitlines()
    assert "**Incident:** `datadog:monitor/1234`" in lines
    assert any(line.startswith("**Evidence read:** none") for line in lines)


def test_hostile_arguments_stay_inside_their_code_span_and_the_list_is_bounded(
    services: Services, repo: Path
) -> None:
    hostile = {
        "q": "x` [click](javascript:alert(1)) <script>alert(1)</script>\n\u001b]8;;evil\u0007 \u202e",
        "n": 1,
    }
    evidence = [_read(i, "sentry.search_events", hostile) for i in range(MAX_LISTED + 5)]
    evidence[0]["arguments"] = {"q": "y" * 10_000}
    run = _incident_run(services, repo, "sentry:acme/4211", evidence)
    pr, _ = ensure_pull_request(LocalForge(services.settings.home / "forge"), run, "main", "")
    items = [line for line in pr.body.splitlines() if line.startswith("- `sentry.")]
    assert len(items) == MAX_LISTED
    assert f"- … and 5 more: `corral audit show {run.run_id}`" in pr.body.splitlines()
    for line in items:
        # Four backticks: the tool's span and the arguments' span, nothing the agent wrote closes one.
        assert line.count("`") == 4, line
        assert "\n" not in line and "\u001b" not in line and "\u202e" not in line and "\u0007" not in line
        assert len(line) < 260
    assert "<script>" in items[1]  # inside inline code, which markdown shows as text, never as HTML
    assert items[0].count("y") < 200


def test_an_agent_opened_pull_request_gets_one_comment_from_corral(services: Services, repo: Path) -> None:
    run = _incident_run(
        services, repo, "sentry:acme/4211", [_read(3, "sentry.get_sentry_resource", {"token": SECRET})]
    )
    forge = LocalForge(services.settings.home / "forge")
    forge.publish(repo, run.branch)
    agent_pr = forge.open_pull_request(
        repo, head=run.branch, base="main", title="fix", body="trust me, no incident here", author="agent"
    )
    redactor = Redactor()
    redactor.register("SENTRY_TOKEN", SECRET)
    pr, opened = ensure_pull_request(forge, run, "main", "", redactor)
    assert not opened and pr.number == agent_pr.number and pr.body == "trust me, no incident here"
    ensure_pull_request(forge, run, "main", "", redactor)  # a second delivery step adds nothing
    comments = [c for c in forge.get(pr.number).comments if c.author == "corral"]
    assert len(comments) == 1
    assert "sentry:acme/4211" in comments[0].body and "audit seq 3" in comments[0].body
    assert SECRET not in comments[0].body


def test_a_run_that_is_no_incident_has_neither_lines_nor_comment(services: Services, repo: Path) -> None:
    run = awaiting_run(services, repo, "calc", "plain")
    forge = LocalForge(services.settings.home / "forge")
    pr, _ = ensure_pull_request(forge, run, "main", "added plain")
    assert "**Incident:**" not in pr.body and "Evidence" not in pr.body
    forge.comment(pr.number, body="looks fine", author="bob")
    ensure_pull_request(forge, run, "main", "added plain")
    assert [c.author for c in forge.get(pr.number).comments] == ["bob"]
