"""Playbooks: the scripted model's script, loaded from YAML and validated up front.

A playbook is a YAML mapping with a `turns` list. Each turn is either
`{tool_use: [{name: TOOL, input: {...}}, ...]}` or `{text: "..."}` (DESIGN.md § Contracts, Playbook).
Every error names the file, the turn index and what to do, because a bad playbook otherwise shows up
minutes later as a confused Claude Code session inside a container.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from corral.errors import PlaybookError

WORKSPACE_PLACEHOLDER = "{workspace}"

CLAUDE_CODE_TOOLS: frozenset[str] = frozenset(
    {
        "Bash",
        "Read",
        "Edit",
        "Write",
        "Glob",
        "Grep",
        "LS",
        "MultiEdit",
        "NotebookEdit",
        "TodoWrite",
        "WebFetch",
        "WebSearch",
        "Task",
        # Names Claude Code 2.1.332 actually offers in its `tools` list (Task is now Agent there).
        "Agent",
        "ListAgents",
        "ReportFindings",
        "ScheduleWakeup",
        "Skill",
        "ToolSearch",
        "Workflow",
    }
)
"""Built-in tool names a playbook may call. MCP tools are `mcp__<server>__<tool>`."""

REQUIRED_INPUTS: dict[str, tuple[str, ...]] = {
    "Bash": ("command",),
    "Read": ("file_path",),
    "Edit": ("file_path", "old_string", "new_string"),
    "MultiEdit": ("file_path", "edits"),
    "Write": ("file_path", "content"),
    "Glob": ("pattern",),
    "Grep": ("pattern",),
    "WebFetch": ("url", "prompt"),
    "WebSearch": ("query",),
    "TodoWrite": ("todos",),
}
"""Arguments Claude Code's schema requires. A playbook missing one fails here, at load, rather than as
a tool-validation error deep inside a sandboxed run."""

_MCP_TOOL = re.compile(r"^mcp__[A-Za-z0-9_-]+?__[A-Za-z0-9_.-]+$")
_TURN_KEYS = ("tool_use", "text")


def is_tool_name(name: str) -> bool:
    """True for a name Claude Code would put in a tool_use block."""
    return name in CLAUDE_CODE_TOOLS or _MCP_TOOL.match(name) is not None


class ToolCallSpec(BaseModel):
    """One tool_use block the scripted model will emit."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    input: dict[str, Any]


