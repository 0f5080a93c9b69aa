"""Replay's gateway: tools that are not read-only answer from the recording instead of acting.

A replay must not open a second pull request or stage a second deployment, and what those tools
returned is part of the recording: the k-th call of such a tool gets the k-th result it gave. Read-only
tools run for real, so a changed upstream still shows as a divergence.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import anyio.abc
from mcp import types

from corral.gateway.catalog import claude_code_name
from corral.gateway.server import Gateway
from corral.gateway.upstreams import Caller, Upstream


class RecordedUpstream:
    """Wraps one upstream: write tools pop their recorded result, the rest pass through."""

    def __init__(
        self, inner: Upstream, recorded: dict[str, deque[tuple[str, bool]]], writes: set[str]
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self._recorded = recorded
        self._writes = writes
        self.served = 0

    @property
    def generation(self) -> int:
        return self.inner.generation

    @generation.setter
    def generation(self, value: int) -> None:
        self.inner.generation = value

    def tools(self) -> list[types.Tool]:
        return self.inner.tools()

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        await self.inner.start(tg)

    async def ready(self) -> None:
        await self.inner.ready()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def call(
        self, tool: str, arguments: dict[str, Any], caller: Caller, generation: int | None = None
    ) -> types.CallToolResult:
        if tool not in self._writes:
            return await self.inner.call(tool, arguments, caller, generation)
        queue = self._recorded.get(tool)
        if not queue:
            text = f"corral replay: the recording has no result for another call of {tool}"
            return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)
        output, is_error = queue.popleft()
        self.served += 1
        return types.CallToolResult(content=[types.TextContent(type="text", text=output)], is_error=is_error)


def serve_recorded(gateway: Gateway, results: Iterable[tuple[str, str, bool]], server: str = "corral") -> int:
    """Wrap `gateway`'s upstreams so its non-read-only tools answer from `results` (Claude Code tool
    name, output, is_error, in recorded order). Returns how many tools answer from the recording."""
    by_cc_name: dict[str, deque[tuple[str, bool]]] = {}
    for name, output, is_error in results:
        by_cc_name.setdefault(name, deque()).append((output, is_error))
    wrapped = 0
    for upstream_name, upstream in list(gateway.upstreams.items()):
        writes: set[str] = set()
        recorded: dict[str, deque[tuple[str, bool]]] = {}
        for entry in gateway.catalog().entries.values():
            if entry.upstream != upstream_name or entry.access == "read":
                continue
            writes.add(entry.name)
            recorded[entry.name] = by_cc_name.get(claude_code_name(entry.qualified, server), deque())
        if writes:
            gateway.upstreams[upstream_name] = RecordedUpstream(upstream, recorded, writes)
            wrapped += len(writes)
    return wrapped
