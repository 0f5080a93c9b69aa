"""Runs change phase only through the state machine; illegal moves are refused and change nothing."""

from __future__ import annotations

import itertools
import re

import pytest

from corral.errors import NotFound, RunConflict, RunError, StoreError
from corral.state.db import StateStore
from corral.state.ids import RUN_ID, new_run_id
from corral.state.machine import TERMINAL, Phase, allowed_next, check_transition
from tests.state.conftest import PROJECT

HAPPY_PATH = [Phase.PREPARING, Phase.RUNNING, Phase.CHECKING, Phase.AWAITING_APPROVAL]
LEGAL = {
    (Phase.QUEUED, Phase.PREPARING),
    (Phase.PREPARING, Phase.RUNNING),
    (Phase.RUNNING, Phase.CHECKING),
    (Phase.CHECKING, Phase.AWAITING_APPROVAL),
    (Phase.CHECKING, Phase.EVALUATED),
    (Phase.AWAITING_APPROVAL, Phase.APPROVED),
    (Phase.AWAITING_APPROVAL, Phase.REJECTED),
    (Phase.RUNNING, Phase.NO_CHANGES),  # a shell session that changed nothing
    (Phase.AWAITING_APPROVAL, Phase.PREPARING),  # `corral shell --resume`
    (Phase.APPROVED, Phase.MERGED),
    (Phase.APPROVED, Phase.AWAITING_APPROVAL),
    (Phase.MERGED, Phase.STAGED),
    (Phase.STAGED, Phase.PROMOTED),
    # a fleet run whose host died mid-phase starts again cleanly on another host
    (Phase.PREPARING, Phase.PREPARING),
    (Phase.RUNNING, Phase.PREPARING),
    (Phase.CHECKING, Phase.PREPARING),
} | {(p, Phase.FAILED) for p in Phase if p not in TERMINAL}


def _new(store: StateStore, task: str = "fix the rounding bug") -> str:
    return store.create_run(PROJECT, task, "/repos/shop", "0" * 40, model="claude-x-20250101").run_id


def _advance(store: StateStore, run_id: str, until: Phase) -> None:
    for phase in [*HAPPY_PATH, Phase.APPROVED, Phase.MERGED, Phase.STAGED]:
        store.transition(run_id, phase)
        if phase is until:
            return


def test_the_machine_allows_exactly_the_designed_transitions() -> None:
    for src, dst in itertools.product(Phase, Phase):
        if (src, dst) in LEGAL:
            check_transition(src, dst, "r1")
            assert dst in allowed_next(src)
        else:
            with pytest.raises(RunError) as err:
                check_transition(src, dst, "r1")
            assert f"{src.value} → {dst.value}" in str(err.value)
            assert "run r1" in str(err.value)


def test_a_run_walks_the_happy_path_with_timings_and_history(store: StateStore) -> None:
    run_id = _new(store)
    run = store.get_run(run_id)
    assert (run.phase, run.version, run.branch, run.started_at) == (Phase.QUEUED, 1, f"corral/{run_id}", None)
    for phase in HAPPY_PATH:
        run = store.transition(run_id, phase, reason=f"to {phase}")
        assert run.phase is phase
    assert run.started_at is not None and run.finished_at is None
    store.transition(run_id, Phase.APPROVED, "approved by release-lead")
    merged = store.transition(run_id, Phase.MERGED, "merged")
    assert merged.finished_at is None and merged.version == 7
    store.transition(run_id, Phase.STAGED, "staged")
    promoted = store.transition(run_id, Phase.PROMOTED, "promoted")
    assert promoted.finished_at is not None and promoted.version == 9
    history = store.phase_history(run_id)
    delivery = [Phase.APPROVED, Phase.MERGED, Phase.STAGED, Phase.PROMOTED]
    assert [h.to_phase for h in history] == [Phase.QUEUED, *HAPPY_PATH, *delivery]
    assert history[5].from_phase is Phase.AWAITING_APPROVAL
    assert history[5].reason == "approved by release-lead"


