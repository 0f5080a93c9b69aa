"""`corral approve`, `corral deploy promote`, `corral deploy rollback`, `corral comment`.

An approval is worth exactly the commit it was given for: it records the head SHA, and the merge is of
that SHA or nothing. Every refusal is decided before anything is written, so a refused approval leaves
no approval row, no event, no merge, no moved ref and no deploy. The phases after awaiting_approval
(approved → merged → staged → promoted) are each recorded before the next step starts, so an approval
whose process died is finished by rerunning `corral approve RUN`: a run already merged is not merged
again (the base branch contains its head), it is only staged.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from corral.audit import EventSink
from corral.config import Config, load_config
from corral.delivery.gitmerge import is_merged, protected_changes
from corral.delivery.pr import ensure_pull_request, find_pull_request
from corral.deploy import Deployment
from corral.errors import ApprovalRefused, DeployError, MergeRefused, RunError
from corral.events import (
    ApprovalGranted,
    DeployFailed,
    DeployPromoted,
    DeployRolledBack,
    DeployStaged,
    MergeMade,
    ReviewComment,
    RunPhase,
)
from corral.events import MergeRefused as MergeRefusedEvent
from corral.fleet.decisions import FleetDecisions, fleet_decisions
from corral.paths import Protection
from corral.services import Services
from corral.state.machine import Phase
from corral.state.models import RunRecord
from corral.workspace import run_git


@dataclass(frozen=True)
class Delivered:
    run_id: str
    phase: Phase
    head_sha: str
    merge_commit: str = ""
    deployment: Deployment | None = None
    resumed: bool = False
    """True when this call finished an approval an earlier process recorded (no new approval)."""


class _Chain:
    """The run's audit chain, opened for one command and closed by it."""

    def __init__(self, services: Services, run_id: str) -> None:
        self.recorder = services.audit().for_run(run_id, team=services.team)

    def __enter__(self) -> EventSink:
        return self.recorder

    def __exit__(self, *_exc: object) -> None:
        self.recorder.close()


def _config(run: RunRecord) -> Config:
    return load_config(Path(run.repo))


def _check_approver(config: Config, run: RunRecord, approver: str, what: str) -> None:
    approvers = config.approval.approvers
    if approvers and approver not in approvers:
        raise ApprovalRefused(
            f"{approver} may not {what} run {run.run_id}: "
            f"not in [approval].approvers ({', '.join(approvers)})",
            hint="ask one of them, or add the name to [approval].approvers in corral.toml",
        )
    if run.requester and approver == run.requester and not config.approval.allow_self_approval:
        raise ApprovalRefused(
            f"{approver} asked for run {run.run_id} and may not {what} it: the approval that counts is "
            "someone else's",
            hint="ask another reviewer, or set [approval] allow_self_approval = true in corral.toml",
        )


def _move(services: Services, sink: EventSink, run: RunRecord, to: Phase, actor: str, why: str) -> RunRecord:
    moved = services.state().transition(run.run_id, to, why, expect=run.phase)
    sink.emit(RunPhase(actor=actor, from_phase=run.phase.value, to_phase=to.value, reason=why), durable=True)
    return moved


def _branch_head(run: RunRecord) -> str:
    proc = run_git(
        ["rev-parse", "--verify", "--quiet", f"refs/heads/{run.branch}^{{commit}}"], cwd=Path(run.repo)
    )
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _approved_head(services: Services, run: RunRecord) -> str:
    granted = [
        a
        for a in services.state().list_approvals(run.run_id)
        if a.decision == "approved" and a.subject == "run"
    ]
    return granted[-1].head_sha if granted else ""


