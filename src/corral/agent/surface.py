"""The tool surface a run's agent sees, as one hash a model pin can hold.

It covers the tool names Claude Code reports at init (its built-ins and the MCP tools it was given)
and each granted gateway tool with its schema hash (name, description and input schema, as the
gateway validated its policy against). A CLI upgrade that adds, drops or renames a tool, or an
upstream that changes a schema, changes the hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ToolSurface:
    claude_code_version: str
    tools: tuple[str, ...]
    gateway_tools: tuple[str, ...]
    """`qualified@schema_hash` of each gateway tool the run's token may call."""

    @property
    def hash(self) -> str:
        doc = {"tools": sorted(self.tools), "gateway": sorted(self.gateway_tools)}
        return hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()[:32]

    @classmethod
    def from_init(cls, data: dict[str, Any], gateway_tools: Iterable[str]) -> ToolSurface:
        """From Claude Code's `system/init` message data."""
        raw = data.get("tools")
        tools = tuple(sorted(str(t) for t in raw)) if isinstance(raw, list) else ()
        return cls(str(data.get("claude_code_version", "")), tools, tuple(sorted(gateway_tools)))
