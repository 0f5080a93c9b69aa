"""`corral regress schedule`: a Temporal Schedule, listed and removable, whose firing runs the
regression on a fleet host and leaves its report where a manual `corral regress` puts it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.fleet.client import blocking, connect
from corral.services import Services
from corral.settings import Settings
from corral.state.machine import Phase
from tests.fleet.conftest import Fleet, make_repo, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.temporal]

MODEL = "claude-sonnet-4-20250514"
CONFIG = '[project]\nname = "shop"\n[regress]\nmin_tasks = 1\n'


def _lost_task(repo: Path) -> None:
    """A decided task whose base commit is gone: the window skips it, with its reason, so the
    regression writes its report without starting a sandbox."""
    services = Services(Settings())
    try:
        state = services.state()
        state.ensure_project(name="shop", repo=str(repo), team="default", image="", config_snapshot={})
        gone = state.create_run("shop", "a task on a lost commit", str(repo), "f" * 40)
        state.transition(gone.run_id, Phase.FAILED, "old")
        state.record_approval(gone.run_id, "alice", "rejected")
    finally:
        services.close()


async def _fire(fleet: Fleet, sid: str) -> None:
    await (await connect(fleet.target)).get_schedule_handle(sid).trigger()


def test_a_scheduled_regression_runs_on_the_fleet(bare_fleet: Fleet, tmp_path: Path) -> None:
    fleet = bare_fleet
    repo = make_repo(tmp_path / "shop", {"README.md": "x\n"}, CONFIG)
    _lost_task(repo)
    fleet.start_worker("nightly", 1)
    fleet.wait_ready("nightly")

    made = fleet.corral(
        "regress", "schedule", "--candidate", MODEL, "--cron", "0 2 * * *", "--repo", str(repo), "--json"
    )
    assert made.returncode == 0, made.stderr
    sid = json.loads(made.stdout)["schedule_id"]
    again = fleet.corral(
        "regress", "schedule", "--candidate", MODEL, "--cron", "0 2 * * *", "--repo", str(repo)
    )
    assert again.returncode != 0 and "already scheduled" in again.stderr

    listed = json.loads(fleet.corral("regress", "schedules", "--json", "--repo", str(repo)).stdout)
    assert [(s["schedule_id"], s["candidate"], s["cron"]) for s in listed] == [(sid, MODEL, "0 2 * * *")]
    assert listed[0]["next_runs"] and "T02:00:00" in listed[0]["next_runs"][0]

    blocking(_fire(fleet, sid))
    reports = Settings().home / "regress"  # where a manual `corral regress` here writes it
    html = wait_for("the scheduled regression's report", lambda: sorted(reports.glob("*.html")), 180)
    assert "a task on a lost commit" in html[0].read_text() or "f" * 12 in html[0].read_text()

    removed = fleet.corral("regress", "unschedule", "--candidate", MODEL, "--repo", str(repo))
    assert removed.returncode == 0, removed.stderr
    assert json.loads(fleet.corral("regress", "schedules", "--json", "--repo", str(repo)).stdout) == []
    gone = fleet.corral("regress", "unschedule", "--candidate", MODEL, "--repo", str(repo))
    assert gone.returncode != 0 and "no scheduled regression" in gone.stderr
