"""The host's decision on one tool call, shared by every way Claude Code reaches the host.

A headless run calls it from the SDK's hook callbacks (`corral.agent.claude`); an interactive session
calls it from the hook socket that the in-sandbox forwarder talks to (`corral.shell.hooks`). Both get
the same durable audit before the tool runs and the same path policy, so a shell session is decided
exactly as a run is.
"""

from __future__ import annotations

import threading
from typing import Any

from corral.agent.hook_events import EDIT_TOOLS, result_events
from corral.agent.policy import Decision, PathPolicy
from corral.audit import EventSink
from corral.events import ToolCall, ToolDenied


def deny_output(event_name: str, reason: str) -> dict[str, Any]:
    """Claude Code's hook answer that refuses the call, with the reason it shows the model and human."""
    return {
        "hookSpecificOutput": {
            "hookEventName": event_name,
            "permissionDecision": "deny",
            "permissionDecisionReason": f"corral: {reason}",
        }
    }


class ToolHooks:
    """PreToolUse and PostToolUse as the host sees them: audit first, then the policy's decision."""

    def __init__(self, sink: EventSink, policy: PathPolicy) -> None:
        self.sink = sink
        self.policy = policy
        self._lock = threading.Lock()
        self._hooked: set[str] = set()

    def was_hooked(self, call_id: str) -> bool:
        """Whether PreToolUse saw this call; a refused call it never saw was stopped by Claude Code."""
        with self._lock:
            return call_id in self._hooked

    def pre_tool_use(self, name: str, tool_input: dict[str, Any], call_id: str) -> Decision:
        with self._lock:
            self._hooked.add(call_id)
        # Durable before the tool runs: if this raises, the caller must block the call.
        self.sink.emit(ToolCall(tool_name=name, tool_call_id=call_id, input=tool_input), durable=True)
        decision = self.policy.decide(name, tool_input)
        if not decision.allowed:
            self.sink.emit(
                ToolDenied(tool_name=name, tool_call_id=call_id, rule=decision.rule, reason=decision.reason),
                durable=True,
            )
        return decision

    def post_tool_use(
        self, name: str, tool_input: dict[str, Any], call_id: str, response: Any, error: str | None
    ) -> None:
        rel_path = self.policy.relative(str(tool_input.get("file_path", ""))) if name in EDIT_TOOLS else None
        for event in result_events(
            name, tool_input, call_id, response=response, error=error, rel_path=rel_path
        ):
            self.sink.emit(event)
