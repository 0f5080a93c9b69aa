"""Where a secret may go (issue 14, item 2), in one real run: a `to = ["checks"]` secret reaches the
checks sandbox only, an `expose = "agent"` one reaches the agent's sandbox with a loud warning, both
are audited as `secret.requested` (never their values), and no file corral wrote holds either value."""

from __future__ import annotations

import base64
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from corral.runs import RunOrchestrator, RunRequest
from corral.services import Services
from corral.settings import Settings
from tests.conftest import CANARY_KEY
from tests.e2e.conftest import RunResult, make_repo, stored_run

pytestmark = pytest.mark.docker

DB_URL = "postgres://shop:checks-only-pw-9@db/shop"
NPM_TOKEN = "npm_agent-visible-token-77"
CHECKS = 'import os\nprint(os.environ.get("DATABASE_URL"))\nprint("npm:", "NPM_TOKEN" in os.environ)\n'
CONFIG = """\
[checks]
command = "python3 checks.py"

[secrets.DATABASE_URL]
ref = "env:CORRAL_E2E_DB_URL"
to = ["checks"]

[secrets.AGENT_NPM]
ref = "file:{npm_file}"
to = []
expose = "agent"
env = "NPM_TOKEN"
"""


@pytest.fixture(scope="module")
def run(agent_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunResult, list[str]]]:
    with pytest.MonkeyPatch.context() as env:
        for name in ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
            env.delenv(name, raising=False)
        env.setenv("ANTHROPIC_API_KEY", CANARY_KEY)
        env.setenv("CORRAL_E2E_DB_URL", DB_URL)
        home = Path(tempfile.mkdtemp(prefix="cs", dir="/tmp"))
        env.setenv("CORRAL_HOME", str(home))
        base = tmp_path_factory.mktemp("secret-dest")
        npm_file = base / "npm-token"
        npm_file.write_text(NPM_TOKEN + "\n")
        repo = make_repo(base / "repo", {"checks.py": CHECKS}, CONFIG.format(npm_file=npm_file))
        playbook = base / "playbook.yaml"
        turns = [
            {"tool_use": [{"name": "Bash", "input": {"command": "env | sort"}}]},
            {"tool_use": [{"name": "Bash", "input": {"command": 'printf "%s" "$NPM_TOKEN" | base64'}}]},
            {"text": "done"},
        ]
        playbook.write_text(yaml.safe_dump({"turns": turns}))
        settings = Settings(home=home)
        messages: list[str] = []
        services = Services(settings, progress=messages.append)
        try:
            run_id = RunOrchestrator(services).run(
                RunRequest(task="look around", repo=repo, playbook=playbook)
            )
        finally:
            services.close()
        yield stored_run(settings, run_id), messages


def test_each_secret_is_requested_by_its_declared_sandbox_only(run: tuple[RunResult, list[str]]) -> None:
    result, _ = run
    assert result.record.phase == "awaiting_approval", result.record.failure_reason
    requested = sorted((e.name, e.provider, e.requester, e.purpose) for e in result.of("secret.requested"))
    assert requested == [
        ("AGENT_NPM", "file", "agent", "env NPM_TOKEN"),
        ("DATABASE_URL", "env", "checks", "env DATABASE_URL"),
    ]


def test_the_agent_sees_only_the_exposed_secret_and_the_audit_only_its_name(
    run: tuple[RunResult, list[str]],
) -> None:
    result, _ = run
    listing, encoded = (s.output for s in result.of("shell.command"))
    assert "DATABASE_URL" not in listing and "checks-only-pw-9" not in listing
    assert "NPM_TOKEN=[secret:AGENT_NPM]" in listing
    assert NPM_TOKEN not in listing
    assert encoded.strip() == "[secret:AGENT_NPM]"  # base64 of it is redacted as well


def test_the_checks_sandbox_gets_its_secret_and_not_the_agents(run: tuple[RunResult, list[str]]) -> None:
    result, _ = run
    (check,) = result.of("check.result")
    assert check.passed
    assert check.output.splitlines() == ["[secret:DATABASE_URL]", "npm: False"]


def test_exposing_to_the_agent_is_reported_loudly(run: tuple[RunResult, list[str]]) -> None:
    _, messages = run
    assert any(
        m.startswith("WARNING: secrets exposed to the agent's sandbox") and "AGENT_NPM" in m for m in messages
    )


def test_no_file_corral_wrote_holds_a_value(run: tuple[RunResult, list[str]]) -> None:
    result, _ = run
    forms = [v.encode() for v in (DB_URL, NPM_TOKEN)]
    forms += [base64.b64encode(f) for f in list(forms)]
    files = [p for p in result.settings.home.rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        for form in forms:
            assert form not in data, f"{path} holds a secret"


def test_a_run_whose_agent_writes_a_secret_into_its_change_fails_and_commits_nothing(
    agent_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CORRAL_E2E_DB_URL", DB_URL)
    npm_file = tmp_path / "npm-token"
    npm_file.write_text(NPM_TOKEN + "\n")
    repo = make_repo(tmp_path / "repo", {"checks.py": CHECKS}, CONFIG.format(npm_file=npm_file))
    playbook = tmp_path / "playbook.yaml"
    write = 'printf "//registry.npmjs.org/:_authToken=%s\\n" "$NPM_TOKEN" > .npmrc'
    turns = [{"tool_use": [{"name": "Bash", "input": {"command": write}}]}, {"text": "configured npm"}]
    playbook.write_text(yaml.safe_dump({"turns": turns}))
    settings = Settings()
    services = Services(settings)
    try:
        run_id = RunOrchestrator(services).run(RunRequest(task="set up npm", repo=repo, playbook=playbook))
    finally:
        services.close()
    result = stored_run(settings, run_id)
    assert result.record.phase == "failed"
    assert (
        "adds the value of secret AGENT_NPM to .npmrc; nothing was committed" in result.record.failure_reason
    )
    assert NPM_TOKEN not in result.record.failure_reason
    assert not result.of("commit.made") and not result.of("pr.opened")
    branch = result.record.branch
    assert subprocess.run(
        ["git", "-C", str(repo), "rev-parse", branch], capture_output=True, text=True
    ).stdout.strip() == (
        subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "main"], capture_output=True, text=True
        ).stdout.strip()
    )
