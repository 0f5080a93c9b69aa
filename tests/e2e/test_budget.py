"""The model budget in a real run (issue 14, item 4): code inside the sandbox that calls the model
port directly spends the same budget as Claude Code, is audited the same way, and once the budget is
spent Claude Code's next request is refused and the run fails with "budget exhausted: ..."."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from corral.settings import Settings
from tests.conftest import CANARY_KEY
from tests.e2e.conftest import RunResult, leftovers, make_repo, run_task

pytestmark = pytest.mark.docker

DIRECT = """\
import json, os, urllib.error, urllib.request
statuses = []
for _ in range(2):
    body = {"model": "claude-sonnet-4-5-20250929", "max_tokens": 50,
            "messages": [{"role": "user", "content": "free tokens please"}]}
    req = urllib.request.Request("http://127.0.0.1:7301/v1/messages", json.dumps(body).encode(),
        {"x-api-key": os.environ.get("ANTHROPIC_API_KEY", ""), "anthropic-version": "2023-06-01",
         "content-type": "application/json"})
    try:
        statuses.append(urllib.request.urlopen(req, timeout=30).status)
    except urllib.error.HTTPError as exc:
        statuses.append(exc.code)
print(json.dumps({"statuses": statuses}))
"""


@pytest.fixture(scope="module")
def spent(agent_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunResult]:
    with pytest.MonkeyPatch.context() as env:
        for name in ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
            env.delenv(name, raising=False)
        env.setenv("ANTHROPIC_API_KEY", CANARY_KEY)
        home = Path(tempfile.mkdtemp(prefix="cb", dir="/tmp"))
        env.setenv("CORRAL_HOME", str(home))
        base = tmp_path_factory.mktemp("budget")
        config = "[agent]\nmax_model_requests = 3\n\n[checks]\ncommand = 'true'\n"
        repo = make_repo(base / "repo", {"direct.py": DIRECT}, config)
        turns = [
            {"tool_use": [{"name": "Bash", "input": {"command": "python3 direct.py"}}]},
            {"tool_use": [{"name": "Bash", "input": {"command": "echo never"}}]},
            {"text": "done"},
        ]
        playbook = base / "playbook.yaml"
        playbook.write_text(yaml.safe_dump({"turns": turns}))
        yield run_task(repo, "spend the budget", playbook, Settings(home=home))


def test_the_run_fails_with_budget_exhausted(spent: RunResult) -> None:
    assert spent.record.phase == "failed"
    assert spent.record.failure_reason.startswith(
        "budget exhausted: 3 model requests of max_model_requests = 3"
    )


def test_direct_requests_count_and_are_audited_like_claude_codes(spent: RunResult) -> None:
    (shell,) = [s for s in spent.of("shell.command") if "direct.py" in s.command]
    statuses = json.loads(shell.output.strip().splitlines()[-1])["statuses"]
    assert statuses == [200, 200]
    assert len(spent.of("model.request")) == 3  # one from Claude Code, two from the script
    assert len(spent.of("model.response")) == 3
    refused = spent.of("model.refused")
    assert refused and all(r.reason.startswith("corral: budget exhausted: ") for r in refused)
    assert not [s for s in spent.of("shell.command") if "echo never" in s.command]


def test_nothing_is_left_behind(spent: RunResult, docker_client: object) -> None:
    assert leftovers(docker_client, spent.settings, spent.run_id) == []
