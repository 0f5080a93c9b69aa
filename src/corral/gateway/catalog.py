"""The gateway's tool catalog: every upstream tool under `<upstream>.<tool>`, with its schema hash and class.

Over MCP the same tool is exposed as `<upstream>_<tool>` (Claude Code then calls it
`mcp__corral__<upstream>_<tool>`); upstream names hold no `_`, so the mapping is unambiguous.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import mcp_types as types
import rfc8785

from corral.gateway.config import Access

NEVER_GRANTABLE_TO_AGENTS = frozenset({"forge.merge_pull_request", "deploy.promote"})
"""Exist as tools, but only a human principal's token may hold them (DESIGN.md invariant 6)."""


def exposed_name(qualified: str) -> str:
    upstream, _, tool = qualified.partition(".")
    return f"{upstream}_{tool}"


def claude_code_name(qualified: str, server: str = "corral") -> str:
    return f"mcp__{server}__{exposed_name(qualified)}"


def schema_hash(tool: types.Tool) -> str:
    """What the policy was validated against: name, description and input schema (a changed description
    can carry new instructions to the model, so it counts as a change too)."""
    doc = {"name": tool.name, "description": tool.description or "", "inputSchema": tool.input_schema}
    return hashlib.sha256(rfc8785.dumps(cast(Any, doc))).hexdigest()[:16]


@dataclass(frozen=True)
class ToolEntry:
    qualified: str
    upstream: str
    name: str
    tool: types.Tool
    schema_hash: str
    access: Access

    @property
    def exposed(self) -> str:
        return exposed_name(self.qualified)

    @property
    def properties(self) -> Mapping[str, Any]:
        props = self.tool.input_schema.get("properties", {})
        return props if isinstance(props, dict) else {}

    @property
    def required(self) -> list[str]:
        req = self.tool.input_schema.get("required", [])
        return [str(r) for r in req] if isinstance(req, list) else []

    def listed(self) -> types.Tool:
        """The tool as a token's tools/list shows it: renamed, hints kept only as upstream's claims."""
        return self.tool.model_copy(update={"name": self.exposed})


class Catalog:
    def __init__(self, entries: Iterable[ToolEntry]) -> None:
        self.entries: dict[str, ToolEntry] = {e.qualified: e for e in entries}
        self.by_exposed: dict[str, ToolEntry] = {e.exposed: e for e in self.entries.values()}

    @classmethod
    def build(
        cls,
        tools_by_upstream: Mapping[str, list[types.Tool]],
        annotations: Mapping[str, Access],
        builtin_access: Mapping[str, Access],
    ) -> Catalog:
        entries = []
        for upstream, tools in tools_by_upstream.items():
            for tool in tools:
                qualified = f"{upstream}.{tool.name}"
                # Unlisted tools are 'write': an upstream's readOnlyHint is its own claim, not the operator's.
                access = annotations.get(qualified) or builtin_access.get(qualified) or "write"
                entries.append(ToolEntry(qualified, upstream, tool.name, tool, schema_hash(tool), access))
        return cls(entries)

    def get(self, qualified: str) -> ToolEntry | None:
        return self.entries.get(qualified)
