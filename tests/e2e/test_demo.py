"""The demo, end to end: real sandbox, real Claude Code, scripted model behind the host proxy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.demo import DEMO_CONFIG, DEMO_FILES, DEMO_TASK, demo_playbook_path
from tests.conftest import CANARY_KEY
from tests.e2e.conftest import RecordingUpstream, git, leftovers, make_repo, run_task, serve_upstream


@pytest.fixture
def scripted_upstream(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingUpstream]:
    with serve_upstream(demo_playbook_path(), monkeypatch) as upstream:
        yield upstream


pytestmark = pytest.mark.docker


def test_demo_run_reaches_approval_with_the_fix_and_a_full_audit(
    agent_image: str, docker_client: Any, tmp_path: Path, scripted_upstream: RecordingUpstream
) -> None:
    repo = make_repo(tmp_path / "demo", DEMO_FILES, DEMO_CONFIG)
    result = run_task(repo, DEMO_TASK)  # no --playbook: the live-upstream path, pointed at 127.0.0.1

    assert result.record.phase == "awaiting_approval", result.record.failure_reason
    assert result.record.checks_passed is True
    diff = git(repo, "diff", f"{result.record.base_commit}..corral/{result.run_id}")
    assert "-    return a - b" in diff and "+    return a + b" in diff
    assert (repo / "calc" / "ops.py").read_text().count("return a - b") == 1  # the checkout is untouched

    calls = {e.tool_call_id: e for e in result.of("tool.call")}
    results = {e.tool_call_id: e for e in result.of("tool.result")}
    assert sorted(e.tool_name for e in calls.values()) == ["Bash", "Bash", "Edit", "Read"]
    assert set(calls) == set(results)
    shells = result.of("shell.command")
    assert [s.exit_code != 0 for s in shells] == [True, False]  # failing tests, then passing
    assert "1 failed" in shells[0].output and "2 passed" in shells[1].output
    edits = result.of("file.edit")
    assert len(edits) == 1 and edits[0].path == "calc/ops.py" and "+    return a + b" in edits[0].diff
    assert result.of("check.result")[0].passed
    assert result.of("sandbox.selftest")[0].passed
    # agent.stopped says what `corral show` says: the session's real turns and cost.
    (stopped,) = result.of("agent.stopped")
    assert stopped.turns == result.record.result["turns"] and stopped.turns >= 4
    assert stopped.cost_usd == result.record.cost_usd

    # Keys: the upstream got the real (canary) key on every request; the sandbox only a placeholder.
    assert scripted_upstream.keys and set(scripted_upstream.keys) == {CANARY_KEY}
    requests = result.of("model.request")
    assert requests and all(r.request_model.startswith("claude-") for r in requests)
    assert leftovers(docker_client, result.settings, result.run_id) == []


def test_the_key_never_reaches_container_files_env_or_the_records(
    agent_image: str, tmp_path: Path, scripted_upstream: RecordingUpstream, write_playbook: Any
) -> None:
    playbook = write_playbook(
        "turns:\n"
        '  - tool_use: [{name: Bash, input: {command: \'env; cat /proc/1/environ | tr "\\\\0" "\\\\n"\'}}]\n'
        # The key is searched for in two halves joined by the shell, so the command itself (which
        # Claude Code keeps in its transcript) does not contain what it looks for.
        f"  - tool_use: [{{name: Bash, input: {{command: 'a={CANARY_KEY[:12]}; b={CANARY_KEY[12:24]}; "
        f'grep -rl --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev "$a$b" / 2>/dev/null; '
        f"echo searched'}}}}]\n"
        "  - text: done\n"
    )
    repo = make_repo(tmp_path / "r", {"a.txt": "a\n"}, "[checks]\ncommand = 'true'\n")
    result = run_task(repo, "look around", playbook)
    assert result.record.phase == "awaiting_approval", result.record.failure_reason
    env_out, grep_out = (s.output for s in result.of("shell.command"))
    assert "ANTHROPIC_API_KEY=corral-run-" in env_out  # the placeholder is there...
    assert CANARY_KEY not in env_out  # ...the real key is not
    assert grep_out.strip() == "searched"
    for path in result.settings.home.rglob("*"):
        if path.is_file():
            assert CANARY_KEY.encode() not in path.read_bytes(), path


def test_corral_demo_command_works_for_a_newcomer(agent_image: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    proc = subprocess.run(
        [sys.executable, "-m", "corral", "demo", "--dir", str(tmp_path / "sample"), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout[proc.stdout.index('{\n  "summary"') :])["summary"]
    assert summary["phase"] == "awaiting_approval" and summary["checks_passed"] is True
