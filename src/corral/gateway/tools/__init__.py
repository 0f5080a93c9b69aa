"""Built-in tools, served in-process as upstreams `forge` and `deploy`, so the embedded default is useful
with no upstream at all. Their effects bind to the caller's run (its repository and branch), which the
gateway knows from the verified token, never from the agent's arguments.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import mcp_types as types

from corral.audit import EventSink
from corral.errors import CorralError
from corral.gateway.config import Access
from corral.gateway.upstreams import Caller


@dataclass(frozen=True)
class RunBinding:
    """What a run's built-in tool calls act on."""

    run_id: str
    repo: Path | None = None
    head: str = ""
    base: str = "main"
    sink: EventSink | None = None


Handler = Callable[[dict[str, Any], Caller, RunBinding], Any]


@dataclass(frozen=True)
class BuiltinTool:
    name: str
    description: str
    input_schema: dict[str, Any]
    access: Access
    handler: Handler

    def tool(self) -> types.Tool:
        return types.Tool(name=self.name, description=self.description, input_schema=self.input_schema)


def obj(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


class BuiltinUpstream:
    """An in-process upstream; handlers run in a worker thread (the local stores take file locks)."""

    def __init__(self, name: str, tools: list[BuiltinTool], bindings: Mapping[str, RunBinding]) -> None:
        self.name = name
        self.generation = 1
        self._tools = {t.name: t for t in tools}
        self._bindings = bindings

    def tools(self) -> list[types.Tool]:
        return [t.tool() for t in self._tools.values()]

    def access(self) -> dict[str, Access]:
        return {f"{self.name}.{t.name}": t.access for t in self._tools.values()}

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def ready(self) -> None:
        return None

    async def call(
        self, tool: str, arguments: dict[str, Any], caller: Caller, generation: int | None = None
    ) -> types.CallToolResult:
        spec = self._tools.get(tool)
        if spec is None:
            return error_result(f"{self.name} has no tool {tool!r}")
        binding = self._bindings.get(caller.run_id) or RunBinding(run_id=caller.run_id)
        missing = [r for r in spec.input_schema.get("required", []) if r not in arguments]
        unknown = [a for a in arguments if a not in spec.input_schema["properties"]]
        if missing or unknown:
            return error_result(
                f"{self.name}.{tool}: missing {missing or 'nothing'}, unknown {unknown or 'nothing'}"
            )
        try:
            payload = await anyio.to_thread.run_sync(spec.handler, arguments, caller, binding)
        except CorralError as exc:
            return error_result(str(exc))
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=json.dumps(payload, default=str))],
            structured_content=payload if isinstance(payload, dict) else {"result": payload},
        )


def error_result(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)
