"""When the agent's container cannot be removed, the run fails before the commit and the checks.

The removal is made to fail for real: the Docker Engine cannot delete a container directory that holds
an immutable entry (`chattr +i`), and answers `docker rm -f` with "unable to remove filesystem".
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from corral.events import Event, SandboxCreated
from corral.runs import RunOrchestrator, RunRequest
from corral.services import Services
from corral.settings import Settings
from tests.e2e.conftest import make_repo, stored_run

pytestmark = pytest.mark.docker

PLAYBOOK = """\
turns:
  - tool_use: [{name: Bash, input: {command: "echo changed > {workspace}/a.txt"}}]
  - text: done
"""


def test_a_container_that_cannot_be_removed_fails_the_run(
    agent_image: str, docker_client: Any, tmp_path: Path, write_playbook: Any
) -> None:
    root = Path(docker_client.info()["DockerRootDir"]) / "containers"
    pinned: list[Path] = []

    def pin_agent_container(event: Event) -> None:
        if isinstance(event, SandboxCreated) and event.purpose == "agent":
            entry = root / event.container_id / "checkpoints"
            subprocess.run(["chattr", "+i", str(entry)], check=True)
            pinned.append(entry)

    repo = make_repo(tmp_path / "r", {"a.txt": "a\n"}, "[checks]\ncommand = 'true'\n")
    settings = Settings()
    services = Services(settings)
    try:
        run_id = RunOrchestrator(services, [pin_agent_container]).run(
            RunRequest(task="change a.txt", repo=repo, playbook=write_playbook(PLAYBOOK))
        )
    finally:
        services.close()
        for entry in pinned:
            subprocess.run(["chattr", "-i", str(entry)], check=True)
            docker_client.api.remove_container(entry.parent.name, force=True)
    assert pinned, "the agent container was never created"
    result = stored_run(settings, run_id)
    assert result.record.phase == "failed"
    assert "could not remove sandbox" in result.record.failure_reason
    assert "unable to remove filesystem" in result.record.failure_reason
    assert result.of("shell.command"), "the agent's step ran"
    assert result.of("commit.made") == [] and result.of("check.result") == []
    assert [e.purpose for e in result.of("sandbox.created")] == ["agent"]
