"""The timeline says who reported each event, and flags a tool call no model response asked for."""

from __future__ import annotations

import io

from rich.console import Console

from corral.audit.timeline import render, timeline
from corral.events import (
    AnyEvent,
    ModelResponse,
    ShellCommand,
    ToolCall,
    ToolUseBlock,
    event_payload,
    parse_event,
)


def _events() -> list[AnyEvent]:
    events: list[AnyEvent] = [
        ModelResponse(
            request_model="claude-sonnet-4-5-20250929",
            exchange_id="x1",
            tool_uses=[ToolUseBlock(id="toolu_asked", name="Bash", input={"command": "ls"})],
        ),
        ToolCall(tool_name="Bash", tool_call_id="toolu_asked", input={"command": "ls"}),
        ShellCommand(tool_call_id="toolu_asked", command="ls", exit_code=0),
        ToolCall(tool_name="Bash", tool_call_id="toolu_forged", input={"command": "never ran"}),
    ]
    for seq, event in enumerate(events):
        event.seq = seq
    return events


def test_hook_events_are_reported_by_the_sandbox_and_stored_so() -> None:
    call = ToolCall(tool_name="Bash", tool_call_id="t", input={})
    assert event_payload(call)["reported_by"] == "sandbox"
    # Events stored before the field existed all came from hooks, and read back as such.
    stored = event_payload(call)
    del stored["reported_by"]
    assert parse_event(stored).reported_by == "sandbox"  # type: ignore[union-attr]
    assert "reported_by" not in event_payload(
        ModelResponse(request_model="claude-sonnet-4-5-20250929", exchange_id="x")
    )


def test_a_tool_call_no_model_response_asked_for_is_flagged() -> None:
    entries = timeline(_events())
    assert [(e.kind, e.reported_by, e.model_issued) for e in entries] == [
        ("model.response", "host", None),
        ("tool.call", "sandbox", True),
        ("shell.command", "sandbox", None),
        ("tool.call", "sandbox", False),
    ]
    out = io.StringIO()
    render(entries, Console(file=out, width=300, color_system=None), details=False)
    lines = out.getvalue().splitlines()
    assert "sandbox says" not in lines[0] and "sandbox says" in lines[1]
    assert ["NOT ASKED FOR" in line for line in lines] == [False, False, False, True]


def test_a_partial_timeline_does_not_judge_calls() -> None:
    assert [e.model_issued for e in timeline(_events()[1:2], match_model=False)] == [None]
