"""`corral demo`: a small repository with a failing test, and the bundled playbook that fixes it."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from corral.errors import WorkspaceError
from corral.model.demo_repo import DEMO_FILES
from corral.workspace import _git

DEMO_CONFIG = """\
[project]
name = "demo"
base_branch = "main"

[checks]
command = "python3 -m pytest -q"
"""


DEMO_GITIGNORE = "__pycache__/\n.pytest_cache/\n"


def demo_playbook_path() -> Path:
    return Path(str(files("corral") / "playbooks" / "demo.yaml"))


def create_demo_repo(target: Path) -> Path:
    """Write the sample files and commit them on `main`; refuse to touch a non-empty directory."""
    if target.exists() and any(target.iterdir()):
        raise WorkspaceError(f"{target}: exists and is not empty", hint="pass --dir with a new directory")
    target.mkdir(parents=True, exist_ok=True)
    for rel, text in {**DEMO_FILES, "corral.toml": DEMO_CONFIG, ".gitignore": DEMO_GITIGNORE}.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    _git(["init", "--quiet", "--initial-branch=main"], cwd=target)
    _git(["add", "--all"], cwd=target)
    _git(
        [
            "-c",
            "user.name=corral demo",
            "-c",
            "user.email=demo@corral.invalid",
            "commit",
            "--quiet",
            "-m",
            "Sample project",
        ],
        cwd=target,
    )
    return target
