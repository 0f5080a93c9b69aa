"""Scale-out: runs as Temporal workflows over a fleet of sandbox hosts, each running `corral worker`.

Configured by `CORRAL_TEMPORAL_ADDRESS` or `[stores] temporal`; without either every run stays
in-process (the embedded default), and with either nothing ever falls back to in-process silently.

One workflow per run, its id the run id (`corral.fleet.workflows`). The first activity, `claim`, runs
on the shared dispatch queue: a host with a free slot takes it and answers with its own task queue,
where every step that needs the sandbox then runs (`corral.fleet.host`), so a run's worktree and
containers stay on one host. A host that dies stops heartbeating; the workflow then starts the run
again from a clean start on another host. Human decisions are signals (`corral.fleet.decisions`), sent
after the delivery rules accepted them; the delivery steps after them run on any host
(`corral.fleet.delivery`).
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.config import Config
from corral.settings import Settings


def host_queue(queue: str, host_id: str) -> str:
    """The task queue only `host_id`'s worker polls (its sandbox steps), and its registry entry's id."""
    return f"{queue}-host-{host_id}"


@dataclass(frozen=True)
class FleetTarget:
    address: str
    namespace: str
    source: str
    """Where the address came from (`CORRAL_TEMPORAL_ADDRESS` or a corral.toml), for error messages."""
    queue: str = "corral"
    """The shared task queue: run workflows, `claim`, the delivery steps, the host registry, schedules."""


def fleet_target(settings: Settings, config: Config | None = None) -> FleetTarget | None:
    """The Temporal server runs go to, or None: in-process. The environment wins over corral.toml."""
    if settings.temporal_address:
        return FleetTarget(
            settings.temporal_address,
            settings.temporal_namespace,
            "CORRAL_TEMPORAL_ADDRESS",
            settings.temporal_queue,
        )
    if config is not None and config.stores.temporal:
        return FleetTarget(
            config.stores.temporal, settings.temporal_namespace, "[stores] temporal", settings.temporal_queue
        )
    return None
