"""Bad input fails early, with an error naming the key, file or path, and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.sandbox.docker import HOST_PID_LABEL
from corral.settings import Settings
from tests.e2e.conftest import make_repo

PLAYBOOK_OK = "turns:\n  - text: hi\n"


@dataclass
class Outcome:
    returncode: int
    stderr: str
    pid: int


def corral(*args: str, env: dict[str, str] | None = None) -> Outcome:
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    _, stderr = proc.communicate(timeout=120)
    return Outcome(proc.returncode, stderr, proc.pid)


def assert_nothing_left(outcome: Outcome) -> None:
    settings = Settings()
    for folder in (settings.worktrees_dir, settings.sockets_dir):
        assert not folder.exists() or not any(folder.iterdir()), f"{folder} has leftovers"
    listing = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={HOST_PID_LABEL}={outcome.pid}"],
        capture_output=True,
        text=True,
    )
    assert listing.stdout.strip() == ""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"a.py": "x = 1\n"}, "[checks]\ncommand = 'true'\n")


@pytest.fixture
def playbook(tmp_path: Path) -> Path:
    path = tmp_path / "ok.yaml"
    path.write_text(PLAYBOOK_OK)
    return path


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("[project\nname = 'x'", "not valid TOML"),
        ("[sandbox]\nnetwork = 'host'\n", "unknown key 'sandbox.network'"),
        ("[agent]\nmodel = 'claude-sonnet-4-5'\n", "key 'agent.model'"),
        ("[agent]\nmodel = 'claude-sonnet-4-5'\n", "aliases are refused"),
    ],
)
def test_bad_config_names_the_key_and_file(repo: Path, playbook: Path, config: str, expected: str) -> None:
    (repo / "corral.toml").write_text(config)
    proc = corral("run", "task", "--repo", str(repo), "--playbook", str(playbook))
    assert proc.returncode == 2
    assert expected in proc.stderr and str(repo / "corral.toml") in proc.stderr
    assert_nothing_left(proc)


def test_not_a_git_repo(tmp_path: Path, playbook: Path) -> None:
    proc = corral("run", "task", "--repo", str(tmp_path), "--playbook", str(playbook))
    assert proc.returncode == 2
    assert f"{tmp_path}: not a git repository" in proc.stderr
    assert_nothing_left(proc)


def test_missing_base_branch(repo: Path, playbook: Path) -> None:
    (repo / "corral.toml").write_text("[project]\nbase_branch = 'develop'\n")
    proc = corral("run", "task", "--repo", str(repo), "--playbook", str(playbook))
    assert proc.returncode == 2
    assert "base branch 'develop' does not exist" in proc.stderr and "[project].base_branch" in proc.stderr
    assert_nothing_left(proc)


def test_no_docker_engine(repo: Path, playbook: Path) -> None:
    proc = corral(
        "run",
        "task",
        "--repo",
        str(repo),
        "--playbook",
        str(playbook),
        env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    assert proc.returncode == 2
    assert "Docker Engine" in proc.stderr and "dockerd" in proc.stderr
    assert_nothing_left(proc)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("turns: [\n", "not valid YAML"),
        ("turns:\n  - tool_use: [{name: Bash, input: {command: ls}}]\n  - shout: hi\n", "turn 1"),
        ("turns:\n  - tool_use: [{name: Hammer, input: {}}]\n", "Hammer"),
    ],
)
def test_bad_playbook_names_the_file_and_turn(repo: Path, tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    proc = corral("run", "task", "--repo", str(repo), "--playbook", str(path))
    assert proc.returncode == 2
    assert expected in proc.stderr and str(path) in proc.stderr
    assert_nothing_left(proc)
