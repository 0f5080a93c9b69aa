"""`corral regress schedule`: the nightly regression as a Temporal Schedule.

The schedule starts a `CorralRegress` workflow, whose one activity makes the same call a manual
`corral regress` makes (`corral.regress.suite.run_and_report`) on some fleet host, with the report
directory fixed when it was scheduled: where a manual `corral regress` of the scheduling user puts it.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from temporalio import activity
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleSpec,
    ScheduleState,
)

from corral.errors import FleetError, NotFound
from corral.fleet.types import RegressJob


@dataclass(frozen=True)
class ScheduledRegression:
    schedule_id: str
    candidate: str
    team: str
    cron: str
    repo: str
    next_runs: list[str]
    paused: bool


def schedule_id(queue: str, team: str, candidate: str) -> str:
    return f"{queue}-regress-" + re.sub(r"[^A-Za-z0-9._-]", "-", f"{team}-{candidate}")


async def create(client: Client, job: RegressJob, cron: str) -> str:
    sid = schedule_id(job.queue, job.team, job.candidate)
    action = ScheduleActionStartWorkflow("CorralRegress", job, id=sid + "-run", task_queue=job.queue)
    schedule = Schedule(
        action=action,
        spec=ScheduleSpec(cron_expressions=[cron]),
        state=ScheduleState(note=f"corral regress --candidate {job.candidate} (team {job.team})"),
    )
    try:
        # The memo keeps what was asked as it was written (the server turns a cron into calendars).
        memo = {"cron": cron, "candidate": job.candidate, "team": job.team, "repo": job.repo}
        await client.create_schedule(sid, schedule, memo=memo)
    except ScheduleAlreadyRunningError as exc:
        raise FleetError(
            f"a regression of {job.candidate} is already scheduled for team {job.team} ({sid})",
            hint="remove it first with `corral regress unschedule`",
        ) from exc
    except RuntimeError as exc:  # the server refused the spec: a cron it cannot parse, for one
        raise FleetError(f"Temporal refused the schedule {sid}: {exc}", hint="check --cron") from exc
    return sid


async def listing(client: Client, queue: str) -> list[ScheduledRegression]:
    found = []
    async for entry in await client.list_schedules():
        if not entry.id.startswith(f"{queue}-regress-"):
            continue
        described = await client.get_schedule_handle(entry.id).describe()
        found.append(
            ScheduledRegression(
                schedule_id=entry.id,
                candidate=str(await described.memo_value("candidate", "")),
                team=str(await described.memo_value("team", "")),
                cron=str(await described.memo_value("cron", "")),
                repo=str(await described.memo_value("repo", "")),
                next_runs=[t.isoformat() for t in described.info.next_action_times[:3]],
                paused=described.schedule.state.paused,
            )
        )
    return sorted(found, key=lambda s: s.schedule_id)


async def remove(client: Client, queue: str, sid: str) -> None:
    known = {s.schedule_id for s in await listing(client, queue)}
    if sid not in known:
        raise NotFound(f"no scheduled regression {sid}", hint="`corral regress schedules` lists them")
    await client.get_schedule_handle(sid).delete()


@activity.defn(name="regress")
async def regress_activity(job: RegressJob) -> str:
    """The scheduled regression on this host: the same call as a manual `corral regress`."""
    return await asyncio.to_thread(_regress, job)


def _regress(job: RegressJob) -> str:
    from corral.regress.suite import SuiteOptions, run_and_report
    from corral.scope import resolve_scope
    from corral.services import Services
    from corral.settings import load_settings

    settings = load_settings()
    services = Services(settings, None, resolve_scope(settings, job.team, Path(job.repo)))
    try:
        options = SuiteOptions(
            candidate=job.candidate,
            since=timedelta(seconds=float(job.options.get("since_seconds", 7 * 86400))),
            project=job.options.get("project"),
            epochs=job.options.get("epochs"),
            playbooks=Path(job.options["playbooks"]) if job.options.get("playbooks") else None,
            created_by="schedule",
        )
        suite = run_and_report(services, options, Path(str(job.options["output"])))
    finally:
        services.close()
    return suite.verdict
