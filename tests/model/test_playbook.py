from __future__ import annotations

from pathlib import Path

import pytest

from corral.demo import DEMO_FILES, bundled_playbook, write_demo_repo
from corral.errors import PlaybookError
from corral.model.playbook import Playbook, TextTurn, ToolUseTurn, is_tool_name

GOOD = """
description: demo
turns:
  - tool_use:
      - name: Bash
        input: {command: "cd {workspace} && ls", nested: {list: ["{workspace}/a", 3, {k: "{workspace}"}]}}
      - name: mcp__corral__open_pull_request
        input: {title: "t {not_a_placeholder} ${HOME}"}
  - text: "done in {workspace}"
"""


def test_loads_typed_turns() -> None:
    pb = Playbook.from_text(GOOD, "good.yaml")
    assert pb.source == "good.yaml"
    assert pb.description == "demo"
    first, second = pb.turns
    assert isinstance(first, ToolUseTurn) and isinstance(second, TextTurn)
    assert [c.name for c in first.tool_use] == ["Bash", "mcp__corral__open_pull_request"]


def test_workspace_substituted_everywhere_and_nothing_else() -> None:
    pb = Playbook.from_text(GOOD, "good.yaml").for_workspace("/workspace")
    bash, mcp = pb.turns[0].tool_use  # type: ignore[union-attr]
    assert bash.input == {
        "command": "cd /workspace && ls",
        "nested": {"list": ["/workspace/a", 3, {"k": "/workspace"}]},
    }
    # Other braces pass through: inputs hold shell and JSON.
    assert mcp.input == {"title": "t {not_a_placeholder} ${HOME}"}
    assert pb.turns[1] == TextTurn(text="done in /workspace")


def test_from_path(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    assert len(Playbook.from_path(path).turns) == 2
    with pytest.raises(PlaybookError, match=r"cannot read playbook .*missing\.yaml"):
        Playbook.from_path(tmp_path / "missing.yaml")


BAD = [
    ("turns: [\n  - text: 'unclosed", "not valid YAML", None),
    ("- text: hi", "must be a YAML mapping", None),
    ("turns: []", "non-empty list", None),
    ("steps: []\nturns: [{text: a}]", "unknown top-level key", None),
    ("turns: [{text: a}, 5]", "a turn must be a mapping", 1),
    ("turns: [{text: a}, {say: hi}]", "unknown key.*say", 1),
    ("turns: [{text: a, tool_use: []}]", "exactly one of", 0),
    ("turns: [{tool_use: {name: Bash, input: {}}}]", "non-empty list", 0),
    ("turns: [{text: a}, {text: b}, {tool_use: [{input: {command: ls}}]}]", "missing name", 2),
    ("turns: [{tool_use: [{name: Bash}]}]", "missing input", 0),
    ("turns: [{tool_use: [{name: Bash, input: ls}]}]", "input.*must be a mapping", 0),
    ("turns: [{tool_use: [{name: Bash, input: [ls]}]}]", "input.*must be a mapping", 0),
    ("turns: [{tool_use: [{name: Shell, input: {}}]}]", "'Shell' is not a Claude Code tool", 0),
    ("turns: [{tool_use: [{name: mcp__corral, input: {}}]}]", "not a Claude Code tool", 0),
    ("turns: [{tool_use: [{name: Bash, input: {command: ls}, id: x}]}]", "unknown key.*id", 0),
    ("turns: [{tool_use: [Bash]}]", "must be a mapping with `name` and `input`", 0),
    ("turns: [{text: [a]}]", "`text` must be a string", 0),
    ("turns: [{text: a}, {tool_use: [{name: Bash, input: {cmd: ls}}]}]", "Bash input is missing command", 1),
    ("turns: [{tool_use: [{name: Edit, input: {file_path: /a, old_string: x}}]}]", "missing new_string", 0),
]


@pytest.mark.parametrize(("text", "message", "turn"), BAD)
def test_bad_playbooks_name_file_turn_and_fix(text: str, message: str, turn: int | None) -> None:
    with pytest.raises(PlaybookError) as info:
        Playbook.from_text(text, "bad.yaml")
    err = info.value
    assert "bad.yaml" in err.message
    assert err.hint, "every playbook error says what to do"
    if turn is not None:
        assert f"turn {turn}" in err.message
    import re

    assert re.search(message, err.message), err.message


def test_tool_names() -> None:
    for name in ("Bash", "Read", "Edit", "Write", "Glob", "Grep", "Task", "Agent", "mcp__gw__forge.comment"):
        assert is_tool_name(name), name
    for name in ("bash", "mcp__", "mcp__x", "mcp__x__", "Shell", ""):
        assert not is_tool_name(name), name


def test_demo_playbook_matches_demo_repo(tmp_path: Path) -> None:
    pb = bundled_playbook().for_workspace(str(tmp_path))
    names = [c.name for t in pb.turns if isinstance(t, ToolUseTurn) for c in t.tool_use]
    assert names == ["Bash", "Read", "Edit", "Bash"]
    edit = pb.turns[2].tool_use[0].input  # type: ignore[union-attr]
    # Claude Code's Edit needs old_string to occur exactly once in the file.
    assert DEMO_FILES["calc/ops.py"].count(edit["old_string"]) == 1
    assert edit["file_path"] == f"{tmp_path}/calc/ops.py"
    assert isinstance(pb.turns[-1], TextTurn)
    written = write_demo_repo(tmp_path)
    assert {p.relative_to(tmp_path).as_posix() for p in written} == set(DEMO_FILES)
    assert "return a - b" in (tmp_path / "calc/ops.py").read_text()
