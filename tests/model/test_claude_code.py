"""The real Claude Code CLI (the one claude-agent-sdk bundles) against the proxy and scripted model.

These run on the host, not in a sandbox: they prove the wire contract (SSE grammar, ids, turn choice,
pinning, recording) with the actual client, which is what no fake can.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.demo import DEMO_FILES, bundled_playbook, write_demo_repo
from corral.model.playbook import Playbook
from corral.model.proxy import SCRIPTED_BASE_URL, ModelProxy, Upstream
from corral.model.request_filter import ALLOWED_BETAS, ALLOWED_KEYS, OUTPUT_CONFIG_KEYS
from corral.model.scripted import SUBAGENT_TEXT, scripted_app

from .conftest import PINNED, RUN_TOKEN, SMALL, RecordingSink, wait_for

TIMEOUT = 120


def claude_binary() -> Path:
    import claude_agent_sdk

    path = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
    if not path.is_file():
        pytest.fail(f"the bundled Claude Code CLI is missing at {path}: reinstall claude-agent-sdk")
    return path


@dataclass
class Session:
    workspace: Path
    home: Path
    bin_dir: Path
    sink: RecordingSink
    upstream_saw: list[dict[str, Any]] = field(default_factory=list)
    """Every request that reached the upstream, after the proxy: headers and parsed body."""

    def run(
        self,
        playbook: Playbook,
        *,
        model: str = PINNED,
        pinned: frozenset[str] = frozenset({PINNED, SMALL}),
        allowed: str = "Bash",
        unix_socket: Path | None = None,
    ) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
        app = recording(scripted_app(playbook, str(self.workspace)), self.upstream_saw)
        upstream = Upstream(SCRIPTED_BASE_URL, transport=httpx.ASGITransport(app=app), name="scripted")
        proxy = ModelProxy(RUN_TOKEN, pinned, upstream, self.sink)
        bridge: subprocess.Popen[bytes] | None = None
        if unix_socket is None:
            port = proxy.serve_tcp()
        else:
            # What the sandbox does: a socat bridge from a loopback port to the proxy's unix socket.
            proxy.serve_unix(unix_socket)
            port = free_port()
            bridge = subprocess.Popen(
                ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", f"UNIX-CONNECT:{unix_socket}"]
            )
            wait_for(lambda: port_open(port))
        # Built from nothing: no ANTHROPIC_* or other host variable reaches the CLI by inheritance.
        env = {
            "PATH": f"{self.bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}",
            "ANTHROPIC_API_KEY": RUN_TOKEN,
            "ANTHROPIC_SMALL_FAST_MODEL": SMALL,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": SMALL,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "1",
            # The fix keeps the file's size, and the edit lands within the same second as the first
            # pytest run: a cached .pyc from that run would still look fresh and hide the fix.
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        command = [
            str(claude_binary()), "-p", "do it", "--output-format", "stream-json", "--verbose",
            "--model", model, "--max-turns", "8", "--allowedTools", allowed,
        ]  # fmt: skip
        try:
            done = subprocess.run(
                command, env=env, cwd=self.workspace, capture_output=True, text=True, timeout=TIMEOUT
            )
        finally:
            if bridge is not None:
                bridge.terminate()
                bridge.wait(10)
            proxy.stop()
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        return done, lines


def recording(app: ASGIApp, saw: list[dict[str, Any]]) -> ASGIApp:
    """The scripted model, noting each request it is sent."""

    async def recorder(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        saw.append({"path": scope["path"], "headers": headers, "body": json.loads(body)})

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:  # after the body, what the client does next (a disconnect)
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await app(scope, replay, send)

    return recorder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def session(tmp_path: Path, sink: RecordingSink) -> Iterator[Session]:
    workspace, home, bin_dir = tmp_path / "ws", tmp_path / "home", tmp_path / "bin"
    for d in (workspace, home, bin_dir):
        d.mkdir()
    # The demo playbook calls `python3 -m pytest`: give it this venv's interpreter, which has pytest.
    (bin_dir / "python3").symlink_to(sys.executable)
    yield Session(workspace, home, bin_dir, sink)


def result_of(lines: list[dict[str, Any]]) -> dict[str, Any]:
    results = [line for line in lines if line.get("type") == "result"]
    assert results, f"no result line in Claude Code's output: {lines[-3:]}"
    return results[-1]


ECHO = Playbook.from_text(
    'turns:\n  - tool_use: [{name: Bash, input: {command: "echo hello > {workspace}/out.txt"}}]\n'
    "  - text: wrote it\n",
    "echo.yaml",
)


@pytest.mark.parametrize("transport", ["tcp", "unix+socat"])
def test_claude_code_runs_a_scripted_tool_call(session: Session, short_tmp: Path, transport: str) -> None:
    unix_socket = None
    if transport == "unix+socat":
        if shutil.which("socat") is None:
            pytest.skip("socat is not installed on this host (apt-get install socat)")
        unix_socket = short_tmp / "model.sock"
    done, lines = session.run(ECHO, unix_socket=unix_socket)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (session.workspace / "out.txt").read_text() == "hello\n"
    result = result_of(lines)
    assert result["is_error"] is False and result["result"] == "wrote it"

    requests, responses = session.sink.of("model.request"), session.sink.of("model.response")
    assert len(requests) == len(responses) == 2, [e.kind for e in session.sink.events]
    assert {r.request_model for r in requests} == {PINNED}
    assert all(r.tools > 0 and r.stream for r in requests)
    (call,) = responses[0].tool_uses
    assert (call.name, call.input) == ("Bash", {"command": f"echo hello > {session.workspace}/out.txt"})
    assert call.id.startswith("toolu_") and responses[0].stop_reason == "tool_use"
    # Claude Code's next request carries the tool result back: that is turn 1.
    assert call.id in requests[1].last_user
    assert responses[1].stop_reason == "end_turn" and responses[1].text == "wrote it"
    assert len({r.response_id for r in responses}) == 2
    assert session.sink.of("model.refused") == []


def test_claude_code_plays_the_demo_playbook(session: Session) -> None:
    write_demo_repo(session.workspace)
    done, lines = session.run(bundled_playbook(), allowed="Bash Read Edit")
    assert done.returncode == 0, done.stderr[-2000:]
    ops = (session.workspace / "calc/ops.py").read_text()
    assert ops == DEMO_FILES["calc/ops.py"].replace("return a - b", "return a + b")
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=session.workspace, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout

    responses = session.sink.of("model.response")
    calls = [t.name for r in responses for t in r.tool_uses]
    assert calls == ["Bash", "Read", "Edit", "Bash"]
    requests = session.sink.of("model.request")
    assert "tool_result error" in requests[1].last_user and "assert -1 == 5" in requests[1].last_user
    assert "2 passed" in requests[4].last_user, "the rerun passes after the fix"
    assert "passes" in result_of(lines)["result"]


def test_claude_code_unpinned_model_is_refused(session: Session) -> None:
    playbook = Playbook.from_text("turns: [{text: never}]", "never.yaml")
    done, lines = session.run(playbook, model=SMALL, pinned=frozenset({PINNED}))
    assert done.returncode != 0
    result = result_of(lines)
    assert result["is_error"] is True and "is not pinned for this run" in result["result"]
    refused = session.sink.of("model.refused")
    assert refused and {r.request_model for r in refused} == {SMALL}
    assert session.sink.of("model.request") == [] and session.sink.of("model.response") == []


def test_claude_code_subagent_does_not_replay_the_playbook(session: Session) -> None:
    playbook = Playbook.from_text(
        "turns:\n"
        "  - tool_use: [{name: Agent, input: {description: look, prompt: list the files, "
        "subagent_type: general-purpose}}]\n"
        "  - text: delegated\n",
        "agent.yaml",
    )
    done, lines = session.run(playbook, allowed="Bash Agent")
    assert result_of(lines)["is_error"] is False
    assert done.returncode == 0, done.stderr[-2000:]
    responses = session.sink.of("model.response")
    spawned = [t for r in responses for t in r.tool_uses if t.name == "Agent"]
    assert len(spawned) == 1, "the subagent must not replay turn 0 and spawn itself again"
    assert any(r.text == SUBAGENT_TEXT for r in responses)
    assert len(responses) < 10


# The smallest valid PNG: one transparent pixel.
PIXEL_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8ffff3f0005"
    "fe02fea7d605e90000000049454e44ae426082"
)


def test_claude_code_requests_pass_the_filter_as_sent(session: Session) -> None:
    """What Claude Code 2.1.332 really sends, recorded behind the proxy: its betas are exactly the
    allow-list, its keys are allowed, and its ToolSearch and image tool results go through."""
    (session.workspace / "pixel.png").write_bytes(PIXEL_PNG)
    playbook = Playbook.from_text(
        "turns:\n"
        "  - tool_use: [{name: Bash, input: {command: echo hi}}]\n"
        '  - tool_use: [{name: ToolSearch, input: {query: "select:WebFetch", max_results: 1}}]\n'
        "  - tool_use: [{name: Read, input: {file_path: '{workspace}/pixel.png'}}]\n"
        "  - text: done\n",
        "record.yaml",
    )
    done, lines = session.run(playbook, allowed="Bash ToolSearch Read")
    assert done.returncode == 0, done.stderr[-2000:]
    assert result_of(lines)["result"] == "done"
    assert session.sink.of("model.refused") == []
    assert all(r.dropped_betas == [] for r in session.sink.of("model.request"))
    saw = session.upstream_saw
    assert len(saw) == 4 and {r["path"] for r in saw} == {"/v1/messages"}
    sent_betas = {b for r in saw for b in r["headers"].get("anthropic-beta", "").split(",") if b}
    assert sent_betas == set(ALLOWED_BETAS), "the allow-list should be what this Claude Code sends"
    assert set().union(*(r["body"] for r in saw)) <= ALLOWED_KEYS
    blocks = [b for m in saw[-1]["body"]["messages"] for b in m["content"] if isinstance(b, dict)]
    inner = [
        i for b in blocks if b["type"] == "tool_result" for i in b.get("content") or [] if isinstance(i, dict)
    ]
    assert {"type": "tool_reference", "tool_name": "WebFetch"} in inner
    (image,) = [i for i in inner if i["type"] == "image"]
    assert image["source"]["type"] == "base64"


def test_claude_code_web_search_is_refused_at_the_proxy(session: Session) -> None:
    """Claude Code's WebSearch asks the API to run its server-side web_search tool: with our key, on
    the agent's query. The proxy refuses it; the agent sees a failed tool and the run goes on."""
    playbook = Playbook.from_text(
        'turns:\n  - tool_use: [{name: WebSearch, input: {query: "corral audit"}}]\n  - text: no search\n',
        "search.yaml",
    )
    done, lines = session.run(playbook, allowed="WebSearch")
    assert done.returncode == 0, done.stderr[-2000:]
    assert result_of(lines)["result"] == "no search"
    refused = session.sink.of("model.refused")
    assert refused and all("web_search_20250305 is a server tool" in r.reason for r in refused)
    assert all("type" not in t for r in session.upstream_saw for t in r["body"].get("tools", []))
    # The tool result Claude Code sent back on turn 1 carries the refusal.
    assert "server tool" in session.sink.of("model.request")[-1].last_user


def test_claude_code_asking_a_model_id_it_does_not_know_passes_the_filter(session: Session) -> None:
    """A `corral regress` candidate: a dated id this Claude Code has no table entry for. It then adds
    `output_config` (an effort level) to each request; the pin allows the id, and the filter lets the
    request through as it lets the pinned model's (docs/security.md, 'Model proxy')."""
    candidate = "claude-candidate-20260101"
    done, lines = session.run(ECHO, model=candidate, pinned=frozenset({candidate, SMALL}))
    assert done.returncode == 0, done.stderr[-2000:]
    assert result_of(lines)["result"] == "wrote it"
    assert session.sink.of("model.refused") == []
    saw = session.upstream_saw
    assert len(saw) == 2 and {r["body"]["model"] for r in saw} == {candidate}
    configs = [r["body"]["output_config"] for r in saw]
    assert all(set(c) <= OUTPUT_CONFIG_KEYS and isinstance(c["effort"], str) for c in configs), configs
    assert set().union(*(r["body"] for r in saw)) <= ALLOWED_KEYS
