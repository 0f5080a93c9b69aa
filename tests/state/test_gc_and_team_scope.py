"""`corral gc` judges runs by phase, and every command finds runs in one team by one rule.

Both run against SQLite and the real Postgres (the `state_url` fixture), through the library and
through the CLI runner, as a user would meet them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.audit.log import AuditLog
from corral.cli import app
from corral.events import RunFinished
from corral.gc import ORPHAN_REASON, collect
from corral.settings import Settings
from corral.state.db import StateStore
from corral.state.machine import Phase

WORKING = [Phase.QUEUED, Phase.PREPARING, Phase.RUNNING, Phase.CHECKING]
PATH_TO: dict[Phase, list[Phase]] = {
    Phase.QUEUED: [],
    Phase.PREPARING: [Phase.PREPARING],
    Phase.RUNNING: [Phase.PREPARING, Phase.RUNNING],
    Phase.CHECKING: [Phase.PREPARING, Phase.RUNNING, Phase.CHECKING],
    Phase.AWAITING_APPROVAL: [Phase.PREPARING, Phase.RUNNING, Phase.CHECKING, Phase.AWAITING_APPROVAL],
    Phase.MERGED: [
        Phase.PREPARING,
        Phase.RUNNING,
        Phase.CHECKING,
        Phase.AWAITING_APPROVAL,
        Phase.APPROVED,
        Phase.MERGED,
    ],
    Phase.REJECTED: [Phase.PREPARING, Phase.RUNNING, Phase.CHECKING, Phase.AWAITING_APPROVAL, Phase.REJECTED],
    Phase.FAILED: [Phase.PREPARING, Phase.FAILED],
}


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def make_run(store: StateStore, phase: Phase, pid: int, repo: str = "/nonexistent/shop") -> str:
    store.ensure_project("shop", repo=repo)
    run = store.create_run(project="shop", task=f"a run left at {phase}", repo=repo, base_commit="0" * 40)
    for step in PATH_TO[phase]:
        store.transition(run.run_id, step, "test" if step is Phase.FAILED else "")
    store.update_run(run.run_id, pid=pid)
    return run.run_id


def leftovers(settings: Settings, run_id: str) -> tuple[Path, Path, Path]:
    """What a run leaves on the host: its socket directory, wrapper script and worktree."""
    sockets = settings.run_socket_dir(run_id)
    sockets.mkdir(parents=True)
    wrapper = settings.sockets_dir / f"{run_id}.wrapper"
    wrapper.write_text("#!/bin/sh\n")
    worktree = settings.worktrees_dir / run_id
    worktree.mkdir(parents=True)
    return sockets, wrapper, worktree


def test_gc_fails_only_runs_that_lost_their_driver_mid_phase(
    open_store: Callable[[str], StateStore], settings: Settings
) -> None:
    store = open_store("team-gc")
    gone = dead_pid()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        orphaned = {phase: make_run(store, phase, gone) for phase in WORKING}
        driven = {phase: make_run(store, phase, alive.pid) for phase in WORKING}
        at_rest = {phase: make_run(store, phase, gone) for phase in (Phase.AWAITING_APPROVAL, Phase.MERGED)}
        ended = {phase: make_run(store, phase, gone) for phase in (Phase.REJECTED, Phase.FAILED)}
        files = {run_id: leftovers(settings, run_id) for group in (orphaned, driven, at_rest, ended)
                 for run_id in group.values()}  # fmt: skip
        other_team = make_run(open_store("team-other"), Phase.RUNNING, gone)
        other_files = leftovers(settings, other_team)

        with AuditLog.open(settings, allow_offline=True, background=False) as audit:
            report = collect(settings, store, None, audit)
            orphan_audit = {run_id: audit.read(run_id) for run_id in orphaned.values()}
            rest_audit = audit.rows(at_rest[Phase.AWAITING_APPROVAL])

        assert sorted(report.runs_failed) == sorted(orphaned.values())
        for phase, run_id in orphaned.items():
            record = store.get_run(run_id)
            assert (record.phase, record.failure_reason) == (Phase.FAILED, ORPHAN_REASON), phase
            finished = [e for e in orphan_audit[run_id] if isinstance(e, RunFinished)]
            assert [(e.phase, e.reason) for e in finished] == [("failed", ORPHAN_REASON)]
        for phase, run_id in {**driven, **at_rest, **ended}.items():
            assert store.get_run(run_id).phase == phase
        assert rest_audit == []  # gc wrote nothing into the waiting run's chain

        for run_id, paths in files.items():
            kept = run_id in driven.values()
            assert all(p.exists() == kept for p in paths), (store.get_run(run_id).phase, paths)
        assert all(p.exists() for p in other_files), "another team's run is not this gc's to judge"
        assert report.other_teams == 3
        assert store.get_run(at_rest[Phase.AWAITING_APPROVAL]).phase == Phase.AWAITING_APPROVAL
    finally:
        alive.kill()
        alive.wait()


def test_gc_keeps_the_branch_of_a_run_awaiting_approval(
    open_store: Callable[[str], StateStore], settings: Settings, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "base"], check=True)
    store = open_store("team-gc")
    run_id = make_run(store, Phase.AWAITING_APPROVAL, dead_pid(), repo=str(repo))
    worktree = settings.worktrees_dir / run_id
    subprocess.run([*git, "worktree", "add", "-q", "-b", f"corral/{run_id}", str(worktree)], check=True)

    report = collect(settings, store, None, None)

    assert report.runs_failed == [] and report.worktrees == [str(worktree)]
    assert not worktree.exists()
    branches = subprocess.run([*git, "branch", "--list", f"corral/{run_id}"], capture_output=True, text=True)
    assert branches.stdout.strip() == f"corral/{run_id}"


def test_gc_removes_a_dead_shell_sessions_managed_settings_but_not_a_live_ones(
    open_store: Callable[[str], StateStore], settings: Settings
) -> None:
    store = open_store("team-gc")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = make_run(store, Phase.RUNNING, dead_pid())
        live = make_run(store, Phase.RUNNING, alive.pid)
        for run_id in (dead, live):
            (settings.shell_files_dir / run_id).mkdir(parents=True)
            (settings.shell_files_dir / run_id / "managed-settings.json").write_text("{}")
        report = collect(settings, store, None, None)
    finally:
        alive.kill()
        alive.wait()
    assert report.runs_failed == [dead]
    assert str(settings.shell_files_dir / dead) in report.socket_dirs
    assert not (settings.shell_files_dir / dead).exists() and (settings.shell_files_dir / live).is_dir()


# ---- team scoping through the CLI -------------------------------------------------------------------


@pytest.fixture
def shop_repo(tmp_path: Path, state_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CORRAL_STATE_URL", state_url)
    monkeypatch.delenv("CORRAL_TEAM", raising=False)
    repo = tmp_path / "shop"
    (repo / "src").mkdir(parents=True)
    (repo / ".git").mkdir()  # where the repository (and its corral.toml) ends, walking up
    (repo / "corral.toml").write_text('[project]\nname = "shop"\nteam = "shop"\n')
    return repo


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output + (str(result.exception) if result.exception else "")


def test_every_command_finds_a_run_in_the_team_of_the_repository(
    shop_repo: Path, open_store: Callable[[str], StateStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = make_run(open_store("shop"), Phase.AWAITING_APPROVAL, 0)
    monkeypatch.chdir(shop_repo / "src")  # a subdirectory of the repository

    code, out = cli("runs", "--json")
    assert code == 0, out
    assert [r["run_id"] for r in json.loads(out)] == [run_id]
    code, out = cli("show", run_id[:8], "--json")
    assert code == 0, out
    assert json.loads(out)["run_id"] == run_id
    code, out = cli("reject", run_id, "--feedback", "", "--json")
    assert code == 0, out
    assert open_store("shop").get_run(run_id).phase == Phase.REJECTED


def test_team_option_then_env_then_corral_toml_then_default(
    shop_repo: Path, open_store: Callable[[str], StateStore], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    in_shop = make_run(open_store("shop"), Phase.AWAITING_APPROVAL, 0)
    in_ops = make_run(open_store("ops"), Phase.AWAITING_APPROVAL, 0)
    in_default = make_run(open_store("default"), Phase.AWAITING_APPROVAL, 0)

    def listed(*args: str) -> list[str]:
        code, out = cli("runs", "--json", *args)
        assert code == 0, out
        return [r["run_id"] for r in json.loads(out)]

    outside = tmp_path / "elsewhere"
    (outside / ".git").mkdir(parents=True)
    monkeypatch.chdir(outside)
    assert listed() == [in_default]
    assert listed("--repo", str(shop_repo)) == [in_shop]
    monkeypatch.setenv("CORRAL_TEAM", "ops")
    assert listed("--repo", str(shop_repo)) == [in_ops]  # CORRAL_TEAM beats corral.toml
    assert listed("--repo", str(shop_repo), "--team", "shop") == [in_shop]  # --team beats both


def test_a_run_of_another_team_is_not_found_and_the_error_says_how_to_switch(
    shop_repo: Path, open_store: Callable[[str], StateStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = make_run(open_store("ops"), Phase.AWAITING_APPROVAL, 0)
    monkeypatch.chdir(shop_repo)
    for command in (["show", run_id], ["reject", run_id, "--feedback", "no"]):
        code, out = cli(*command)
        assert code != 0
        assert f"no run '{run_id}' in team 'shop'" in out, out
        assert "--team" in out and "CORRAL_TEAM" in out and "corral.toml" in out, out
    assert open_store("ops").get_run(run_id).phase == Phase.AWAITING_APPROVAL
    code, out = cli("show", run_id, "--team", "ops", "--json")
    assert code == 0 and json.loads(out)["run_id"] == run_id, out


def test_gc_through_the_cli_acts_in_the_repository_team(
    shop_repo: Path, open_store: Callable[[str], StateStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting = make_run(open_store("shop"), Phase.AWAITING_APPROVAL, dead_pid())
    orphan = make_run(open_store("shop"), Phase.RUNNING, dead_pid())
    elsewhere = make_run(open_store("default"), Phase.RUNNING, dead_pid())
    monkeypatch.chdir(shop_repo)
    code, out = cli("gc", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert (report["team"], report["runs_failed"]) == ("shop", [orphan])
    assert open_store("shop").get_run(waiting).phase == Phase.AWAITING_APPROVAL
    assert open_store("default").get_run(elsewhere).phase == Phase.RUNNING
    code, out = cli("gc")  # the text report: the team on one line, then each count and what it names
    assert code == 0 and "team: shop\n" in out and "\n  s\n" not in out, out