def _refuse_merge_approval(config: Config, run: RunRecord, approver: str, override: bool) -> str:
    """Every reason not to accept this approval, before anything is written; returns the head SHA."""
    if run.phase is not Phase.AWAITING_APPROVAL:
        raise ApprovalRefused(
            f"run {run.run_id} is {run.phase.value}, not awaiting_approval",
            hint="only a run awaiting approval can be approved; see `corral show RUN`",
        )
    _check_approver(config, run, approver, "approve")
    head = str(run.meta.get("head_commit", ""))
    if not head:
        raise ApprovalRefused(f"run {run.run_id} committed nothing", hint="there is nothing to merge")
    current = _branch_head(run)
    if current != head:
        raise ApprovalRefused(
            f"run {run.run_id}: its branch {run.branch} is at {current[:12] or 'nothing'}, not the "
            f"reviewed commit {head[:12]}",
            hint="a moved head needs a new review: inspect the branch, or rerun the task",
        )
    if run.checks_passed is False and not override:
        raise ApprovalRefused(
            f"run {run.run_id}: its checks failed",
            hint="read them (`corral audit show RUN`); an approver may approve anyway with --override",
        )
    protection = Protection.from_config(config)
    touched = protected_changes(Path(run.repo), run.base_commit, head, protection, config.sandbox.workdir)
    if touched:
        raise ApprovalRefused(
            f"run {run.run_id} changes protected paths: {', '.join(touched)}",
            hint="read-only and hidden paths (and links into them) can never ship through corral",
        )
    return head


def approve(
    services: Services, run_id: str, *, approver: str, comment: str = "", override: bool = False
) -> Delivered:
    run = services.find_run(run_id)
    config = _config(run)
    actor = f"human:{approver}"
    fleet = fleet_decisions(services, run, config)
    if fleet is not None:
        return _approve_on_fleet(services, fleet, config, run, approver, comment, override)
    with _Chain(services, run.run_id) as sink:
        unfinished = run.phase is Phase.APPROVED or (run.phase is Phase.MERGED and _deploys(config))
        if unfinished and _approved_head(services, run):
            return _finish(services, config, sink, run, _approved_head(services, run), actor, resumed=True)
        _refuse_approved_twice(run)
        head = _refuse_merge_approval(config, run, approver, override)
        run = _record_approval(services, sink, run, approver, head, comment, override)
        return _finish(services, config, sink, run, head, actor, resumed=False)


def _refuse_approved_twice(run: RunRecord) -> None:
    if run.phase in (Phase.APPROVED, Phase.MERGED, Phase.STAGED, Phase.PROMOTED):
        raise ApprovalRefused(
            f"run {run.run_id} was already approved (it is {run.phase.value})",
            hint="an approval is given once; promote with `corral deploy promote RUN`",
        )


def _record_approval(
    services: Services,
    sink: EventSink,
    run: RunRecord,
    approver: str,
    head: str,
    comment: str,
    override: bool,
) -> RunRecord:
    actor = f"human:{approver}"
    run = _move(services, sink, run, Phase.APPROVED, actor, f"approved by {approver} at {head[:12]}")
    services.state().record_approval(
        run.run_id, approver, "approved", "run", comment, head_sha=head, override=override
    )
    sink.emit(
        ApprovalGranted(actor=actor, subject="run", comment=comment, head_sha=head, override=override),
        durable=True,
    )
    return run


def _approve_on_fleet(
    services: Services,
    fleet: FleetDecisions,
    config: Config,
    run: RunRecord,
    approver: str,
    comment: str,
    override: bool,
) -> Delivered:
    """The same rules, then a signal: the run's workflow merges (and stages) on some host."""
    resumed = run.phase is Phase.APPROVED and bool(_approved_head(services, run))
    if not resumed:
        _refuse_approved_twice(run)
        head = _refuse_merge_approval(config, run, approver, override)
        fleet.require_waiting("approval")  # before anything is written
        with _Chain(services, run.run_id) as sink:
            run = _record_approval(services, sink, run, approver, head, comment, override)
    fleet.send("approve", f"human:{approver}")
    done = fleet.wait_past(Phase.APPROVED, Phase.MERGED if _deploys(config) else None)
    if done.phase is Phase.AWAITING_APPROVAL and done.meta.get("merge_refused"):
        raise MergeRefused(str(done.meta["merge_refused"]), conflicts=list(done.meta.get("conflicts", [])))
    if done.phase is Phase.FAILED:
        raise DeployError(done.failure_reason or f"run {run.run_id} failed after its approval")
    head = _approved_head(services, done)
    dep = None
    if done.meta.get("deployment_id"):
        dep = services.deployer(config, done.run_id, Path(done.repo)).get(str(done.meta["deployment_id"]))
    return Delivered(done.run_id, done.phase, head, str(done.meta.get("merge_commit", "")), dep, resumed)


