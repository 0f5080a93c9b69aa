"""Scale-out: six runs over three `corral worker` hosts; one host dies mid-run (SIGKILL) and its run
finishes on another, exactly once (one commit, one pull request, the retry in the audit); after gc no
container is left."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from corral.fleet.decisions import FleetDecisions
from corral.forge.local import LocalForge
from corral.runs import RunOrchestrator, RunRequest
from corral.sandbox import RUN_LABEL
from corral.services import Services
from corral.settings import Settings
from corral.state.machine import Phase
from tests.fleet.conftest import CONFIG, Fleet, audit_events, make_repo, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.temporal]

HOSTS = ("h1", "h2", "h3")
MAX_RUNS = 2

# Long enough in the agent phase for a host to be killed in the middle of it.
SLOW_PLAYBOOK = """
turns:
  - tool_use:
      - {name: Bash, input: {command: "sleep 3", description: "think"}}
  - tool_use:
      - {name: Write, input: {file_path: "{workspace}/note.txt", content: "hello\\n"}}
  - text: Wrote the note.
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _spans(events: list[Any]) -> list[tuple[str, datetime, datetime]]:
    """(host, start, end) of each attempt of a run, from its audit: an attempt ends where the next
    begins, or at the run's last event."""
    attempts = [e for e in events if e.kind == "run.attempt"]
    ends = [*(a.ts for a in attempts[1:]), events[-1].ts]
    return [(a.host_id, a.ts, end) for a, end in zip(attempts, ends, strict=True)]


def _max_overlap(spans: list[tuple[datetime, datetime]]) -> int:
    points = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda p: (p[0], p[1]))
    best = now = 0
    for _, delta in points:
        now += delta
        best = max(best, now)
    return best


def test_runs_spread_and_survive_a_dead_host(fleet: Fleet, tmp_path: Path, docker_client: Any) -> None:
    for host in HOSTS:
        fleet.start_worker(host, MAX_RUNS)
    fleet.wait_ready(*HOSTS)
    repo = make_repo(tmp_path / "repo", {"README.md": "# fleet\n"}, CONFIG)
    playbook = tmp_path / "slow.yaml"
    playbook.write_text(SLOW_PLAYBOOK)
    settings = Settings()
    services = Services(settings)
    try:
        run_ids = [
            RunOrchestrator(services).submit(
                RunRequest(task=f"write note {i}", repo=repo, playbook=playbook, requester="alice")
            )
            for i in range(6)
        ]
        state = services.state()

        def running_on_a_host() -> tuple[str, str] | None:
            for run_id in run_ids:
                run = state.get_run(run_id)
                if run.phase == Phase.RUNNING and run.started_at is not None and run.meta.get("host"):
                    return run_id, str(run.meta["host"])
            return None

        victim_run, victim = wait_for("a run in its agent phase", running_on_a_host)
        fleet.workers[victim].kill()

        def all_resting() -> bool:
            if not all(state.get_run(r).phase in (Phase.AWAITING_APPROVAL, Phase.FAILED) for r in run_ids):
                return False
            # The phase is recorded before the host gives everything back and closes the chain.
            return all(any(e.kind == "run.finished" for e in audit_events(r)) for r in run_ids)

        wait_for("every run to rest", all_resting, timeout=420, every=0.5)
        records = {r: state.get_run(r) for r in run_ids}
        phases = {r: rec.phase for r, rec in records.items()}
        assert phases == dict.fromkeys(run_ids, Phase.AWAITING_APPROVAL), (
            {r: rec.failure_reason for r, rec in records.items()},
            fleet.logs(),
        )

        # Spread within capacity: every host took runs, none more than --max-runs at once.
        events = {r: audit_events(r) for r in run_ids}
        spans = [span for r in run_ids for span in _spans(events[r])]
        assert {host for host, _, _ in spans} == set(HOSTS)
        for host in HOSTS:
            assert _max_overlap([(s, e) for h, s, e in spans if h == host]) <= MAX_RUNS

        # The dead host's run: retried from a clean start on another host, finished exactly once.
        attempts = [e for e in events[victim_run] if e.kind == "run.attempt"]
        assert [a.attempt for a in attempts] == [1, 2]
        assert attempts[0].host_id == victim and attempts[1].host_id != victim
        assert attempts[1].previous_host == victim and victim in attempts[1].reason
        assert attempts[1].workflow_id == victim_run and attempts[1].workflow_run_id
        assert records[victim_run].meta["host"] == attempts[1].host_id
        branch = records[victim_run].branch
        base = records[victim_run].base_commit
        assert _git(repo, "rev-list", "--count", f"{base}..{branch}").strip() == "1"
        assert len([e for e in events[victim_run] if e.kind == "commit.made"]) == 1
        pulls = [pr for pr in LocalForge(Path(fleet.env["CORRAL_FORGE_DIR"])).list(repo) if pr.head == branch]
        assert len(pulls) == 1
        for run_id in run_ids:
            assert [e.kind for e in events[run_id]].count("run.finished") == 1
            assert [e.kind for e in events[run_id]][:2] == ["run.created", "run.submitted"]

        # `corral workers`: the two live hosts with their capacity; the dead one is lost. A host
        # publishes its status every 2 s, so the listing may still show a run the host has just let go
        # of: wait for the hosts to report their load gone (a claim that leaked would never go).
        def listing() -> dict[str, Any] | None:
            listed = fleet.corral("workers", "--json")
            assert listed.returncode == 0, listed.stderr
            rows = {row["host_id"]: row for row in json.loads(listed.stdout)}
            return rows if all(rows[h]["load"] == 0 for h in set(HOSTS) - {victim}) else None

        rows = wait_for("the live hosts to report no runs held", listing, timeout=30)
        assert rows[victim]["state"] == "lost"
        for host in set(HOSTS) - {victim}:
            assert rows[host]["capacity"] == MAX_RUNS and rows[host]["state"] == "ready"
            assert rows[host]["docker"] is True and rows[host]["load"] == 0

        # A decision the run's workflow is not waiting for is refused; the one it waits for is not.
        decisions = FleetDecisions(services, fleet.target, records[victim_run])
        with pytest.raises(Exception, match="not waiting for promotion: its workflow waits for approval"):
            decisions.require_waiting("promotion")
        decisions.require_waiting("approval")
    finally:
        services.close()

    # The live hosts drain and stop; gc on the dead host reaps what it left; no container remains.
    for host in set(HOSTS) - {victim}:
        assert fleet.workers[host].stop() == 0, fleet.logs()
    gc = fleet.corral("gc", "--json", home=fleet.workers[victim].home)
    assert gc.returncode == 0, gc.stderr
    for run_id in run_ids:
        assert docker_client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"}) == []
    verify = [fleet.corral("audit", "verify", r) for r in run_ids]
    assert all(v.returncode == 0 for v in verify), [v.stdout + v.stderr for v in verify]
