"""The shell's hook path without a sandbox: the real forwarder script, the real host endpoint and the
real audit log. The end-to-end behaviour through the TUI is in tests/e2e/test_shell.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.agent.policy import PathPolicy
from corral.agent.tool_hooks import ToolHooks
from corral.audit.recorder import RunRecorder
from corral.services import Services
from corral.settings import Settings
from corral.shell.hooks import HookServer, SessionHooks
from corral.shell.managed import FORWARDER_SOURCE, managed_settings
from corral.state.ids import new_run_id

POLICY = PathPolicy("/workspace", ("locked/**",), ("secrets/**",))


@pytest.fixture
def recorder() -> Iterator[tuple[RunRecorder, Services, str]]:
    services = Services(Settings())
    run_id = new_run_id()
    rec = services.audit().for_run(run_id)
    try:
        yield rec, services, run_id
    finally:
        rec.close()
        services.close()


def _serve(rec: RunRecorder, path: Path) -> tuple[HookServer, SessionHooks]:
    session = SessionHooks(ToolHooks(rec, POLICY), rec, "human:alice", frozenset({"Bash", "Write"}))
    return HookServer(session, path), session


def _forward(socket_path: Path, data: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", str(FORWARDER_SOURCE), str(socket_path)],
        input=json.dumps(data),
        capture_output=True,
        text=True,
        timeout=30,
    )


def _pre(tool: str, tool_input: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {
        "hook_event_name": "PreToolUse",
        "tool_name": tool,
        "tool_input": tool_input,
        "tool_use_id": call_id,
    }


def test_the_forwarder_carries_the_hosts_decision_and_the_audit_comes_first(
    recorder: tuple[RunRecorder, Services, str], tmp_path: Path
) -> None:
    rec, services, run_id = recorder
    server, session = _serve(rec, tmp_path / "hook.sock")
    try:
        prompt = _forward(
            server.path, {"hook_event_name": "UserPromptSubmit", "prompt": "fix it", "session_id": "s1"}
        )
        allowed = _forward(server.path, _pre("Bash", {"command": "ls"}, "t1"))
        denied = _forward(
            server.path, _pre("Write", {"file_path": "/workspace/locked/a", "content": ""}, "t2")
        )
        unknown = _forward(server.path, _pre("WebFetch", {"url": "https://example.com"}, "t3"))
    finally:
        server.stop()
    assert prompt.returncode == 0 and session.session_id == "s1"
    assert allowed.returncode == 0
    assert json.loads(allowed.stdout)["hookSpecificOutput"]["permissionDecision"] == "allow"
    assert denied.returncode == 0
    out = json.loads(denied.stdout)["hookSpecificOutput"]
    assert (
        out["permissionDecision"] == "deny"
        and "locked/a is a read-only path" in out["permissionDecisionReason"]
    )
    # A tool a headless run does not offer gets no decision: Claude Code asks the human.
    assert unknown.returncode == 0 and unknown.stdout == ""
    events = services.audit().read(run_id)
    kinds = [(e.kind, getattr(e, "tool_name", "")) for e in events]
    assert kinds == [
        ("human.prompt", ""),
        ("tool.call", "Bash"),
        ("tool.call", "Write"),
        ("tool.denied", "Write"),
        ("tool.call", "WebFetch"),
    ]
    assert events[0].actor == "human:alice" and events[0].prompt == "fix it"


def test_an_unreachable_host_means_deny(tmp_path: Path) -> None:
    result = _forward(tmp_path / "nobody-listens.sock", _pre("Bash", {"command": "ls"}, "t1"))
    assert result.returncode == 2  # Claude Code blocks the call on exit code 2
    assert "hook endpoint is unreachable" in result.stderr and result.stdout == ""


def test_a_call_that_cannot_be_audited_is_refused(
    recorder: tuple[RunRecorder, Services, str], tmp_path: Path
) -> None:
    rec, _, _ = recorder
    server, _ = _serve(rec, tmp_path / "hook.sock")
    try:
        rec.close()  # the audit is gone: nothing may run unrecorded
        result = _forward(server.path, _pre("Bash", {"command": "ls"}, "t1"))
        garbage = subprocess.run(
            ["/bin/sh", str(FORWARDER_SOURCE), str(server.path)],
            input="not json",
            capture_output=True,
            text=True,
        )
    finally:
        server.stop()
    assert result.returncode == 2 and "could not be recorded" in result.stderr
    assert garbage.returncode == 2 and "not valid JSON" in garbage.stderr


def test_managed_settings_keep_only_managed_hooks_and_rules() -> None:
    settings = managed_settings(["Bash", "Read"])
    assert settings["allowManagedHooksOnly"] is True and settings["allowManagedPermissionRulesOnly"] is True
    assert settings["permissions"]["disableBypassPermissionsMode"] == "disable"
    for event in ("PreToolUse", "PostToolUse", "UserPromptSubmit"):
        (hook,) = settings["hooks"][event][0]["hooks"]
        assert [hook["command"], *hook["args"]] == [
            "/usr/bin/env",
            "-i",
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "/bin/sh",
            "/etc/claude-code/corral-hook.sh",
            "/run/corral/hook.sock",
        ]
        assert hook["onFailure"] == "block"  # a hook that fails any other way blocks too
    assert settings["env"]["LD_PRELOAD"] == "" and settings["env"]["CLAUDE_CODE_SIMPLE"] == ""


def test_without_a_terminal_corral_shell_points_at_corral_run(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "corral", "shell", "--repo", str(tmp_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "needs an interactive terminal" in result.stderr and "corral run" in result.stderr
    services = Services(Settings())
    try:
        assert services.state().list_runs() == []
    finally:
        services.close()
