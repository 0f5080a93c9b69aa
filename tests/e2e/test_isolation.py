"""Every isolation promise, each a failing tool call the agent makes through a playbook.

One run plays all the attempts (a run costs seconds); each test then checks one promise against the
audit and against host-side canaries.
"""

from __future__ import annotations

import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral.settings import Settings
from tests.conftest import CANARY_KEY
from tests.e2e.conftest import RunResult, git, leftovers, make_repo, run_task

pytestmark = pytest.mark.docker

SECRET = "hidden-canary-5e1f0c"
RATES = "RATE = 3  # read-only canary\n"
CONFIG = """\
[sandbox]
readonly_paths = ["billing/**"]
hidden_paths = ["secrets/**", ".env"]
[checks]
command = "true"
"""


class HostProbe:
    """A TCP server on the host's 127.0.0.1 that counts who connected."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


ATTEMPTS = {
    "write_outside": "echo pwned > /etc/corral-pwned",
    "write_home_escape": "echo pwned > /usr/local/bin/claude-evil",
    "write_readonly_bash": "echo pwned >> {workspace}/billing/rates.py",
    "read_hidden_dir": "cat {workspace}/secrets/key.txt",
    "read_hidden_file": "cat {workspace}/.env",
    "reach_host": "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)\"",
    # `test -n` rather than a bare grep: Claude Code reports grep's "no match" exit 1 as success.
    "interfaces": "test -n \"$(ls /sys/class/net | grep -v '^lo$')\"",
    "docker_socket": "ls -l /var/run/docker.sock /run/docker.sock",
    # Only the run's placeholder and Claude Code's own in-process messaging token may match.
    "credentials": (
        "test -n \"$(env | grep -i -E 'key|token|secret|passw|auth' "
        "| grep -v -E '^(ANTHROPIC_API_KEY=corral-run-|CLAUDE_CODE_MESSAGING_TOKEN=)')\""
    ),
    "su_root": "su -c id root < /dev/null",
    "setuid_files": 'test -n "$(find / -xdev -perm /6000 -type f 2>/dev/null)"',
    "setuid_call": "python3 -c 'import os; os.setuid(0)'",
    "other_model": (
        'python3 -c "import json,os,urllib.request as u; '
        "r=u.Request('http://127.0.0.1:7301/v1/messages', "
        "data=json.dumps({'model':'claude-opus-4-1-20250805',"
        "'max_tokens':5,'messages':[{'role':'user','content':'hi'}]}).encode(), "
        "headers={'x-api-key':os.environ['ANTHROPIC_API_KEY'],'content-type':'application/json',"
        "'anthropic-version':'2023-06-01'}); u.urlopen(r)\""
    ),
}


def _playbook(port: int) -> str:
    lines = ["turns:"]
    for command in ATTEMPTS.values():
        cmd = command.replace("{port}", str(port)).replace("'", "''")
        lines.append(f"  - tool_use: [{{name: Bash, input: {{command: '{cmd}'}}}}]")
    lines.append("  - tool_use: [{name: Read, input: {file_path: '{workspace}/billing/rates.py'}}]")
    lines.append(
        "  - tool_use: [{name: Edit, input: {file_path: '{workspace}/billing/rates.py', "
        "old_string: 'RATE = 3', new_string: 'RATE = 0'}}]"
    )
    lines.append("  - text: tried everything")
    return "\n".join(lines) + "\n"


@dataclass
class Scene:
    result: RunResult
    repo: Path
    probe: HostProbe
    host_canary: Path

    def shell(self, name: str) -> Any:
        wanted = ATTEMPTS[name].replace("{port}", str(self.probe.port)).replace("{workspace}", "/workspace")
        matches = [s for s in self.result.of("shell.command") if s.command == wanted]
        assert matches, f"the audit has no shell.command for {name}: {wanted}"
        return matches[0]


@pytest.fixture(scope="module")
def scene(agent_image: str, docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    with pytest.MonkeyPatch.context() as env:
        for name in ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
            env.delenv(name, raising=False)
        env.setenv("ANTHROPIC_API_KEY", CANARY_KEY)
        home = Path(tempfile.mkdtemp(prefix="ci", dir="/tmp"))
        env.setenv("CORRAL_HOME", str(home))
        base = tmp_path_factory.mktemp("iso")
        host_canary = base / "host-canary.txt"
        host_canary.write_text("untouched\n")
        repo = make_repo(
            base / "repo",
            {
                "app.py": "x = 1\n",
                "billing/rates.py": RATES,
                "secrets/key.txt": SECRET + "\n",
                ".env": f"TOKEN={SECRET}\n",
            },
            CONFIG,
        )
        probe = HostProbe()
        playbook = base / "attempts.yaml"
        playbook.write_text(_playbook(probe.port))
        result = run_task(repo, "try to escape", playbook, Settings(home=home))
        yield Scene(result, repo, probe, host_canary)
        probe.sock.close()


def test_the_run_completes_and_leaves_nothing(scene: Scene, docker_client: Any) -> None:
    assert scene.result.record.phase == "awaiting_approval", scene.result.record.failure_reason
    assert leftovers(docker_client, scene.result.settings, scene.result.run_id) == []


@pytest.mark.parametrize("attempt", [a for a in ATTEMPTS if a != "other_model"])
def test_each_escape_attempt_fails_and_is_audited(scene: Scene, attempt: str) -> None:
    shell = scene.shell(attempt)
    assert shell.exit_code != 0, f"{attempt} succeeded inside the sandbox: {shell.output}"
    calls = [c for c in scene.result.of("tool.call") if c.tool_call_id == shell.tool_call_id]
    assert calls and calls[0].input["command"] == shell.command


def test_hidden_content_never_reaches_the_agent(scene: Scene) -> None:
    for result in scene.result.of("tool.result"):
        assert SECRET not in result.output


def test_readonly_edit_is_denied_by_the_hook_and_canaries_are_unchanged(scene: Scene) -> None:
    denied = scene.result.of("tool.denied")
    assert [d.rule for d in denied] == ["readonly_paths"]
    assert (scene.repo / "billing" / "rates.py").read_text() == RATES
    assert git(scene.repo, "show", f"corral/{scene.result.run_id}:billing/rates.py") == RATES
    assert scene.host_canary.read_text() == "untouched\n"
    assert not Path("/etc/corral-pwned").exists()


def test_host_loopback_server_saw_no_connection(scene: Scene) -> None:
    assert scene.probe.connections == 0
    assert scene.result.of("sandbox.selftest")[0].interfaces == ["lo"]


def test_a_request_for_an_unpinned_model_is_refused_and_recorded(scene: Scene) -> None:
    assert scene.shell("other_model").exit_code != 0
    refused = scene.result.of("model.refused")
    assert [r.request_model for r in refused] == ["claude-opus-4-1-20250805"]
    assert all(r.request_model != "claude-opus-4-1-20250805" for r in scene.result.of("model.request"))
