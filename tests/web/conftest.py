"""A real app over real SQLite state and audit stores under the test's corral home, driven in-process."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from corral import events as ev
from corral.services import Services
from corral.settings import load_settings
from corral.state.machine import Phase
from corral.state.users import add_user, new_token
from corral.web.app import create_app

HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2"> \x1b]52;c;aGk=\x07\x1b[2J'
JS_LINK = "javascript:window.pwned=3"
PASSWORD = "correct horse battery staple"


@dataclass
class Site:
    services: Services
    client: TestClient
    run_id: str
    repo: Path

    def sign_in(self, name: str) -> str:
        """Signs the client in; returns the CSRF token of its session (from the runs page's form)."""
        reply = self.client.post("/login", data={"name": name, "password": PASSWORD}, follow_redirects=False)
        assert reply.status_code == 303, reply.text
        page = self.client.get("/runs")
        match = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert match, page.text
        return match.group(1)

    def token(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {new_token(self.services.state(), name)}"}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repo(root: Path) -> tuple[Path, str]:
    repo = root / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "t@example.invalid")
    _git(repo, "config", "user.name", "t")
    (repo / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "base")
    base = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", "-b", "corral/branch")
    (repo / "calc.py").write_text(f"def add(a, b):\n    return a + b  # {HOSTILE}\n")
    _git(repo, "commit", "-q", "-am", f"fix add {HOSTILE}")
    _git(repo, "checkout", "-q", "main")
    return repo, base


def hostile_run(services: Services, repo: Path, base: str) -> str:
    state = services.state()
    state.ensure_project("shop", repo=str(repo))
    run = state.create_run(
        project="shop", task=f"fix it {HOSTILE}", repo=str(repo), base_commit=base, requester="ann"
    )
    state.update_run(run.run_id, branch="corral/branch")
    for phase in (Phase.PREPARING, Phase.RUNNING, Phase.CHECKING, Phase.AWAITING_APPROVAL):
        state.transition(run.run_id, phase)
    recorder = services.audit().for_run(run.run_id)
    try:
        recorder.emit(ev.ModelRequest.model_validate({"gen_ai.request.model": "m", "exchange_id": "x1"}))
        recorder.emit(
            ev.ModelResponse.model_validate(
                {"gen_ai.request.model": "m", "exchange_id": "x1", "text": HOSTILE}
            )
        )
        call = {"gen_ai.tool.name": "Bash", "gen_ai.tool.call.id": "t1"}
        recorder.emit(ev.ToolCall.model_validate({**call, "input": {"command": HOSTILE}}))
        recorder.emit(
            ev.ShellCommand.model_validate(
                {"gen_ai.tool.call.id": "t1", "command": HOSTILE, "output": HOSTILE}
            )
        )
        recorder.emit(ev.ToolResult.model_validate({**call, "output": HOSTILE}))
        recorder.emit(
            ev.FileEdit.model_validate(
                {"gen_ai.tool.call.id": "t2", "path": f"x{HOSTILE}.py", "diff": f"+{HOSTILE}\n-old\n"}
            )
        )
        recorder.emit(ev.DeployStaged(actor="corral", deployment_id="d1", url=JS_LINK, ref="corral/branch"))
        recorder.emit(ev.RunFinished(phase="awaiting_approval", reason="", duration_ms=5))
    finally:
        recorder.close()
    return run.run_id


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    services = Services(load_settings())
    repo, base = make_repo(tmp_path)
    run_id = hostile_run(services, repo, base)
    state = services.state()
    add_user(state, "vera", "viewer", PASSWORD)
    add_user(state, "alice", "approver", PASSWORD)
    with TestClient(create_app(services, secret="test-secret")) as client:
        yield Site(services, client, run_id, repo)
    services.close()
