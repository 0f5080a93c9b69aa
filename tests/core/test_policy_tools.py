"""The hook's path policy for every read and write tool: sibling prefixes, relative and notebook paths.

Claude Code names a file with `file_path` (Read, Edit, Write, MultiEdit), `path` (Grep, Glob, LS) or
`notebook_path` (NotebookRead, NotebookEdit), absolute or relative to the working directory. Each tool
is decided through the key it really uses, so a tool that slips out of its class is caught.
"""

from __future__ import annotations

import pytest

from corral.agent.policy import PathPolicy

POLICY = PathPolicy("/workspace", ("billing/**", "docs/frozen.md"), ("secrets/**", ".env", "notes/*.ipynb"))

WRITES = {
    "Edit": "file_path",
    "Write": "file_path",
    "MultiEdit": "file_path",
    "NotebookEdit": "notebook_path",
}
READS = {"Read": "file_path", "Grep": "path", "Glob": "path", "LS": "path", "NotebookRead": "notebook_path"}
EVERY = {**WRITES, **READS}


def decide(tool: str, path: str, key: str | None = None) -> tuple[bool, str, str]:
    d = POLICY.decide(tool, {key or EVERY[tool]: path})
    return d.allowed, d.rule, d.reason


@pytest.mark.parametrize("tool", list(EVERY))
@pytest.mark.parametrize(
    "path",
    [
        "/workspace/secrets/prod.key",
        "secrets/prod.key",
        "./secrets/prod.key",
        "/workspace/src/../.env",
        ".env",
    ],
)
def test_hidden_paths_are_refused_to_every_read_and_write_tool(tool: str, path: str) -> None:
    allowed, rule, reason = decide(tool, path)
    assert allowed is False and rule == "hidden_paths"
    rel = "secrets/prod.key" if "secrets" in path else ".env"
    assert reason == f"{rel} is a hidden path in corral.toml"


@pytest.mark.parametrize("tool", list(EVERY))
def test_hidden_notebooks_are_refused_through_notebook_path(tool: str) -> None:
    allowed, rule, reason = decide(tool, "/workspace/notes/keys.ipynb", "notebook_path")
    assert (allowed, rule, reason) == (
        False,
        "hidden_paths",
        "notes/keys.ipynb is a hidden path in corral.toml",
    )


@pytest.mark.parametrize("tool", list(WRITES))
@pytest.mark.parametrize("path", ["/workspace/billing/rates.py", "billing/rates.py", "docs/frozen.md"])
def test_readonly_paths_are_refused_to_every_write_tool(tool: str, path: str) -> None:
    allowed, rule, reason = decide(tool, path)
    rel = path.removeprefix("/workspace/")
    assert (allowed, rule, reason) == (False, "readonly_paths", f"{rel} is a read-only path in corral.toml")


@pytest.mark.parametrize("tool", list(READS))
@pytest.mark.parametrize("path", ["/workspace/billing/rates.py", "billing/rates.py", "docs/frozen.md"])
def test_readonly_paths_stay_readable(tool: str, path: str) -> None:
    assert decide(tool, path) == (True, "", "")


@pytest.mark.parametrize("tool", list(WRITES))
@pytest.mark.parametrize(
    "path", ["/workspace-evil/x", "/workspacex", "/etc/passwd", "../outside.py", "/workspace/../etc/x"]
)
def test_writes_outside_the_workspace_are_refused_even_beside_it(tool: str, path: str) -> None:
    allowed, rule, reason = decide(tool, path)
    assert (allowed, rule) == (False, "workspace")
    assert reason == f"{path} is outside the workspace /workspace"


@pytest.mark.parametrize("tool", list(READS))
@pytest.mark.parametrize("path", ["/workspace-evil/secrets/prod.key", "/workspace-evil/.env", "/usr/lib"])
def test_reads_outside_the_workspace_are_left_to_the_mounts(tool: str, path: str) -> None:
    # A sibling directory's `secrets/` is not the workspace's: the hidden globs do not apply there.
    assert decide(tool, path) == (True, "", "")


@pytest.mark.parametrize("tool", list(EVERY))
@pytest.mark.parametrize("path", ["/workspace/calc/ops.py", "calc/ops.py", "/workspace/.envrc", "/workspace"])
def test_ordinary_paths_are_allowed_to_every_tool(tool: str, path: str) -> None:
    assert decide(tool, path) == (True, "", "")


@pytest.mark.parametrize("tool", ["Bash", "WebFetch", "TodoWrite", "Task"])
def test_tools_without_file_access_are_not_path_checked(tool: str) -> None:
    # Bash is confined by the mounts and the gateway, not by argument inspection.
    assert POLICY.decide(tool, {"file_path": "/workspace/.env", "path": "/workspace-evil/x"}).allowed is True


@pytest.mark.parametrize(
    "tool_input",
    [
        {"file_path": "/workspace/ok.py", "path": "/workspace/secrets/a"},
        {"path": "/usr/lib", "notebook_path": "/workspace/notes/keys.ipynb"},
        {"file_path": "/tmp/x", "notebook_path": "secrets/a.ipynb"},
    ],
)
def test_every_path_argument_is_checked_not_only_the_first(tool_input: dict[str, str]) -> None:
    decision = POLICY.decide("Read", tool_input)
    assert decision.allowed is False and decision.rule == "hidden_paths"


def test_non_string_path_arguments_are_ignored() -> None:
    assert POLICY.decide("Write", {"file_path": 7, "path": None}).allowed is True
    assert POLICY.decide("Write", {}).allowed is True


@pytest.mark.parametrize("workdir", ["/workspace", "/workspace/"])
def test_workspace_relative_form(workdir: str) -> None:
    policy = PathPolicy(workdir, (), ())
    assert policy.relative("/workspace/a/b.py") == "a/b.py"
    assert policy.relative("a/./b.py") == "a/b.py"
    assert policy.relative("a/../../b.py") is None
    assert policy.relative("/workspace-evil/x") is None
    assert policy.relative("/workspacex") is None
    assert policy.decide("Write", {"file_path": "/workspace-evil/x"}).rule == "workspace"
    assert policy.decide("Write", {"file_path": "/workspace/a.py"}).allowed is True


def test_the_workspace_root_itself_is_inside() -> None:
    assert POLICY.relative("/workspace") == ""
    assert POLICY.relative("/workspace/") == ""
    assert POLICY.decide("Write", {"file_path": "/workspace"}).allowed is True


@pytest.mark.parametrize("workdir", ["/srv/BOX", "/srv/BOX/", "/w"])
def test_any_workdir_name_is_its_own_prefix(workdir: str) -> None:
    root = workdir.rstrip("/")
    policy = PathPolicy(workdir, (), ("k",))
    assert policy.relative(f"{root}/k") == "k"
    assert policy.decide("Read", {"file_path": f"{root}/k"}).rule == "hidden_paths"
    assert policy.decide("Write", {"file_path": f"{root}-evil/k"}).rule == "workspace"
