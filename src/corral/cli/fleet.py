"""`corral worker` (one per sandbox host) and `corral workers` (the fleet's hosts)."""

from __future__ import annotations

import socket
import time
from typing import Annotated, Any

import typer

from corral.cli import JsonFlag, ScopeRepoOption, emit_json, err, out
from corral.display import visible_line
from corral.errors import FleetError

LOST_AFTER = 15.0
"""A host silent for this long (its status comes every couple of seconds) is shown as lost."""


def _target(repo: Any = None) -> Any:
    from corral.fleet import fleet_target
    from corral.scope import resolve_scope
    from corral.settings import load_settings

    settings = load_settings()
    target = fleet_target(settings, resolve_scope(settings, None, repo).config)
    if target is None:
        raise FleetError(
            "no Temporal server is configured, so there is no fleet",
            hint="set CORRAL_TEMPORAL_ADDRESS=host:port (or [stores] temporal in corral.toml)",
        )
    return settings, target


def host_state(status: Any, now: float) -> str:
    if now - status.updated > LOST_AFTER:
        return "lost"
    if not status.docker:
        return "refusing: Docker Engine down"
    if status.draining:
        return "draining"
    return "full" if status.load >= status.max_runs else "ready"


def register(app: typer.Typer) -> None:
    @app.command()
    def worker(
        max_runs: Annotated[int, typer.Option("--max-runs", min=1, help="Runs this host takes at once.")] = 2,
        host_id: Annotated[
            str | None, typer.Option("--host-id", help="This host's name in the fleet (default: hostname).")
        ] = None,
        warm: Annotated[
            int, typer.Option("--warm", min=0, help="Pre-created, self-tested sandboxes to keep per image.")
        ] = 0,
        drain_seconds: Annotated[
            float, typer.Option("--drain-seconds", help="On SIGTERM, how long held runs may finish.")
        ] = 600.0,
        repo: ScopeRepoOption = None,
    ) -> None:
        """Serve runs on this sandbox host until SIGTERM, then drain: finish or hand back what it holds."""
        from corral.fleet.worker import WorkerOptions, run_worker

        settings, target = _target(repo)
        name = host_id or settings.host_id or socket.gethostname()
        settings = settings.model_copy(update={"host_id": name})
        options = WorkerOptions(host_id=name, max_runs=max_runs, warm=warm, drain_seconds=drain_seconds)
        run_worker(settings, target, options, lambda m: err.print(m, highlight=False, markup=False))

    @app.command()
    def workers(repo: ScopeRepoOption = None, as_json: JsonFlag = False) -> None:
        """The fleet's hosts: capacity, load, warm pool, and whether each takes work."""
        from corral.fleet.client import blocking, connect, hosts

        _settings, target = _target(repo)

        async def listing() -> list[Any]:
            return await hosts(await connect(target), target.queue)

        found = blocking(listing())
        now = time.time()
        rows = [
            {
                "host_id": h.host_id,
                "state": host_state(h, now),
                "capacity": h.max_runs,
                "load": h.load,
                "runs": h.runs,
                "warm": h.warm,
                "docker": h.docker,
                "docker_error": h.docker_error,
                "task_queue": h.task_queue,
                "seen_seconds_ago": round(now - h.updated, 1),
            }
            for h in found
        ]
        if as_json:
            emit_json(rows)
            return
        if not rows:
            out.print(
                f"no hosts on {target.address}: start `corral worker` on each sandbox host", highlight=False
            )
        for row in rows:
            out.print(
                f"{visible_line(row['host_id']):<20} {row['state']:<30} "
                f"load {row['load']}/{row['capacity']}  warm {row['warm']}  "
                f"seen {row['seen_seconds_ago']}s ago",
                highlight=False,
                markup=False,
            )
            if row["docker_error"]:
                out.print(f"    {visible_line(row['docker_error'])}", highlight=False, markup=False)
