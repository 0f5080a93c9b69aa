"""The model upstream fails during a real run (real Claude Code in the real sandbox, the scripted model
behind a loopback upstream that fails on cue): a transient 429/529 is retried by Claude Code and the
run finishes; a persistent 429, 500 or 529 fails the run, naming the upstream and the status, after
the attempts `[agent] model_retries` allows; a stream that stalls is cut by the proxy. Every attempt
is in the audit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral.model.playbook import Playbook
from tests.e2e.conftest import RunResult, make_repo, run_task
from tests.faults.conftest import FaultyUpstream, assert_recorded, faulty_upstream

pytestmark = pytest.mark.docker

PLAYBOOK = """\
turns:
  - tool_use: [{name: Bash, input: {command: "echo fixed > {workspace}/out.txt"}}]
  - text: done
"""


def _run(tmp_path: Path, upstream: FaultyUpstream, agent: str, monkeypatch: pytest.MonkeyPatch) -> RunResult:
    repo = make_repo(tmp_path / "r", {"a.txt": "a\n"}, f"[agent]\n{agent}\n[checks]\ncommand = 'true'\n")
    with faulty_upstream(upstream, monkeypatch):
        return run_task(repo, "write out.txt", None)


def _attempts(result: RunResult) -> list[Any]:
    """The main thread's exchanges as the proxy recorded them (side requests carry no tools)."""
    ids = {r.exchange_id for r in result.of("model.request") if r.tools}
    return [r for r in result.of("model.response") if r.exchange_id in ids]


@pytest.mark.parametrize(("status", "error_type"), [(529, "overloaded_error"), (429, "rate_limit_error")])
def test_a_transient_failure_is_retried_and_the_run_finishes(
    agent_image: str,
    docker_client: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    error_type: str,
) -> None:
    upstream = FaultyUpstream(
        Playbook.from_text(PLAYBOOK, "p.yaml"),
        errors=[(status, error_type)] * 2,
        retry_after="1" if status == 429 else None,
    )
    result = _run(tmp_path, upstream, "model_retries = 3", monkeypatch)
    assert result.record.phase == "awaiting_approval", result.record.failure_reason
    assert "out.txt" in result.record.diffstat
    attempts = _attempts(result)
    # Two failed attempts, then the tool turn and the final text: each one an exchange on record.
    assert len(upstream.hits) == len(attempts) == 4
    assert [a.stop_reason for a in attempts] == ["error", "error", "tool_use", "end_turn"]
    assert all(error_type in a.text for a in attempts[:2])
    assert_recorded(result, docker_client)


@pytest.mark.parametrize(
    ("status", "error_type"), [(529, "overloaded_error"), (500, "api_error"), (429, "rate_limit_error")]
)
def test_a_persistent_failure_fails_the_run_naming_the_upstream_and_status(
    agent_image: str,
    docker_client: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    error_type: str,
) -> None:
    upstream = FaultyUpstream(
        Playbook.from_text(PLAYBOOK, "p.yaml"),
        always=(status, error_type),
        retry_after="1" if status == 429 else None,
    )
    result = _run(tmp_path, upstream, "model_retries = 2", monkeypatch)
    assert result.record.phase == "failed"
    assert result.record.failure_reason == (
        f"model upstream anthropic failed: {status} {error_type} after 3 attempts"
    )
    attempts = _attempts(result)
    assert len(upstream.hits) == len(attempts) == 3  # 1 + model_retries, and not one more
    assert all(a.stop_reason == "error" and error_type in a.text for a in attempts)
    assert not result.of("shell.command")
    assert_recorded(result, docker_client)


STALL = """\
turns:
  - tool_use: [{name: Bash, input: {command: "echo fixed > {workspace}/out.txt"}}]
  - text: "a long answer that never arrives whole"
"""
STALLED = "corral: model upstream anthropic stream stalled (no data for 2s)"


def test_a_stalled_stream_is_cut_and_claude_code_falls_back_to_an_unstreamed_request(
    agent_image: str, docker_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # message_start, ping and content_block_start arrive; then silence with the connection open.
    upstream = FaultyUpstream(Playbook.from_text(STALL, "p.yaml"), stall_after=3)
    result = _run(tmp_path, upstream, "model_stream_idle_seconds = 2", monkeypatch)
    assert result.record.phase == "awaiting_approval", result.record.failure_reason
    requests = [r for r in result.of("model.request") if r.tools]
    attempts = _attempts(result)
    assert len(attempts) == len(requests) == len(upstream.hits) == 4
    # Each turn: the stream cut by the proxy, then Claude Code's own fallback without streaming.
    assert [r.stream for r in requests] == [True, False, True, False]
    assert [a.stop_reason for a in attempts] == ["error", "tool_use", "error", "end_turn"]
    assert all(STALLED in a.text for a in attempts[::2])
    assert_recorded(result, docker_client)


def test_an_upstream_that_hangs_for_good_ends_the_run_in_bounded_time(
    agent_image: str, docker_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream = FaultyUpstream(Playbook.from_text(STALL, "p.yaml"), stall_after=3, hang_unstreamed=True)
    agent = "model_stream_idle_seconds = 2\ntimeout_seconds = 60"
    result = _run(tmp_path, upstream, agent, monkeypatch)
    assert result.record.phase == "failed"
    assert result.record.failure_reason == (
        "model upstream anthropic failed: stream stalled (no data for 2s) after 1 attempt; "
        "then the wall-clock limit of 60s was reached"
    )
    requests = [r for r in result.of("model.request") if r.tools]
    attempts = _attempts(result)
    # The hung unstreamed request is on record too, answered by nobody when the run was stopped.
    assert [r.stream for r in requests] == [True, False]
    assert [a.stop_reason for a in attempts] == ["error", "error"]
    assert STALLED in attempts[0].text
    assert_recorded(result, docker_client)
