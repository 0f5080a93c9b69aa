from corral.agent.hook_events import result_events
from corral.events import FileEdit, ShellCommand, ToolResult


def test_bash_success_is_a_shell_command_with_exit_zero() -> None:
    events = result_events(
        "Bash", {"command": "pytest -q"}, "t1", response={"stdout": "2 passed", "stderr": ""}
    )
    assert isinstance(events[0], ToolResult) and events[0].output == "2 passed"
    shell = events[1]
    assert isinstance(shell, ShellCommand)
    assert (shell.command, shell.exit_code) == ("pytest -q", 0)


def test_bash_failure_carries_the_exit_code_from_the_error() -> None:
    events = result_events("Bash", {"command": "false"}, "t2", error="Exit code 3\nboom")
    assert events[0].is_error  # type: ignore[union-attr]
    assert isinstance(events[1], ShellCommand) and events[1].exit_code == 3


def test_edit_becomes_a_unified_diff_of_the_whole_file() -> None:
    original = "def add(a, b):\n    return a - b\n"
    events = result_events(
        "Edit",
        {"file_path": "/workspace/calc/ops.py", "old_string": "return a - b", "new_string": "return a + b"},
        "t3",
        response={"originalFile": original},
        rel_path="calc/ops.py",
    )
    edit = events[1]
    assert isinstance(edit, FileEdit) and edit.path == "calc/ops.py"
    assert "--- a/calc/ops.py" in edit.diff
    assert "-    return a - b" in edit.diff and "+    return a + b" in edit.diff


def test_write_of_a_new_file_diffs_against_empty() -> None:
    events = result_events(
        "Write", {"file_path": "/workspace/n.txt", "content": "hi\n"}, "t4", response={}, rel_path="n.txt"
    )
    assert isinstance(events[1], FileEdit) and "+hi" in events[1].diff


def test_failed_edit_records_no_file_edit() -> None:
    events = result_events("Edit", {"file_path": "/workspace/a"}, "t5", error="String not found")
    assert [type(e) for e in events] == [ToolResult]


def test_a_reinterpreted_exit_is_recorded_as_unknown_not_zero() -> None:
    response = {"stdout": "", "stderr": "", "returnCodeInterpretation": "No matches found"}
    events = result_events("Bash", {"command": "grep x f"}, "t6", response=response)
    assert isinstance(events[1], ShellCommand) and events[1].exit_code is None
