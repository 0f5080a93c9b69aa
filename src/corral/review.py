"""Human review of a finished run: the decision is recorded in state and in the run's audit chain.

A rejection's feedback becomes a candidate preference of the project, so the next run's agent is told.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from corral.config import load_config
from corral.errors import CorralError, RunError
from corral.events import ApprovalRejected, RunPhase
from corral.services import Services
from corral.state.machine import Phase
from corral.state.models import ApprovalRecord, Preference, RunRecord


def default_reviewer() -> str:
    from corral.identity import current_user

    return current_user()


@dataclass(frozen=True)
class Rejection:
    run_id: str
    approval: ApprovalRecord
    preference: Preference | None


def _check_reviewer(repo: str, reviewer: str) -> None:
    try:
        approvers = load_config(Path(repo)).approval.approvers
    except CorralError:
        return  # the repo moved or its config broke since the run; the run's own record still stands
    if approvers and reviewer not in approvers:
        raise RunError(
            f"{reviewer} is not an approver of this project (approvers: {', '.join(approvers)})",
            hint="ask one of them, or add the name to [approval].approvers in corral.toml",
        )


def reject(services: Services, run_id: str, feedback: str, reviewer: str) -> Rejection:
    state = services.state()
    run = services.find_run(run_id)
    _check_reviewer(run.repo, reviewer)
    if run.phase != Phase.AWAITING_APPROVAL:
        raise RunError(
            f"run {run.run_id} is {run.phase}, not awaiting_approval",
            hint="only a finished run can be rejected",
        )
    from corral.fleet.decisions import fleet_decisions

    fleet = fleet_decisions(services, run, load_config(Path(run.repo)))
    if fleet is not None:
        fleet.require_waiting("approval")  # before anything is written
    state.transition(run.run_id, Phase.REJECTED, f"rejected by {reviewer}", expect=Phase.AWAITING_APPROVAL)
    approval = state.record_approval(run.run_id, reviewer, "rejected", "run", feedback)
    preference = None
    if feedback.strip():
        from corral.state.preferences import from_rejection

        preference = from_rejection(state, run.run_id, feedback, approval.id, created_by=reviewer)
    _close_pull_request(services, run)
    recorder = services.audit().for_run(run.run_id, team=services.team)
    try:
        actor = f"human:{reviewer}"
        recorder.emit(ApprovalRejected(actor=actor, subject="run", comment=feedback), durable=True)
        recorder.emit(
            RunPhase(actor=actor, from_phase=Phase.AWAITING_APPROVAL.value, to_phase=Phase.REJECTED.value),
            durable=True,
        )
    finally:
        recorder.close()
    if fleet is not None:
        fleet.send("reject", f"human:{reviewer}")
    return Rejection(run.run_id, approval, preference)


def _close_pull_request(services: Services, run: RunRecord) -> None:
    """A rejected run's pull request is closed; a forge that is unreachable does not undo the rejection."""
    from corral.delivery.pr import find_pull_request

    try:
        forge = services.forge(load_config(Path(run.repo)))
        pr = find_pull_request(forge, run)
        if pr is not None and pr.state == "open":
            forge.close(pr.number)
    except CorralError as exc:
        services.progress(f"warning: the pull request of run {run.run_id} stays open: {exc.message}")
