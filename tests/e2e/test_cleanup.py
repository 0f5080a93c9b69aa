"""After a normal run, a failed run, and a SIGKILL of `corral run` then `corral gc`, nothing is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from corral.audit.log import AuditLog
from corral.services import Services
from corral.settings import Settings
from tests.e2e.conftest import leftovers, make_repo, run_task, stored_run
from tests.processes import communicate_or_dump

pytestmark = pytest.mark.docker

# A plain `sleep 120` is refused by Claude Code's Bash tool, which asks for background jobs instead.
SLOW = (
    "turns:\n"
    "  - tool_use: [{name: Bash, input: "
    "{command: 'python3 -c \"import time; time.sleep(120)\"', timeout: 600000}}]\n"
    "  - text: done\n"
)


def test_wall_clock_limit_fails_the_run_and_cleans_up(
    agent_image: str, docker_client: Any, tmp_path: Path, write_playbook: Any
) -> None:
    repo = make_repo(
        tmp_path / "r", {"a.txt": "a\n"}, "[agent]\ntimeout_seconds = 8\n[checks]\ncommand = 'true'\n"
    )
    started = time.monotonic()
    result = run_task(repo, "sleep", write_playbook(SLOW))
    assert result.record.phase == "failed"
    assert "wall-clock limit" in result.record.failure_reason
    assert time.monotonic() - started < 100  # stopped well before the 120 s sleep ended
    assert result.kinds()[-1] == "run.finished"
    assert leftovers(docker_client, result.settings, result.run_id) == []


def _wait_for_running(settings: Settings, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        services = Services(settings)
        try:
            for run in services.state().list_runs(limit=5):
                if run.phase == "running":
                    return run.run_id
        except Exception:
            pass
        finally:
            services.close()
        time.sleep(0.5)
    raise AssertionError("the run never reached the running phase")


def _wait_for_tool_call(settings: Settings, run_id: str, needle: str, timeout: float = 120) -> None:
    """Until the run's audit holds a tool call whose command contains `needle` (durable before it runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with AuditLog.open(settings, allow_offline=True, background=False) as audit:
            calls = [e for e in audit.read(run_id) if e.kind == "tool.call"]
        if any(needle in str(c.input.get("command", "")) for c in calls):
            return
        time.sleep(0.5)
    raise AssertionError(f"the run never started the tool call {needle!r}")


def _start_slow_run(tmp_path: Path, write_playbook: Any) -> tuple[Path, subprocess.Popen[str]]:
    """`corral run` of a playbook whose one tool call takes two minutes, as a separate process."""
    repo = make_repo(tmp_path / "r", {"a.txt": "a\n"}, "[checks]\ncommand = 'true'\n")
    argv = ["run", "sleep", "--repo", str(repo), "--playbook", str(write_playbook(SLOW))]
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    return repo, proc


def test_sigkill_then_gc_leaves_nothing(
    agent_image: str, docker_client: Any, tmp_path: Path, write_playbook: Any
) -> None:
    repo, proc = _start_slow_run(tmp_path, write_playbook)
    settings = Settings()
    run_id = _wait_for_running(settings)
    # The tool call is in the audit before it runs; a moment later it is running in the container.
    _wait_for_tool_call(settings, run_id, "time.sleep(120)")
    time.sleep(1)
    assert leftovers(docker_client, settings, run_id), (
        "a live run should hold a container, sockets and a worktree"
    )
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)

    gc = subprocess.run(
        [sys.executable, "-m", "corral", "gc", "--json"], capture_output=True, text=True, timeout=120
    )
    assert gc.returncode == 0, gc.stderr
    report = json.loads(gc.stdout)
    assert run_id in report["runs_failed"]
    assert report["containers"] and report["worktrees"]
    assert leftovers(docker_client, settings, run_id) == []
    stored = stored_run(settings, run_id)
    assert stored.record.phase == "failed" and "orphaned" in stored.record.failure_reason
    worktrees = subprocess.run(["git", "-C", str(repo), "worktree", "list"], capture_output=True, text=True)
    assert worktrees.stdout.count("\n") == 1

    # Crash safety: the tool call that was running when the process died was fsynced before it ran,
    # so it reached the store; the chain, continued by gc to record the failure, verifies.
    services = Services(settings)
    try:
        report = services.audit().verify(run_id)
    finally:
        services.close()
    sleeping = [c for c in stored.of("tool.call") if "time.sleep(120)" in c.input.get("command", "")]
    assert len(sleeping) == 1
    assert stored.kinds()[-2:] == ["run.phase", "run.finished"] and stored.events[-1].phase == "failed"
    assert report.ok, report.summary()


def test_ctrl_c_records_the_run_as_failed_and_cleans_up(
    agent_image: str, docker_client: Any, tmp_path: Path, write_playbook: Any
) -> None:
    _, proc = _start_slow_run(tmp_path, write_playbook)
    settings = Settings()
    run_id = _wait_for_running(settings)
    _wait_for_tool_call(settings, run_id, "time.sleep(120)")
    proc.send_signal(signal.SIGINT)
    _, stderr = communicate_or_dump(proc, 60)
    assert proc.returncode == 130, stderr
    assert leftovers(docker_client, settings, run_id) == []
    record = stored_run(settings, run_id).record
    assert record.phase == "failed" and "interrupted" in record.failure_reason
