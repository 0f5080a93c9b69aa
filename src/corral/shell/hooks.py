"""The host's hook endpoint for an interactive session: one unix socket in the run's socket directory.

The in-sandbox forwarder (`corral/shell/forward.sh`) sends each hook's JSON here and replays the answer.
Tool calls are decided by `ToolHooks`, the same code a headless run's SDK hooks call, with the same
durable audit before the tool runs; every prompt the human types becomes a `human.prompt` event. An
error while auditing is answered with exit code 2, so the call is blocked: fail closed.
"""

from __future__ import annotations

import json
import os
import socketserver
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.agent.tool_hooks import ToolHooks, deny_output
from corral.audit import EventSink
from corral.errors import ServeError
from corral.events import HumanPrompt

_LIMIT = 8 * 1024 * 1024


@dataclass(frozen=True)
class HookAnswer:
    exit: int
    stdout: str = ""
    stderr: str = ""

    def encode(self) -> bytes:
        """The forwarder's wire form: the exit code's one digit, then stdout (0) or stderr (2)."""
        if self.exit == 0:
            return b"0" + self.stdout.encode()
        return b"2" + self.stderr.rstrip("\n").encode()


def _allow() -> str:
    return json.dumps(
        {
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "allow",
                "permissionDecisionReason": "corral: allowed by the host policy",
            }
        }
    )


class SessionHooks:
    """What the host answers to each hook of one interactive session."""

    def __init__(self, hooks: ToolHooks, sink: EventSink, actor: str, allowed_tools: frozenset[str]) -> None:
        self.hooks = hooks
        self.sink = sink
        self.actor = actor
        self.allowed_tools = allowed_tools
        self.session_id = ""
        self.end_reason = ""
        self.prompts = 0

    def answer(self, data: dict[str, Any]) -> HookAnswer:
        event = str(data.get("hook_event_name", ""))
        if isinstance(data.get("session_id"), str) and data["session_id"]:
            self.session_id = data["session_id"]
        try:
            return self._answer(event, data)
        except Exception as exc:  # an audit that failed must not let the call through
            return HookAnswer(2, stderr=f"corral: {event} could not be recorded ({exc}); refused\n")

    def _answer(self, event: str, data: dict[str, Any]) -> HookAnswer:
        name = str(data.get("tool_name", ""))
        raw_input = data.get("tool_input")
        tool_input = dict(raw_input) if isinstance(raw_input, dict) else {}
        call_id = str(data.get("tool_use_id", ""))
        if event == "PreToolUse":
            decision = self.hooks.pre_tool_use(name, tool_input, call_id)
            if not decision.allowed:
                return HookAnswer(0, json.dumps(deny_output("PreToolUse", decision.reason)))
            # A tool a headless run offers runs without Claude Code's own prompt; any other tool is
            # left to Claude Code's permission prompt, which the human answers.
            return HookAnswer(0, _allow() if name in self.allowed_tools else "")
        if event in ("PostToolUse", "PostToolUseFailure"):
            error = data.get("error") if event == "PostToolUseFailure" else None
            self.hooks.post_tool_use(
                name, tool_input, call_id, data.get("tool_response"), None if error is None else str(error)
            )
            return HookAnswer(0)
        if event == "UserPromptSubmit":
            prompt = str(data.get("prompt", ""))
            self.sink.emit(
                HumanPrompt(prompt=prompt, session_id=self.session_id, actor=self.actor), durable=True
            )
            self.prompts += 1
            return HookAnswer(0)
        if event == "SessionEnd":
            self.end_reason = str(data.get("reason", ""))
        return HookAnswer(0)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        chunks: list[bytes] = []
        size = 0
        while size <= _LIMIT:
            chunk = self.request.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        try:
            data = json.loads(b"".join(chunks))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            answer = HookAnswer(2, stderr=f"corral: the hook input is not valid JSON ({exc}); refused\n")
        else:
            answer = self.server.session.answer(data)
        self.request.sendall(answer.encode())


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, session: SessionHooks) -> None:
        self.session = session
        super().__init__(path, _Handler)


class HookServer:
    """The hook socket of one session, served on a background thread until `stop`."""

    def __init__(self, session: SessionHooks, path: Path) -> None:
        self.session = session
        self.path = path
        path.unlink(missing_ok=True)
        try:
            self._server = _Server(str(path), session)
        except OSError as exc:
            raise ServeError(f"cannot serve the hook socket {path}: {exc}") from exc
        os.chmod(path, 0o666)  # the sandbox's uid connects to it
        self._thread = threading.Thread(target=self._server.serve_forever, name="corral-hooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop answering: from now on every hook fails, so every tool call is denied."""
        self._server.shutdown()
        self._server.server_close()
        self.path.unlink(missing_ok=True)
