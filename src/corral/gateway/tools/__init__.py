"""Built-in tools, served in-process as upstreams `forge` and `deploy`, so the embedded default is useful
with no upstream at all. Their effects bind to the caller's run (its repository and branch), which the
gateway knows from the verified token, never from the agent's arguments.

A tool whose arguments name an object (a pull request number, a deployment id) has a `scope`: the
gateway asks it, after the policy allows the call and before anything runs, whether that object
belongs to the caller's run. A refusal becomes an audited gateway denial (rule `run-scope`), exactly
like a policy denial. The handlers resolve the object through the same function again, so a tool
called without the gateway in front is bound to its run too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
    stage_requests: list[str] = field(default_factory=list)
    """Targets `deploy.stage` asked for; the run stages its committed SHA on them after the checks."""


Handler = Callable[[dict[str, Any], Caller, RunBinding], Any]
Scope = Callable[[dict[str, Any], RunBinding], str | None]
"""Why a call reaches past the caller's run (the refusal's reason), or None when it stays within it."""

RUN_SCOPE_RULE = "run-scope"


@dataclass(frozen=True)
class BuiltinTool:
    name: str
    description: str
    input_schema: dict[str, Any]
    access: Access
    handler: Handler
    scope: Scope | None = None

    def tool(self) -> types.Tool:
        return types.Tool(name=self.name, description=self.description, input_schema=self.input_schema)


def unbound(run: RunBinding, what: str) -> str | None:
    """The refusal for a token that is bound to no run's repository and branch (e.g. `gateway serve`)."""
    if run.repo is None or not run.head:
        return f"this token is bound to no run's repository and branch, so it reaches no {what}"
    return None


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

    def binding(self, run_id: str) -> RunBinding:
        """The run a token's calls act on; a token with no registered run is bound to nothing."""
        return self._bindings.get(run_id) or RunBinding(run_id=run_id)

    async def out_of_scope(self, tool: str, arguments: dict[str, Any], caller: Caller) -> str | None:
        """The reason `arguments` reach past the caller's run, or None (also for tools without a scope)."""
        spec = self._tools.get(tool)
        if spec is None or spec.scope is None:
            return None
        return await anyio.to_thread.run_sync(spec.scope, arguments, self.binding(caller.run_id))

    async def call(
        self, tool: str, arguments: dict[str, Any], caller: Caller, generation: int | None = None
    ) -> types.CallToolResult:
        spec = self._tools.get(tool)
        if spec is None:
            return error_result(f"{self.name} has no tool {tool!r}")
        binding = self.binding(caller.run_id)
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