@pytest.mark.parametrize(
    ("reach", "target"),
    [
        (None, Phase.RUNNING),
        (Phase.RUNNING, Phase.QUEUED),
        (Phase.CHECKING, Phase.CHECKING),
        (Phase.AWAITING_APPROVAL, Phase.RUNNING),  # a resumed session starts over at preparing
        (Phase.PREPARING, Phase.MERGED),
        (Phase.CHECKING, Phase.NO_CHANGES),  # only a session that changed nothing ends so
    ],
)
def test_illegal_transitions_are_refused_and_change_nothing(
    store: StateStore, reach: Phase | None, target: Phase
) -> None:
    run_id = _new(store)
    if reach is not None:
        _advance(store, run_id, reach)
    before = store.get_run(run_id)
    with pytest.raises(RunError) as err:
        store.transition(run_id, target)
    assert not isinstance(err.value, RunConflict)
    assert run_id in str(err.value)
    assert f"{before.phase.value} → {target.value}" in str(err.value)
    after = store.get_run(run_id)
    assert (after.phase, after.version) == (before.phase, before.version)
    assert len(store.phase_history(run_id)) == len(store.phase_history(run_id))


@pytest.mark.parametrize(
    "terminal", [Phase.PROMOTED, Phase.REJECTED, Phase.FAILED, Phase.NO_CHANGES, Phase.EVALUATED]
)
def test_terminal_phases_are_final(store: StateStore, terminal: Phase) -> None:
    run_id = _new(store)
    if terminal is Phase.FAILED:
        store.transition(run_id, Phase.FAILED, "docker engine went away")
    elif terminal is Phase.NO_CHANGES:
        _advance(store, run_id, Phase.RUNNING)
        store.transition(run_id, terminal, "the session changed nothing")
    elif terminal is Phase.EVALUATED:
        _advance(store, run_id, Phase.CHECKING)
        store.transition(run_id, terminal)
    else:
        _advance(store, run_id, Phase.AWAITING_APPROVAL)
        steps = (
            [Phase.APPROVED, Phase.MERGED, Phase.STAGED, terminal]
            if terminal is Phase.PROMOTED
            else [terminal]
        )
        for step in steps:
            store.transition(run_id, step)
    for target in (Phase.FAILED, Phase.RUNNING, Phase.MERGED):
        with pytest.raises(RunError, match="terminal"):
            store.transition(run_id, target, "again")


@pytest.mark.parametrize("phase", [p for p in Phase if p not in TERMINAL])
def test_failed_is_reachable_from_every_live_phase_and_keeps_its_reason(
    store: StateStore, phase: Phase
) -> None:
    run_id = _new(store)
    if phase is not Phase.QUEUED:
        _advance(store, run_id, phase)
    with pytest.raises(RunError, match="reason"):
        store.transition(run_id, Phase.FAILED)
    failed = store.transition(run_id, Phase.FAILED, "egress self-test found a route out")
    assert failed.phase is Phase.FAILED
    assert failed.failure_reason == "egress self-test found a route out"
    assert failed.finished_at is not None


def test_a_stale_expectation_is_a_conflict(store: StateStore) -> None:
    run_id = _new(store)
    store.transition(run_id, Phase.PREPARING)
    with pytest.raises(RunConflict) as err:
        store.transition(run_id, Phase.FAILED, "cancelled", expect=Phase.QUEUED)
    assert run_id in str(err.value) and "preparing" in str(err.value)
    assert store.get_run(run_id).phase is Phase.PREPARING


def test_runs_are_found_by_id_or_unique_prefix(store: StateStore) -> None:
    first, second = _new(store), _new(store)
    assert store.get_run(first).run_id == first
    assert store.get_run(first.upper()).run_id == first
    common = next(i for i in range(len(first)) if first[i] != second[i])
    assert store.get_run(first[: common + 1]).run_id == first
    with pytest.raises(NotFound, match="ambiguous") as err:
        store.get_run("r")
    assert first in str(err.value) and second in str(err.value)
    with pytest.raises(NotFound, match="no run"):
        store.get_run("rzzzzzzzzzzzz")
    with pytest.raises(NotFound, match="not a run id"):
        store.get_run("r1'; DROP TABLE runs; --")


def test_run_ids_are_short_branch_safe_and_time_sortable() -> None:
    ids = [new_run_id(now=t) for t in (1_700_000_000, 1_700_000_001, 1_800_000_000, 4_000_000_000)]
    assert ids == sorted(ids)
    assert all(RUN_ID.match(i) and re.fullmatch(r"[0-9a-z]+", i) for i in ids)
    assert len({new_run_id() for _ in range(200)}) == 200


