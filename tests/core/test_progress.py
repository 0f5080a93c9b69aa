import io
import json

import pytest
from rich.console import Console

from corral.cli.progress import ProgressPrinter
from corral.events import GatewayDecision, RunCreated, ShellCommand, ToolCall

CREATED = RunCreated(
    task="t", repo="/r", base_commit="abcdef0123456", branch="corral/r1", config_hash="h",
    model="claude-sonnet-4-5-20250929", small_model="claude-haiku-4-5-20251001", dirty_paths=["a.py"],
)  # fmt: skip


def render(*events: object) -> str:
    buffer = io.StringIO()
    printer = ProgressPrinter(Console(file=buffer, width=200, no_color=True))
    for event in events:
        printer(event)  # type: ignore[arg-type]
    return buffer.getvalue()


def test_a_person_sees_the_dirty_tree_each_call_and_each_denial() -> None:
    text = render(
        CREATED,
        ToolCall(tool_name="Bash", tool_call_id="t1", input={"command": "pytest -q"}),
        ShellCommand(tool_call_id="t1", command="pytest -q", exit_code=1),
        GatewayDecision(
            token_id="k", tool_name="forge.merge_pull_request", allowed=False, reason="not granted"
        ),
    )
    assert "uncommitted changes are not included" in text and "a.py" in text
    assert "→ Bash pytest -q" in text and "exit 1" in text
    assert "gateway denied forge.merge_pull_request: not granted" in text


def test_json_mode_prints_one_event_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    printer = ProgressPrinter(Console(file=io.StringIO()), json_lines=True)
    printer(CREATED)
    printer(ToolCall(tool_name="Read", tool_call_id="t2", input={"file_path": "/w/a.py"}))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["kind"] for line in lines] == ["run.created", "tool.call"]
    assert lines[1]["gen_ai.tool.name"] == "Read"
