"""A tool call whose audit record cannot be written does not run: the PreToolUse hook fails closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral.audit.recorder import RunRecorder
from corral.errors import StoreError
from corral.events import ToolCall
from tests.e2e.conftest import git, make_repo, run_task

pytestmark = pytest.mark.docker

PLAYBOOK = """\
turns:
  - tool_use: [{name: Bash, input: {command: "touch {workspace}/unaudited.txt"}}]
  - tool_use: [{name: Bash, input: {command: "touch {workspace}/audited.txt"}}]
  - text: done
"""


def test_a_call_that_cannot_be_audited_is_blocked(
    agent_image: str, tmp_path: Path, write_playbook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_emit = RunRecorder.emit

    def failing_emit(self: RunRecorder, event: Any, *, durable: bool = False) -> Any:
        if isinstance(event, ToolCall) and "unaudited" in str(event.input.get("command")):
            raise StoreError("the spool disk is full (simulated)")
        return real_emit(self, event, durable=durable)

    monkeypatch.setattr(RunRecorder, "emit", failing_emit)
    repo = make_repo(tmp_path / "r", {"a.txt": "a\n"}, "[checks]\ncommand = 'true'\n")
    result = run_task(repo, "touch two files", write_playbook(PLAYBOOK))

    assert result.record.phase == "awaiting_approval", result.record.failure_reason
    files = git(repo, "ls-tree", "--name-only", f"corral/{result.run_id}").split()
    assert "audited.txt" in files  # the next, audited call ran...
    assert "unaudited.txt" not in files  # ...the one whose record failed never did
    commands = [e.command for e in result.of("shell.command")]
    assert commands == ["touch /workspace/audited.txt"]
