"""The run state machine: the only way a run's phase may change.

queued → preparing → running → checking → awaiting_approval → approved → merged → staged → promoted,
rejected from awaiting_approval, and failed (with a reason) from every phase that is not terminal.
An approved run whose merge is refused (a conflict, a moved head) goes back to awaiting_approval.
An interactive session (`corral shell`) that changed nothing ends running → no_changes, and one
awaiting approval may be reopened (`corral shell --resume`): awaiting_approval → preparing.
A regression or replay run ends at `evaluated` after its checks: it is scored, never offered for
approval. A run on the fleet whose worker died mid-phase is retried from a clean start: any working
phase → preparing.
"""

from __future__ import annotations

from enum import StrEnum

from corral.errors import RunError


class Phase(StrEnum):
    QUEUED = "queued"
    PREPARING = "preparing"
    RUNNING = "running"
    CHECKING = "checking"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    MERGED = "merged"
    STAGED = "staged"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    FAILED = "failed"
    NO_CHANGES = "no_changes"
    EVALUATED = "evaluated"


TERMINAL: frozenset[Phase] = frozenset(
    {Phase.PROMOTED, Phase.REJECTED, Phase.FAILED, Phase.NO_CHANGES, Phase.EVALUATED}
)

AT_REST: frozenset[Phase] = frozenset({Phase.AWAITING_APPROVAL, Phase.APPROVED, Phase.MERGED, Phase.STAGED})
"""Phases that wait for a human: no corral process drives a run in them, by design. An approved or
merged run whose `corral approve` died is finished by rerunning it, never failed by gc."""

WORKING: frozenset[Phase] = frozenset(Phase) - TERMINAL - AT_REST
"""Phases a live corral process drives; a run left in one by a dead process lost its driver."""

_FORWARD: dict[Phase, frozenset[Phase]] = {
    Phase.QUEUED: frozenset({Phase.PREPARING}),
    Phase.PREPARING: frozenset({Phase.RUNNING, Phase.PREPARING}),
    Phase.RUNNING: frozenset({Phase.CHECKING, Phase.NO_CHANGES, Phase.PREPARING}),
    Phase.CHECKING: frozenset({Phase.AWAITING_APPROVAL, Phase.EVALUATED, Phase.PREPARING}),
    Phase.AWAITING_APPROVAL: frozenset({Phase.APPROVED, Phase.REJECTED, Phase.PREPARING}),
    Phase.APPROVED: frozenset({Phase.MERGED, Phase.AWAITING_APPROVAL}),
    Phase.MERGED: frozenset({Phase.STAGED}),
    Phase.STAGED: frozenset({Phase.PROMOTED}),
}


def allowed_next(phase: Phase) -> frozenset[Phase]:
    """Every phase `phase` may move to."""
    if phase in TERMINAL:
        return frozenset()
    return _FORWARD[phase] | {Phase.FAILED}


def is_terminal(phase: Phase) -> bool:
    return phase in TERMINAL


def needs_driver(phase: Phase | str) -> bool:
    """Whether a run in `phase` is only healthy while a corral process drives it."""
    return Phase(phase) in WORKING


def check_transition(from_phase: Phase | str, to_phase: Phase | str, run_id: str = "") -> None:
    """Raise `RunError` unless `from_phase` → `to_phase` is a legal move for run `run_id`."""
    who = f"run {run_id}" if run_id else "run"
    try:
        src, dst = Phase(from_phase), Phase(to_phase)
    except ValueError as exc:
        raise RunError(
            f"{who}: unknown phase in {from_phase!r} → {to_phase!r}",
            hint="phases are: " + ", ".join(p.value for p in Phase),
        ) from exc
    if dst in allowed_next(src):
        return
    if src in TERMINAL:
        hint = f"{src.value} is terminal; start a new run instead"
    else:
        hint = f"from {src.value} a run may go to: " + ", ".join(sorted(p.value for p in allowed_next(src)))
    raise RunError(f"{who}: illegal phase transition {src.value} → {dst.value}", hint=hint)