def merge_approved(services: Services, run_id: str, actor: str) -> Phase:
    """The fleet's `merge` step: merge a run whose approval is recorded. Idempotent: a run past
    approved is left as it is, and a merge an earlier attempt made is found, never made again."""
    run = services.find_run(run_id)
    if run.phase is not Phase.APPROVED:
        return run.phase
    with _Chain(services, run.run_id) as sink, contextlib.suppress(MergeRefused):
        _merge(services, _config(run), sink, run, _approved_head(services, run), actor)
    return services.find_run(run_id).phase


def stage_merged(services: Services, run_id: str, actor: str) -> Phase:
    """The fleet's `stage` step: stage a merged run of a project that deploys; idempotent."""
    run = services.find_run(run_id)
    config = _config(run)
    if run.phase is not Phase.MERGED or not _deploys(config):
        return run.phase
    commit = str(run.meta.get("merge_commit", "")) or _approved_head(services, run)
    with _Chain(services, run.run_id) as sink, contextlib.suppress(DeployError):
        _stage(services, config, sink, run, commit, actor)
    return services.find_run(run_id).phase


def _finish(
    services: Services,
    config: Config,
    sink: EventSink,
    run: RunRecord,
    head: str,
    actor: str,
    *,
    resumed: bool,
) -> Delivered:
    merge_commit = str(run.meta.get("merge_commit", ""))
    if run.phase is Phase.APPROVED:
        merge_commit = _merge(services, config, sink, run, head, actor)
        run = services.state().get_run(run.run_id)
    deployment = None
    if _deploys(config):
        deployment = _stage(services, config, sink, run, merge_commit or head, actor)
        run = services.state().get_run(run.run_id)
    return Delivered(run.run_id, run.phase, head, merge_commit, deployment, resumed)


def _deploys(config: Config) -> bool:
    """Whether the project is deployed after a merge: a `[deploy]` with a build, or a hosted backend."""
    return config.deploy is not None and (bool(config.deploy.build) or config.deploy.backend != "local")


def _merge(services: Services, config: Config, sink: EventSink, run: RunRecord, head: str, actor: str) -> str:
    repo, base = Path(run.repo), config.project.base_branch
    state = services.state()
    forge = services.forge(config)
    if config.forge.backend == "local" and is_merged(repo, base, head):
        # An earlier `corral approve` merged and died before recording it: never merge twice.
        merge_commit = str(run.meta.get("merge_commit", "")) or _tip(repo, base)
    elif (found := find_pull_request(forge, run)) is not None and found.state == "merged":
        merge_commit = found.merge_commit  # the forge merged it before the process died
    else:
        summary = str((run.result or {}).get("text", ""))
        pr, _ = ensure_pull_request(forge, run, base, summary)
        name = actor.removeprefix("human:")
        subject = run.task.strip().splitlines()[0][:72] if run.task.strip() else ""
        message = (
            f"Merge corral run {run.run_id}: {subject}"
            f"\n\nApproved-by: {name}\nCorral-Run: {run.run_id}\nCorral-Head: {head}\n"
        )
        try:
            merged = forge.merge(pr.number, approver=actor, sha=head, message=message)
        except MergeRefused as exc:
            sink.emit(MergeRefusedEvent(reason=exc.message, conflicts=exc.conflicts), durable=True)
            state.update_run(
                run.run_id, meta={**run.meta, "merge_refused": exc.message, "conflicts": exc.conflicts}
            )
            _move(services, sink, run, Phase.AWAITING_APPROVAL, "system", f"merge refused: {exc.message}")
            raise
        merge_commit = merged.merge_commit
    previous = _first_parent(repo, merge_commit) if config.forge.backend == "local" else ""
    state.update_run(run.run_id, meta={**run.meta, "merge_commit": merge_commit})
    sink.emit(
        MergeMade(actor=actor, commit=merge_commit, base_branch=base, head_sha=head, previous=previous),
        durable=True,
    )
    _move(services, sink, state.get_run(run.run_id), Phase.MERGED, actor, f"merged as {merge_commit[:12]}")
    return merge_commit


