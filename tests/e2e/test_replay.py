"""Exact replay through the real sandbox: the demo reproduces identically, and a changed image, a
changed policy and a changed tool result each diverge at the step where they first show."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests.exceptions

from corral.demo import DEMO_CONFIG, DEMO_FILES, DEMO_TASK, demo_playbook_path
from corral.model.cassette import Cassette
from corral.regress.replay import ReplayReport, replay_run
from corral.services import Services
from corral.settings import Settings
from tests.e2e.conftest import git, make_repo, run_task

pytestmark = pytest.mark.docker

PROBE_IMAGE = "corral/agent:replay-probe"
PROBE_PLAYBOOK = """\
turns:
  - tool_use: [{name: Bash, input: {command: "cat /etc/corral-probe"}}]
  - tool_use: [{name: Bash, input: {command: "python3 -c 'import uuid; print(uuid.uuid4())'"}}]
  - text: "probed"
"""


def _replay(run_id: str) -> ReplayReport:
    services = Services(Settings())
    try:
        return replay_run(services, run_id)
    finally:
        services.close()


def _commit_all(repo: Path, message: str) -> None:
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", message)


def test_the_demo_replays_identically_and_a_changed_policy_diverges_at_its_step(
    agent_image: str, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "demo", DEMO_FILES, DEMO_CONFIG)
    original = run_task(repo, DEMO_TASK, demo_playbook_path())
    assert original.record.checks_passed is True

    same = _replay(original.run_id)
    assert same.identical, same.as_json()
    assert same.divergence is None and same.diff_identical
    assert same.steps == same.replayed_steps == 4
    services = Services(Settings())
    try:
        replayed = services.state().get_run(same.replay_id)
    finally:
        services.close()
    assert replayed.phase == "evaluated" and replayed.meta["replay_of"] == original.run_id
    assert git(repo, "diff", f"corral/{original.run_id}", f"corral/{same.replay_id}") == ""

    # The portable cassette: exported by the CLI, played by the scripted model in a plain run.
    cassette = tmp_path / "demo.cassette.json"
    exported = subprocess.run(
        [sys.executable, "-m", "corral", "audit", "export", original.run_id, "--cassette", str(cassette)],
        capture_output=True,
        text=True,
        cwd=repo,
    )
    assert exported.returncode == 0, exported.stderr
    assert Cassette.load(cassette).run_id == original.run_id
    played = run_task(repo, DEMO_TASK, cassette)
    assert played.record.phase == "awaiting_approval" and played.record.checks_passed is True
    assert git(repo, "diff", f"corral/{original.run_id}", f"corral/{played.run_id}") == ""

    # Now calc/ops.py is read-only: the Edit (step 3) is refused where the recording allowed it.
    (repo / "corral.toml").write_text(DEMO_CONFIG + '\n[sandbox]\nreadonly_paths = ["calc/ops.py"]\n')
    _commit_all(repo, "protect ops")
    proc = subprocess.run(
        [sys.executable, "-m", "corral", "replay", original.run_id, "--json"],
        capture_output=True,
        text=True,
        cwd=repo,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]  # diverged
    changed = json.loads(proc.stdout)
    assert not changed["identical"]
    assert (changed["divergence"]["step"], changed["divergence"]["what"]) == (3, "Edit decision"), changed
    assert changed["divergence"]["expected"] == "allowed"
    assert "at step 3" in changed["divergence"]["description"]
    assert any("config differs" in note for note in changed["notes"])


def _build_probe_image(docker_client: Any, content: str) -> None:
    dockerfile = (
        f"FROM corral/agent:default\nUSER root\nRUN echo {content} > /etc/corral-probe\nUSER 1000:1000\n"
    )
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=PROBE_IMAGE, rm=True)


def test_a_changed_tool_result_and_a_changed_image_diverge_at_their_steps(
    agent_image: str, docker_client: Any, tmp_path: Path
) -> None:
    _build_probe_image(docker_client, "first-image")
    config = f'[project]\nname = "probe"\n[sandbox]\nimage = "{PROBE_IMAGE}"\n[checks]\ncommand = "true"\n'
    repo = make_repo(tmp_path / "probe", {"README.md": "probe\n"}, config)
    playbook = tmp_path / "probe.yaml"
    playbook.write_text(PROBE_PLAYBOOK)
    try:
        original = run_task(repo, "probe the environment", playbook)
        assert original.record.phase == "awaiting_approval", original.record.failure_reason

        # Same image: step 1 agrees; step 2 prints a fresh uuid, a non-deterministic tool.
        flaky = _replay(original.run_id)
        assert flaky.divergence is not None
        assert (flaky.divergence.step, flaky.divergence.what) == (2, "Bash result"), flaky.as_json()

        # Same tag, other contents: the very first step already differs.
        _build_probe_image(docker_client, "second-image")
        rebuilt = _replay(original.run_id)
        assert rebuilt.divergence is not None
        assert (rebuilt.divergence.step, rebuilt.divergence.what) == (1, "Bash result"), rebuilt.as_json()
        assert "first-image" in rebuilt.divergence.expected
        assert "second-image" in rebuilt.divergence.actual
    finally:
        # A busy engine can take minutes to untag; a leftover probe tag is harmless, a failed test
        # for it would be noise (the next run rebuilds the tag anyway).
        with contextlib.suppress(docker.errors.APIError, requests.exceptions.RequestException):
            docker_client.images.remove(PROBE_IMAGE, force=True)