def test_update_run_sets_fields_but_never_the_phase(store: StateStore) -> None:
    run_id = _new(store)
    run = store.update_run(
        run_id,
        checks={"command": "pytest -q", "exit_code": 0, "output": "3 passed"},
        checks_passed=True,
        diffstat=" calc.py | 2 +-",
        container_id="c0ffee",
        pid=4242,
        result={"summary": "fixed"},
        preference_ids=["3", 4],
    )
    assert run.checks == {"command": "pytest -q", "exit_code": 0, "output": "3 passed"}
    assert (run.checks_passed, run.diffstat, run.container_id, run.pid) == (
        True,
        " calc.py | 2 +-",
        "c0ffee",
        4242,
    )
    assert run.preference_ids == [3, 4]
    with pytest.raises(StoreError, match="phase"):
        store.update_run(run_id, phase="merged")
    with pytest.raises(NotFound):
        store.update_run("rnothere00000", pid=1)
    assert store.get_run(run_id).phase is Phase.QUEUED


def test_usage_adds_up(store: StateStore) -> None:
    run_id = _new(store)
    store.add_usage(run_id, cost_usd=0.25, input_tokens=100, output_tokens=10)
    run = store.add_usage(run_id, cost_usd=0.5, input_tokens=50, cache_read_tokens=7)
    assert (run.cost_usd, run.input_tokens, run.output_tokens, run.cache_read_tokens) == (0.75, 150, 10, 7)
    with pytest.raises(StoreError, match="usage"):
        store.add_usage(run_id, dollars=1.0)


def test_list_runs_newest_first_and_by_project(store: StateStore) -> None:
    store.ensure_project("blog")
    ids = [_new(store, f"task {i}") for i in range(3)]
    other = store.create_run("blog", "typo", "/repos/blog", "1" * 40).run_id
    assert [r.run_id for r in store.list_runs(project=PROJECT)] == ids[::-1]
    assert [r.run_id for r in store.list_runs(limit=2)] == [other, ids[2]]
    _advance(store, ids[0], Phase.RUNNING)
    assert [r.run_id for r in store.list_runs(phase=Phase.RUNNING)] == [ids[0]]


def test_a_run_needs_its_project(store: StateStore) -> None:
    with pytest.raises(StoreError, match="ensure_project"):
        store.create_run("no-such-project", "task", "/r", "abc")


def test_projects_keep_their_latest_snapshot(store: StateStore) -> None:
    updated = store.ensure_project(
        PROJECT, repo="/new", image="team/img:2", config_snapshot={"agent": {"x": 2}}
    )
    assert (updated.repo, updated.image, updated.config_snapshot) == (
        "/new",
        "team/img:2",
        {"agent": {"x": 2}},
    )
    assert [p.name for p in store.list_projects()] == [PROJECT]
    assert store.get_project(PROJECT).id == updated.id


def test_approvals_record_who_decided_what(store: StateStore) -> None:
    run_id = _new(store)
    approval = store.record_approval(run_id, "human:release-lead", "approved", "merge", "looks right")
    store.record_approval(run_id, "human:oncall", "rejected", "deploy_promotion", "not on a Friday")
    assert approval.project == PROJECT and approval.decided_at is not None
    assert [(a.actor, a.decision, a.subject) for a in store.list_approvals(run_id=run_id)] == [
        ("human:release-lead", "approved", "merge"),
        ("human:oncall", "rejected", "deploy_promotion"),
    ]
    with pytest.raises(StoreError):
        store.record_approval(run_id, "x", "maybe", "run")  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        store.record_approval("rnothere00000", "x", "approved")


def test_model_pins_keep_their_history(store: StateStore) -> None:
    assert store.current_pin(PROJECT) is None
    store.pin_model(
        PROJECT, "claude-a-20250101", "claude-b-20250101", "2.1.0", pinned_by="alice", reason="first"
    )
    store.pin_model(
        PROJECT,
        "claude-a-20250601",
        "claude-b-20250101",
        "2.1.332",
        pinned_by="bob",
        tool_surface_hash="sha256:abc",
        reason="replayed last week: 0 regressions",
    )
    current = store.current_pin(PROJECT)
    assert current is not None
    assert (current.model, current.claude_code, current.pinned_by) == ("claude-a-20250601", "2.1.332", "bob")
    assert [p.reason for p in store.pin_history(PROJECT)] == ["replayed last week: 0 regressions", "first"]