def _tip(repo: Path, branch: str) -> str:
    return run_git(["rev-parse", f"refs/heads/{branch}"], cwd=repo).stdout.strip()


def _first_parent(repo: Path, commit: str) -> str:
    proc = run_git(["rev-parse", "--verify", "--quiet", f"{commit}^1"], cwd=repo)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _stage(
    services: Services, config: Config, sink: EventSink, run: RunRecord, commit: str, actor: str
) -> Deployment:
    deployer = services.deployer(config, run.run_id, Path(run.repo))
    try:
        dep = deployer.stage_commit(
            run_id=run.run_id, project=run.project, commit=commit, branch=config.project.base_branch
        )
    except DeployError as exc:
        sink.emit(DeployFailed(reason=exc.message), durable=True)
        services.state().transition(run.run_id, Phase.FAILED, f"deploy failed: {exc.message}")
        sink.emit(
            RunPhase(from_phase=run.phase.value, to_phase=Phase.FAILED.value, reason=exc.message),
            durable=True,
        )
        raise
    sink.emit(DeployStaged(actor=actor, deployment_id=dep.id, url=dep.url, ref=dep.ref), durable=True)
    state = services.state()
    state.update_run(run.run_id, meta={**state.get_run(run.run_id).meta, "deployment_id": dep.id})
    _move(services, sink, state.get_run(run.run_id), Phase.STAGED, actor, f"staged {dep.id} at {dep.url}")
    return dep


def promote(services: Services, run_id: str, *, approver: str, comment: str = "") -> Delivered:
    run = services.find_run(run_id)
    config = _config(run)
    if run.phase is not Phase.STAGED:
        raise ApprovalRefused(
            f"run {run.run_id} is {run.phase.value}, not staged",
            hint="only a staged deployment can be promoted; approve the run first",
        )
    _check_approver(config, run, approver, "promote")
    dep_id = str(run.meta.get("deployment_id", ""))
    deployer = services.deployer(config, run.run_id, Path(run.repo))
    dep = deployer.get(dep_id)
    actor = f"human:{approver}"
    fleet = fleet_decisions(services, run, config)
    if fleet is not None:
        fleet.require_waiting("promotion")
    with _Chain(services, run.run_id) as sink:
        services.state().record_approval(
            run.run_id, approver, "approved", "deploy_promotion", comment, head_sha=dep.ref
        )
        sink.emit(
            ApprovalGranted(actor=actor, subject="promote", comment=comment, head_sha=dep.ref), durable=True
        )
        if fleet is None:
            promoted = _promote(services, config, sink, run, actor)
    if fleet is not None:
        fleet.send("promote", actor)
        run = fleet.wait_past(Phase.STAGED)
        promoted = deployer.get(dep_id)
    head = str(run.meta.get("head_commit", ""))
    phase = services.find_run(run_id).phase
    return Delivered(run.run_id, phase, head, str(run.meta.get("merge_commit", "")), promoted)


def _promote(services: Services, config: Config, sink: EventSink, run: RunRecord, actor: str) -> Deployment:
    deployer = services.deployer(config, run.run_id, Path(run.repo))
    dep_id = str(run.meta.get("deployment_id", ""))
    promoted = deployer.get(dep_id)
    if promoted.state != "promoted":  # a retried fleet step finds it promoted: never promote twice
        promoted = deployer.promote(dep_id, approver=actor)
    sink.emit(DeployPromoted(actor=actor, deployment_id=promoted.id, url=promoted.url), durable=True)
    _move(services, sink, run, Phase.PROMOTED, actor, f"promoted {promoted.id} to {promoted.url}")
    return promoted


