"""`corral regress schedule|schedules|unschedule`: the regression as a Temporal Schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from corral.cli import _services, emit_json, out
from corral.errors import ConfigError, FleetError


def scheduled(
    action: str,
    candidate: str | None,
    cron: str | None,
    options: dict[str, Any],
    output: Path | None,
    team: str | None,
    repo: Path | None,
    as_json: bool,
) -> None:
    from corral.config import _require_dated, duration_seconds
    from corral.fleet import fleet_target
    from corral.fleet.client import blocking
    from corral.fleet.schedules import create, listing, remove, schedule_id
    from corral.fleet.types import RegressJob

    if action not in ("schedule", "schedules", "unschedule"):
        raise ConfigError(
            f"unknown action {action!r}", hint="use schedule, schedules or unschedule (or none: run it now)"
        )
    services = _services(team=team, repo=repo)
    try:
        target = fleet_target(services.settings, services.scope.config)
        if target is None:
            raise FleetError(
                "a scheduled regression needs Temporal, and none is configured",
                hint="set CORRAL_TEMPORAL_ADDRESS (or [stores] temporal), and run `corral worker` on a host",
            )
        if action == "schedules":
            found = blocking(_with(target, lambda c: listing(c, target.queue)))
            rows = [vars(s) for s in found]
            if as_json:
                emit_json(rows)
            for row in [] if as_json else rows:
                out.print(
                    f"{row['schedule_id']}  {row['cron']}  next {', '.join(row['next_runs'][:1]) or '-'}",
                    highlight=False,
                    markup=False,
                )
            return
        if candidate is None:
            raise ConfigError("--candidate is required", hint="name the candidate's dated model id")
        sid = schedule_id(target.queue, services.team, candidate)
        if action == "unschedule":
            blocking(_with(target, lambda c: remove(c, target.queue, sid)))
            _say(as_json, {"removed": sid}, f"removed {sid}")
            return
        try:
            _require_dated(candidate)
        except ValueError as exc:
            raise ConfigError(str(exc), hint="pass the candidate's exact dated id") from exc
        if not cron:
            raise ConfigError("schedule needs --cron", hint='e.g. --cron "0 2 * * *" (02:00 every day)')
        repo_path = (repo or Path.cwd()).resolve()
        job = RegressJob(
            repo=str(repo_path),
            candidate=candidate,
            team=services.team,
            queue=target.queue,
            options={
                "since_seconds": duration_seconds(str(options["since"])),
                "project": options["project"],
                "epochs": options["epochs"],
                "playbooks": str(options["playbooks"].resolve()) if options["playbooks"] else None,
                # Where a manual `corral regress` run here puts its report.
                "output": str((output or services.settings.home / "regress").resolve()),
            },
        )
        made = blocking(_with(target, lambda c: create(c, job, cron)))
        _say(as_json, {"schedule_id": made, "cron": cron}, f"scheduled {made}: {cron}")
    finally:
        services.close()


async def _with(target: Any, call: Any) -> Any:
    from corral.fleet.client import connect

    return await call(await connect(target))


def _say(as_json: bool, data: dict[str, Any], text: str) -> None:
    if as_json:
        emit_json(data)
    else:
        out.print(text, highlight=False, markup=False)
