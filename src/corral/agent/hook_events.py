"""Turn Claude Code hook inputs into typed audit events.

Bash calls become `shell.command` (with the exit code), Edit/Write/MultiEdit calls become `file.edit`
(with a unified diff), and every call is also a `tool.call` / `tool.result` pair.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from corral.events import Event, FileEdit, ShellCommand, ToolResult

_EXIT_CODE = re.compile(r"Exit code (\d+)")
EDIT_TOOLS = frozenset({"Edit", "Write", "MultiEdit"})


def response_text(tool_response: Any) -> str:
    """A readable text form of a tool response (strings as they are, structures as JSON)."""
    if isinstance(tool_response, str):
        return tool_response
    if isinstance(tool_response, dict) and "stdout" in tool_response:
        out = str(tool_response.get("stdout") or "")
        err = str(tool_response.get("stderr") or "")
        return out + (("\n" + err) if err else "")
    try:
        return json.dumps(tool_response, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(tool_response)


def _apply_edits(original: str, edits: list[dict[str, Any]]) -> str:
    text = original
    for edit in edits:
        old, new = str(edit.get("old_string", "")), str(edit.get("new_string", ""))
        text = text.replace(old, new) if edit.get("replace_all") else text.replace(old, new, 1)
    return text


def unified_diff(path: str, before: str, after: str) -> str:
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{path}", f"b/{path}"
    )
    return "".join(lines)


def edit_diff(tool_name: str, tool_input: dict[str, Any], tool_response: Any, rel_path: str) -> str:
    response = tool_response if isinstance(tool_response, dict) else {}
    original = response.get("originalFile")
    if tool_name == "Write":
        return unified_diff(
            rel_path, original if isinstance(original, str) else "", str(tool_input.get("content", ""))
        )
    edits = tool_input.get("edits") if tool_name == "MultiEdit" else [tool_input]
    edit_list = [e for e in (edits or []) if isinstance(e, dict)]
    if isinstance(original, str):
        return unified_diff(rel_path, original, _apply_edits(original, edit_list))
    # Without the original file, the diff of the replaced fragments still says what changed.
    return "".join(
        unified_diff(rel_path, str(e.get("old_string", "")), str(e.get("new_string", ""))) for e in edit_list
    )


def result_events(
    tool_name: str,
    tool_input: dict[str, Any],
    tool_use_id: str,
    *,
    response: Any = None,
    error: str | None = None,
    rel_path: str | None = None,
) -> list[Event]:
    """The events for one finished tool call: its result, plus a shell or edit event where it applies."""
    output = error if error is not None else response_text(response)
    events: list[Event] = [
        ToolResult(tool_name=tool_name, tool_call_id=tool_use_id, output=output, is_error=error is not None)
    ]
    if tool_name == "Bash":
        exit_code: int | None = 0
        if isinstance(response, dict) and response.get("returnCodeInterpretation"):
            # Claude Code reports some non-zero exits as success (grep's 1 is "no matches"), without
            # the number: record that the code is not known rather than a wrong 0.
            exit_code = None
        if error is not None:
            match = _EXIT_CODE.search(error)
            exit_code = int(match.group(1)) if match else 1
        events.append(
            ShellCommand(
                tool_call_id=tool_use_id,
                command=str(tool_input.get("command", "")),
                exit_code=exit_code,
                output=output,
            )
        )
    elif tool_name in EDIT_TOOLS and error is None:
        path = rel_path if rel_path is not None else str(tool_input.get("file_path", ""))
        events.append(
            FileEdit(
                tool_call_id=tool_use_id, path=path, diff=edit_diff(tool_name, tool_input, response, path)
            )
        )
    return events
