"""`corral demo`: a small repository with a failing test, and the bundled playbook that fixes it.

`DEMO_FILES` is the single source of the repo's contents, so the demo command and the tests write
the same files that `playbooks/demo.yaml` expects (its Edit matches `return a - b` exactly).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from corral.errors import WorkspaceError
from corral.model.playbook import Playbook
from corral.workspace import _git

DEMO_FILES: dict[str, str] = {
    "README.md": (
        "# calc\n\nA tiny calculator package for the corral demo. Its test fails: `add` subtracts.\n\n"
        "Run the tests with `python3 -m pytest -q`.\n"
    ),
    "calc/__init__.py": '"""A tiny calculator."""\n',
    "calc/ops.py": (
        '"""Arithmetic operations."""\n\n\n'
        "def add(a, b):\n"
        "    return a - b\n\n\n"
        "def mul(a, b):\n"
        "    return a * b\n"
    ),
    "tests/test_ops.py": (
        "from calc.ops import add, mul\n\n\n"
        "def test_add():\n"
        "    assert add(2, 3) == 5\n\n\n"
        "def test_mul():\n"
        "    assert mul(2, 3) == 6\n"
    ),
}

DEMO_TASK = "The test suite fails. Find the bug in calc/ops.py and fix it."
DEMO_PLAYBOOK = "demo.yaml"


def write_demo_repo(root: Path) -> list[Path]:
    """Write DEMO_FILES under `root` (no git init: the caller owns how the repo is made)."""
    written: list[Path] = []
    for rel, text in DEMO_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def bundled_playbook_text(name: str = DEMO_PLAYBOOK) -> str:
    return resources.files("corral.playbooks").joinpath(name).read_text(encoding="utf-8")


def bundled_playbook(name: str = DEMO_PLAYBOOK) -> Playbook:
    """A playbook shipped in `corral/playbooks/`, validated."""
    return Playbook.from_text(bundled_playbook_text(name), f"corral/playbooks/{name}")


DEMO_CONFIG = """\
[project]
name = "demo"
base_branch = "main"

[checks]
command = "python3 -m pytest -q"
"""


DEMO_GITIGNORE = "__pycache__/\n.pytest_cache/\n"


def demo_playbook_path() -> Path:
    return Path(str(resources.files("corral") / "playbooks" / DEMO_PLAYBOOK))


def create_demo_repo(target: Path, extra: dict[str, str] | None = None, config: str = DEMO_CONFIG) -> Path:
    """Write the sample files (and `extra`) and commit them on `main`; refuse a non-empty directory."""
    if target.exists() and any(target.iterdir()):
        raise WorkspaceError(f"{target}: exists and is not empty", hint="pass --dir with a new directory")
    target.mkdir(parents=True, exist_ok=True)
    files = {**DEMO_FILES, **(extra or {}), "corral.toml": config, ".gitignore": DEMO_GITIGNORE}
    for rel, text in files.items():
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