def promote_staged(services: Services, run_id: str, actor: str) -> Phase:
    """The fleet's `promote` step, after `promote` recorded the approval; idempotent."""
    run = services.find_run(run_id)
    if run.phase is not Phase.STAGED:
        return run.phase
    with _Chain(services, run.run_id) as sink:
        _promote(services, _config(run), sink, run, actor)
    return services.find_run(run_id).phase


def rollback(services: Services, project: str, *, approver: str) -> Deployment:
    """Production of `project` back to its previous build, audited in both runs' chains."""
    config = load_config(Path(services.state().get_project(project).repo))
    approvers = config.approval.approvers
    if approvers and approver not in approvers:
        raise ApprovalRefused(
            f"{approver} may not roll back {project}: not in [approval].approvers ({', '.join(approvers)})",
            hint="ask one of them",
        )
    deployer = services.deployer(config, "rollback", Path(services.state().get_project(project).repo))
    current = deployer.production(project)
    back = deployer.rollback(project=project, approver=f"human:{approver}")
    event = DeployRolledBack(
        actor=f"human:{approver}",
        deployment_id=back.id,
        from_deployment_id=current.id if current else "",
        url=back.url,
    )
    for run_id in sorted({back.run_id, *([current.run_id] if current else [])}):
        with _Chain(services, run_id) as sink:
            sink.emit(event.model_copy(), durable=True)
    return back


def comment(services: Services, run_id: str, *, author: str, body: str) -> tuple[int, int]:
    """A reviewer's comment on the run's pull request, recorded in its audit, offered as a candidate
    preference; returns (pull request number, preference id)."""
    if not body.strip():
        raise RunError("an empty comment says nothing", hint="pass the comment's text")
    run = services.find_run(run_id)
    config = _config(run)
    forge = services.forge(config)
    pr = find_pull_request(forge, run)
    if pr is None:
        pr, _ = ensure_pull_request(
            forge, run, config.project.base_branch, str((run.result or {}).get("text", ""))
        )
    forge.comment(pr.number, body=body, author=f"human:{author}")
    return pr.number, record_comment(services, run, author, body, config.forge.backend)


def pull_review_comments(services: Services, run_id: str) -> list[int]:
    """The review comments of the run's pull request on the forge not yet recorded (GitHub's, read
    through its API), each recorded and offered as a candidate preference; returns their ids."""
    run = services.find_run(run_id)
    config = _config(run)
    forge = services.forge(config)
    pr = find_pull_request(forge, run)
    if pr is None:
        return []
    seen = {str(c) for c in run.meta.get("review_comments_seen", [])}
    ids: list[int] = []
    for item in forge.review_comments(pr.number):
        key = f"{item.author}|{item.ts.isoformat()}|{item.body}"
        if key in seen or (item.author.startswith("human:") and config.forge.backend == "local"):
            continue
        ids.append(record_comment(services, run, item.author, item.body, config.forge.backend))
        seen.add(key)
    services.state().update_run(
        run.run_id, meta={**services.state().get_run(run.run_id).meta, "review_comments_seen": sorted(seen)}
    )
    return ids


def record_comment(services: Services, run: RunRecord, author: str, body: str, source: str) -> int:
    from corral.state.preferences import CANDIDATE_CONFIDENCE, add_preference

    pref = add_preference(
        services.state(),
        run.project,
        body,
        source_kind="review",
        source_ref=f"run:{run.run_id}",
        run_id=run.run_id,
        confidence=CANDIDATE_CONFIDENCE,
        created_by=author,
    )
    with _Chain(services, run.run_id) as sink:
        sink.emit(
            ReviewComment(actor=f"human:{author}", body=body, source=source, preference_id=pref.id),
            durable=True,
        )
    return pref.id
