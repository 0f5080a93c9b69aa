"""What `corral init` proposes for a repository: a `[sandbox.image]` recipe and a checks command.

It looks only at file names and, for pyproject.toml, at which optional-dependency groups exist;
nothing in the repository is run. Each ecosystem found adds its Debian packages, its input files
and its setup steps; the checks commands are joined with `&&`.
"""

from __future__ import annotations

import json
import textwrap
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

TEST_EXTRAS = ("test", "tests", "testing", "dev")
PYPROJECT_DEPS = (
    "mkdir -p /tmp/corral-cache && "
    'python3 -c \'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")).get("project", {}); '
    'extras = p.get("optional-dependencies", {}); '
    'print("\\n".join(p.get("dependencies", []) + [d for x in {extras} for d in extras.get(x, [])]))\''
    " > /tmp/corral-cache/requirements.txt && pip install -r /tmp/corral-cache/requirements.txt"
)


@dataclass
class Proposal:
    ecosystems: list[str] = field(default_factory=list)
    apt: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.ecosystems)

    @property
    def checks_command(self) -> str:
        return " && ".join(self.checks) or "pytest -q"

    def _add(self, ecosystem: str, apt: list[str], inputs: list[str], setup: list[str], checks: str) -> None:
        self.ecosystems.append(ecosystem)
        self.apt += [name for name in apt if name not in self.apt]
        self.inputs += [name for name in inputs if name not in self.inputs]
        self.setup += setup
        self.checks.append(checks)


def _pyproject_extras(path: Path) -> list[str]:
    try:
        project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    extras = project.get("optional-dependencies", {}) if isinstance(project, dict) else {}
    return [name for name in TEST_EXTRAS if isinstance(extras, dict) and name in extras]


def _python(repo: Path, proposal: Proposal) -> None:
    requirements = sorted(p.name for p in repo.glob("requirements*.txt") if p.is_file())
    pyproject = repo / "pyproject.toml"
    if not requirements and not pyproject.is_file():
        return
    setup = ["python3 -m venv --system-site-packages /opt/corral/venv"]
    if requirements:
        setup.append("pip install " + " ".join(f"-r {name}" for name in requirements))
    else:
        setup.append(PYPROJECT_DEPS.replace("{extras}", json.dumps(_pyproject_extras(pyproject))))
    inputs = (["pyproject.toml"] if pyproject.is_file() else []) + requirements
    proposal._add("python", ["python3-venv"], inputs, setup, "python3 -m pytest -q")
    proposal.notes.append(
        "python: dependencies go into /opt/corral/venv; the workspace itself is on its path "
        "(corral-workspace.pth), so the project is never installed into the image"
    )


def _node(repo: Path, proposal: Proposal) -> None:
    if not (repo / "package.json").is_file():
        return
    if (repo / "package-lock.json").is_file():
        proposal._add(
            "node", ["nodejs", "npm"], ["package.json", "package-lock.json"], ["npm ci"], "npm test"
        )
        proposal.notes.append("node: node_modules lives in /opt/corral/deps; /node_modules links to it")
    else:
        proposal.notes.append(
            "node: package.json has no package-lock.json, so no image is proposed for it: "
            "run `npm install --package-lock-only` and commit the lockfile, then `corral init --force`"
        )


def _go(repo: Path, proposal: Proposal) -> None:
    if not (repo / "go.mod").is_file():
        return
    inputs = ["go.mod"] + (["go.sum"] if (repo / "go.sum").is_file() else [])
    proposal._add("go", ["golang-go", "ca-certificates"], inputs, ["go mod download"], "go test ./...")
    proposal.notes.append("go: Debian bookworm's Go is 1.19; a go.mod asking for a newer toolchain fails")


def _rust(repo: Path, proposal: Proposal) -> None:
    if not (repo / "Cargo.toml").is_file():
        return
    inputs = ["Cargo.toml"] + (["Cargo.lock"] if (repo / "Cargo.lock").is_file() else [])
    proposal._add("rust", ["cargo"], inputs, ["cargo fetch"], "cargo test --offline")


def propose(repo: Path) -> Proposal:
    proposal = Proposal()
    for detector in (_python, _node, _go, _rust):
        detector(repo, proposal)
    return proposal


def _toml_string(item: str) -> str:
    # A TOML literal string keeps shell quoting readable; JSON's escapes are TOML's too.
    if ("\\" in item or '"' in item) and "'''" not in item and not item.endswith("'"):
        return f"'''{item}'''"
    return json.dumps(item)


def _toml_list(items: list[str]) -> str:
    one_line = "[" + ", ".join(_toml_string(item) for item in items) + "]"
    if len(one_line) <= 90:
        return one_line
    return "[\n" + "".join(f"  {_toml_string(item)},\n" for item in items) + "]"


def image_block(proposal: Proposal) -> str:
    """The commented `[sandbox.image]` table for corral.toml."""
    lines = [
        "",
        f"[sandbox.image]                   # proposed by `corral init` for {', '.join(proposal.ecosystems)}",
        "# Built FROM corral/agent by `corral image build` (or the first run); rebuilt when an input",
        "# changes.",
        "# apt runs as root before any repository file is copied in; setup steps run with network, as",
        "# uid 1000, in /opt/corral/deps holding the inputs. The sandbox itself never has network.",
        f"apt = {_toml_list(proposal.apt)}",
        f"inputs = {_toml_list(proposal.inputs)}",
        f"setup = {_toml_list(proposal.setup)}",
    ]
    lines += [
        line
        for note in proposal.notes
        for line in textwrap.wrap(note, 96, initial_indent="# ", subsequent_indent="#   ")
    ]
    return "\n".join(lines) + "\n"
