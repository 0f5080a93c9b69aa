"""A real `corral run` (the CLI, the scripted model, Claude Code in the real sandbox, the gateway)
exported as one OpenTelemetry trace to an OTLP/HTTP receiver on loopback; and the same run with the
collector down."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from corral.settings import Settings
from corral.telemetry.ids import run_root_span_id, run_trace_id
from tests.conftest import CANARY_KEY
from tests.e2e.conftest import make_repo, stored_run
from tests.telemetry.receiver import Span, otlp_receiver

pytestmark = pytest.mark.docker

MARKER = "HOSTILE-OUTPUT-7c1e"
PLAYBOOK = f"""\
turns:
  - tool_use: [{{name: Bash, input: {{command: "echo {MARKER} {CANARY_KEY}"}}}}]
  - tool_use: [{{name: Read, input: {{file_path: "{{workspace}}/a.py"}}}}]
  - tool_use: [{{name: Edit, input: {{file_path: "{{workspace}}/a.py", old_string: "x = 1",
                                     new_string: "x = 2"}}}}]
  - tool_use: [{{name: mcp__corral__forge_open_pull_request, input: {{title: "{MARKER}", body: "done"}}}}]
  - text: changed x
"""


def corral_run(
    repo: Path, playbook: Path, env: dict[str, str]
) -> tuple[str, subprocess.CompletedProcess[str]]:
    """`corral run --json`: one event per line (the first names the run), then a summary."""
    command = ["run", "set x to 2", "--repo", str(repo), "--playbook", str(playbook), "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "corral", *command],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, (proc.stderr, proc.stdout[-2000:])
    first = json.loads(proc.stdout.splitlines()[0])
    return str(first["run_id"]), proc


def _named(spans: list[Span], name: str) -> list[Span]:
    return [s for s in spans if s.name == name]


def _within(child: Span, parent: Span) -> bool:
    return parent.start <= child.start <= child.end <= parent.end


def test_a_corral_run_is_one_trace_of_phases_model_requests_and_tool_calls(
    agent_image: str, tmp_path: Path
) -> None:
    repo = make_repo(
        tmp_path / "r", {"a.py": "x = 1\n"}, "[project]\nteam = 'payments'\n[checks]\ncommand = 'true'\n"
    )
    playbook = tmp_path / "play.yaml"
    playbook.write_text(PLAYBOOK)
    with otlp_receiver() as rx:
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.url}
        run_id, _proc = corral_run(repo, playbook, otel)
        spans = rx.wait_for("corral.run")
        # The approval, another process later, joins the same trace.
        approve = [sys.executable, "-m", "corral", "approve", run_id, "--team", "payments"]
        env = {**os.environ, **otel, "CORRAL_USER": "reviewer@example.com"}
        done = subprocess.run(approve, capture_output=True, text=True, env=env, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        seen = {s.span_id for s in spans}
        later = [s for s in rx.wait_for("corral.command") if s.span_id not in seen]
        raw = b"".join(rx.bodies)
    record = stored_run(Settings(team="payments"), run_id)
    assert record.record.phase == "merged", record.record.failure_reason  # the run, then the approval

    [root] = _named(spans, "corral.run")
    assert (
        root.trace_id == f"{run_trace_id(run_id):032x}" and root.span_id == f"{run_root_span_id(run_id):016x}"
    )
    assert {s.trace_id for s in spans} == {root.trace_id}
    assert all(s.attrs["corral.run_id"] == run_id and s.attrs["corral.team"] == "payments" for s in spans)
    assert root.attrs["corral.run.phase"] == "awaiting_approval" and root.attrs["corral.pr.number"] == 1
    assert root.resource["service.name"] == "corral"
    by_id = {s.span_id: s for s in spans}
    assert all(s.parent_id in by_id for s in spans if s is not root)  # one connected tree
    assert all(_within(s, by_id[s.parent_id]) for s in spans if s is not root)

    # One span per working phase, in order, under the run.
    phases = [_named(spans, n)[0] for n in ("corral.prepare", "corral.agent", "corral.checks")]
    assert [p.parent_id for p in phases] == [root.span_id] * 3
    assert phases[0].end <= phases[1].start and phases[1].end <= phases[2].start
    prepare, agent, checks = phases
    [check] = _named(spans, "corral.check")
    assert check.parent_id == checks.span_id and check.attrs["corral.check.passed"] is True
    assert {s.attrs["corral.sandbox.purpose"] for s in spans if s.name.startswith("corral.sandbox")} == {
        "agent",
        "checks",
    }

    # Every model request of the run is a chat span under the agent, with its GenAI attributes, as the
    # audit recorded them.
    audit = [e for e in record.events if e.kind == "model.response" and e.operation == "chat"]
    chats = [s for s in spans if s.attrs.get("gen_ai.operation.name") == "chat"]
    assert len(chats) == len(audit) >= 5
    assert all(c.parent_id == agent.span_id and c.kind == 3 for c in chats)
    assert sorted(c.attrs["corral.exchange_id"] for c in chats) == sorted(e.exchange_id for e in audit)
    for chat in chats:
        assert chat.attrs["gen_ai.request.model"] in {record.record.model, record.record.small_model}
        assert chat.attrs["gen_ai.provider.name"] == "anthropic"
        assert isinstance(chat.attrs["gen_ai.usage.input_tokens"], int)

    # Each tool call Claude Code made is an execute_tool span, linked to the chat span that asked for it.
    tools = [s for s in spans if s.attrs.get("corral.reported_by") == "sandbox"]
    assert [t.attrs["gen_ai.tool.name"] for t in sorted(tools, key=lambda t: t.start)] == [
        "Bash",
        "Read",
        "Edit",
        "mcp__corral__forge_open_pull_request",
    ]
    chat_ids = {c.span_id for c in chats}
    for tool in tools:
        assert tool.parent_id == agent.span_id and len(tool.links) == 1 and tool.links[0] in chat_ids
        assert by_id[tool.links[0]].end <= tool.start
        assert tool.status != 2
    [bash] = [t for t in tools if t.attrs["gen_ai.tool.name"] == "Bash"]
    assert bash.attrs["corral.shell.exit_code"] == 0

    # The gateway's own view of the MCP call hangs under Claude Code's call of it.
    [mcp] = [t for t in tools if t.attrs["gen_ai.tool.name"].startswith("mcp__")]
    [gateway] = [s for s in spans if s.attrs.get("corral.reported_by") == "gateway"]
    assert gateway.name == "execute_tool forge.open_pull_request" and gateway.parent_id == mcp.span_id
    assert gateway.attrs["corral.gateway.allowed"] is True and gateway.attrs["corral.gateway.outcome"] == "ok"

    [command] = _named(later, "corral.command")
    assert command.trace_id == root.trace_id and command.parent_id == root.span_id
    [merge] = _named(later, "corral.merge")
    assert merge.parent_id == command.span_id and "merge.made" in [name for name, _ in merge.events]
    assert ("approval.granted", "human:reviewer@example.com") in [
        (name, attrs.get("corral.actor")) for s in later for name, attrs in s.events
    ]

    # Nothing the agent wrote, and no secret, is in what left for the collector.
    assert CANARY_KEY.encode() not in raw
    assert MARKER.encode() not in raw
    assert prepare.start >= root.start


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_with_the_collector_down_the_run_goes_on_and_says_so_once(agent_image: str, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"a.py": "x = 1\n"}, "[checks]\ncommand = 'true'\n")
    playbook = tmp_path / "play.yaml"
    playbook.write_text(PLAYBOOK)
    env: dict[str, Any] = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{_closed_port()}",
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # exports (and fails) while the run is under way, not only at exit
    }
    run_id, proc = corral_run(repo, playbook, env)
    record = stored_run(Settings(), run_id)
    assert record.record.phase == "awaiting_approval", record.record.failure_reason
    assert record.of("pr.opened") and record.of("check.result")[0].passed
    assert proc.stderr.count("OpenTelemetry export to http://127.0.0.1:") == 1, proc.stderr
