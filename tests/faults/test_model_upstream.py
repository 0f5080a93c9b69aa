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
  - text: "a long answer that never arrives whole"
"""


def test_a_stalled_stream_is_cut_and_the_run_fails_in_bounded_time(
    agent_image: str, docker_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # message_start, ping and content_block_start arrive; then silence with the connection open.
    upstream = FaultyUpstream(Playbook.from_text(STALL, "p.yaml"), stall_after=3)
    result = _run(tmp_path, upstream, "model_retries = 1\nmodel_stream_idle_seconds = 2", monkeypatch)
    assert result.record.phase == "failed"
    reason = result.record.failure_reason
    stalled = "model upstream anthropic failed: stream stalled (no data for 2s) after "
    assert reason.startswith(stalled), reason
    attempts = _attempts(result)
    assert attempts and len(attempts) == len(upstream.hits) <= 2
    assert all(a.stop_reason == "error" and "stream stalled" in a.text for a in attempts)
    assert_recorded(result, docker_client)
