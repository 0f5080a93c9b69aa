"""The real Claude Code plays a scripted turn inside the hardened sandbox, through the socat bridge."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn

from corral.model.playbook import Playbook
from corral.model.scripted import scripted_app
from corral.sandbox.docker import DockerSandbox

pytestmark = pytest.mark.docker

PLAYBOOK = """
turns:
  - tool_use:
      - name: Bash
        input:
          command: "id -u > {workspace}/who.txt && find $HOME -mindepth 1 -maxdepth 1 >> {workspace}/who.txt"
  - text: "all done"
"""


@pytest.fixture
def model_socket_dir() -> Iterator[Path]:
    """A scripted model served on a unix socket in a per-run directory (as the model proxy does)."""
    socket_dir = Path(tempfile.mkdtemp(prefix="cs", dir="/tmp"))
    socket_dir.chmod(0o755)
    app = scripted_app(Playbook.from_text(PLAYBOOK), "/workspace")
    server = uvicorn.Server(uvicorn.Config(app, uds=str(socket_dir / "model.sock"), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not (socket_dir / "model.sock").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.chmod(socket_dir / "model.sock", 0o666)
    yield socket_dir
    server.should_exit = True
    thread.join(timeout=5)
    shutil.rmtree(socket_dir, ignore_errors=True)


def test_claude_code_plays_a_turn_in_the_sandbox(
    make_sandbox: Callable[..., DockerSandbox], workspace: Path, model_socket_dir: Path
) -> None:
    sandbox = make_sandbox(workspace, socket_dir=model_socket_dir, bridges={18081: "model.sock"})
    result = sandbox.exec(
        [
            "claude", "-p", "record who you are",
            "--model", "claude-sonnet-4-5-20250929",
            "--permission-mode", "bypassPermissions",
            "--output-format", "text",
        ],
        env={
            "ANTHROPIC_BASE_URL": "http://127.0.0.1:18081",
            "ANTHROPIC_API_KEY": "corral-run-placeholder",
            "ANTHROPIC_SMALL_FAST_MODEL": "claude-haiku-4-5-20251001",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        },
        timeout=120,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "all done" in result.output
    # The Bash tool ran as uid 1000 in the workspace, and Claude Code kept its state in the tmpfs HOME.
    who = (workspace / "who.txt").read_text().split()
    assert who[0] == "1000"
    assert "/home/agent/.claude" in who[1:], who