class ToolUseTurn(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    tool_use: tuple[ToolCallSpec, ...]


class TextTurn(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    text: str


Turn = ToolUseTurn | TextTurn


def _substitute(value: Any, workspace: str) -> Any:
    """Replace `{workspace}` in every string, recursively. Plain replace, not str.format: tool inputs
    routinely hold other braces (shell, JSON, Python) that must pass through untouched."""
    if isinstance(value, str):
        return value.replace(WORKSPACE_PLACEHOLDER, workspace)
    if isinstance(value, dict):
        return {_substitute(k, workspace): _substitute(v, workspace) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_substitute(v, workspace) for v in value]
    return value


class Playbook(BaseModel):
    """A validated playbook. `source` names where it came from, for error messages and the audit."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    turns: tuple[Turn, ...]
    source: str = "<playbook>"
    description: str = ""

    @classmethod
    def from_path(cls, path: str | Path) -> Playbook:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise PlaybookError(
                f"cannot read playbook {p}: {exc.strerror or exc}",
                hint="pass the path of an existing playbook YAML file",
            ) from exc
        return cls.from_text(text, str(p))

    @classmethod
    def from_text(cls, text: str, source: str = "<playbook>") -> Playbook:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PlaybookError(
                f"playbook {source} is not valid YAML: {exc}",
                hint="fix the YAML syntax; a playbook is a mapping with a `turns:` list",
            ) from exc
        return cls.from_data(data, source)

    @classmethod
    def from_data(cls, data: Any, source: str = "<playbook>") -> Playbook:
        if not isinstance(data, dict):
            raise PlaybookError(
                f"playbook {source} must be a YAML mapping with a `turns:` list, got {type(data).__name__}",
                hint="start the file with `turns:` followed by a list of turns",
            )
        unknown = sorted(str(k) for k in data if k not in ("turns", "description"))
        if unknown:
            raise PlaybookError(
                f"playbook {source}: unknown top-level key(s) {', '.join(unknown)}",
                hint="a playbook has only `turns:` (and an optional `description:`)",
            )
        raw_turns = data.get("turns")
        if not isinstance(raw_turns, list) or not raw_turns:
            raise PlaybookError(
                f"playbook {source}: `turns` must be a non-empty list",
                hint="add turns like `- tool_use: [{name: Bash, input: {command: ls}}]` or `- text: done`",
            )
        description = data.get("description", "")
        if not isinstance(description, str):
            raise PlaybookError(
                f"playbook {source}: `description` must be a string",
                hint="quote the description or remove it",
            )
        turns = tuple(_parse_turn(t, i, source) for i, t in enumerate(raw_turns))
        return cls(turns=turns, source=source, description=description)

    def for_workspace(self, workspace: str) -> Playbook:
        """This playbook with `{workspace}` replaced in every string."""
        turns: list[Turn] = []
        for turn in self.turns:
            if isinstance(turn, TextTurn):
                turns.append(TextTurn(text=_substitute(turn.text, workspace)))
            else:
                turns.append(
                    ToolUseTurn(
                        tool_use=tuple(
                            ToolCallSpec(name=c.name, input=_substitute(c.input, workspace))
                            for c in turn.tool_use
                        )
                    )
                )
        return Playbook(turns=tuple(turns), source=self.source, description=self.description)


def _parse_turn(raw: Any, index: int, source: str) -> Turn:
    where = f"playbook {source}, turn {index}"
    shape_hint = 'each turn is `{tool_use: [{name: TOOL, input: {...}}, ...]}` or `{text: "..."}`'
    if not isinstance(raw, dict):
        raise PlaybookError(f"{where}: a turn must be a mapping, got {type(raw).__name__}", hint=shape_hint)
    keys = set(raw)
    unknown = sorted(str(k) for k in keys - set(_TURN_KEYS))
    if unknown:
        raise PlaybookError(f"{where}: unknown key(s) {', '.join(unknown)}", hint=shape_hint)
    if len(keys) != 1:
        raise PlaybookError(f"{where}: a turn has exactly one of `tool_use` or `text`", hint=shape_hint)
    if "text" in raw:
        if not isinstance(raw["text"], str):
            raise PlaybookError(f"{where}: `text` must be a string", hint="quote the text")
        return TextTurn(text=raw["text"])
    items = raw["tool_use"]
    if not isinstance(items, list) or not items:
        raise PlaybookError(
            f"{where}: `tool_use` must be a non-empty list of {{name, input}} items", hint=shape_hint
        )
    return ToolUseTurn(tool_use=tuple(_parse_call(item, index, j, source) for j, item in enumerate(items)))


def _parse_call(raw: Any, index: int, item: int, source: str) -> ToolCallSpec:
    where = f"playbook {source}, turn {index}, tool_use item {item}"
    if not isinstance(raw, dict):
        raise PlaybookError(
            f"{where}: must be a mapping with `name` and `input`",
            hint='write it as `{name: Bash, input: {command: "ls"}}`',
        )
    unknown = sorted(str(k) for k in set(raw) - {"name", "input"})
    if unknown:
        raise PlaybookError(
            f"{where}: unknown key(s) {', '.join(unknown)}",
            hint="a tool_use item has only `name` and `input`",
        )
    if "name" not in raw or "input" not in raw:
        missing = [k for k in ("name", "input") if k not in raw]
        raise PlaybookError(
            f"{where}: missing {' and '.join(missing)}",
            hint="every tool_use item needs `name` (a Claude Code tool) and `input` (a mapping)",
        )
    name = raw["name"]
    if not isinstance(name, str) or not is_tool_name(name):
        raise PlaybookError(
            f"{where}: {name!r} is not a Claude Code tool name",
            hint=f"use one of {', '.join(sorted(CLAUDE_CODE_TOOLS))}, or mcp__<server>__<tool>",
        )
    if not isinstance(raw["input"], dict):
        raise PlaybookError(
            f"{where}: `input` of {name} must be a mapping, got {type(raw['input']).__name__}",
            hint='write the tool\'s arguments as a mapping, e.g. `input: {command: "ls"}`',
        )
    missing_args = [k for k in REQUIRED_INPUTS.get(name, ()) if k not in raw["input"]]
    if missing_args:
        raise PlaybookError(
            f"{where}: {name} input is missing {', '.join(missing_args)}",
            hint=f"{name} needs {', '.join(REQUIRED_INPUTS[name])} in its input",
        )
    bad_keys = [k for k in raw["input"] if not isinstance(k, str)]
    if bad_keys:
        raise PlaybookError(
            f"{where}: `input` of {name} has non-string key(s) {bad_keys!r}",
            hint="quote the argument names",
        )
    return ToolCallSpec(name=name, input=raw["input"])
