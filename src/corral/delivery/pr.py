"""The pull request of a run: found when the agent opened one through the gateway, else opened by corral.

Its body says what a reviewer needs: the task, the agent's summary, the diff stat, the check results,
the preferences injected and the run id; for an incident run, the incident's link and the evidence the
agent read. When the agent opened the pull request itself, corral adds the incident's lines as a
comment, since the agent's own body cannot be trusted to carry them. Everything in it passes through
the run's redactor first (the summary and the diff stat are the agent's words), and it is printed only
through corral.display.
"""

from __future__ import annotations

from pathlib import Path

from corral.audit.redact import Redactor
from corral.forge import Check, Forge, PullRequest
from corral.incident.evidence import incident_section
from corral.state.models import RunRecord


def pull_request_body(run: RunRecord, summary: str, redactor: Redactor | None = None) -> str:
    checks = run.checks or {}
    verdict = "-" if run.checks_passed is None else ("passed" if run.checks_passed else "FAILED")
    prefs = ", ".join(f"#{i}" for i in run.preference_ids) or "none"
    body = "\n".join(
        [
            f"**Task:** {run.task}",
            "",
            "**Agent's summary:**",
            summary.strip() or "(none)",
            "",
            "**Diff stat:**",
            "```",
            run.diffstat or "(no change)",
            "```",
            f"**Checks:** {verdict} (`{checks.get('command', '-')}`, exit {checks.get('exit_code', '-')})",
            f"**Preferences injected:** {prefs}",
            *incident_section(run.result or {}, run.run_id),
            f"**Run:** {run.run_id} (`corral show {run.run_id}`, `corral audit show {run.run_id}`)",
        ]
    )
    return redactor.redact_text(body) if redactor is not None else body


def find_pull_request(forge: Forge, run: RunRecord) -> PullRequest | None:
    """The run's newest pull request (open or not) from its own branch."""
    mine = [pr for pr in forge.list(Path(run.repo)) if pr.head == run.branch]
    return mine[-1] if mine else None


def ensure_pull_request(
    forge: Forge, run: RunRecord, base: str, summary: str, redactor: Redactor | None = None
) -> tuple[PullRequest, bool]:
    """The run's pull request, opened by corral when the agent did not; (pr, opened_now).

    The checks corral ran are reported on it either way."""
    pr = find_pull_request(forge, run)
    opened = pr is None
    if pr is None:
        forge.publish(Path(run.repo), run.branch)
        title = run.task.strip().splitlines()[0][:100] if run.task.strip() else f"corral run {run.run_id}"
        if redactor is not None:
            title = redactor.redact_text(title)
        pr = forge.open_pull_request(
            Path(run.repo),
            head=run.branch,
            base=base,
            title=title,
            body=pull_request_body(run, summary, redactor),
            author="corral",
        )
    else:
        pr = _comment_incident(forge, pr, run, redactor)
    if run.checks_passed is not None:
        command = str((run.checks or {}).get("command", "checks"))
        pr = forge.record_check(
            pr.number,
            Check(name="corral/checks", status="passed" if run.checks_passed else "failed", summary=command),
        )
    return pr, opened


def _comment_incident(
    forge: Forge, pr: PullRequest, run: RunRecord, redactor: Redactor | None
) -> PullRequest:
    """Once per pull request the agent opened: the incident's link and evidence, as corral's comment."""
    lines = incident_section(run.result or {}, run.run_id)
    if not lines or any(c.author == "corral" and c.body.startswith(_INCIDENT_MARK) for c in pr.comments):
        return pr
    body = "\n".join([_INCIDENT_MARK, *lines])
    return forge.comment(pr.number, body=redactor.redact_text(body) if redactor else body, author="corral")


_INCIDENT_MARK = "**corral: the incident this run investigated**"
