"""Human decisions on a fleet run: the delivery rules (`corral.delivery.approve`, `corral.review`)
accept and record them exactly as in-process, then the run's workflow gets a signal and acts.

A run whose workflow does not exist, has ended, or waits for something else refuses the decision
before anything is recorded (`SignalRefused`).
"""

from __future__ import annotations

import time

from corral.config import Config
from corral.errors import FleetError
from corral.fleet import FleetTarget, fleet_target
from corral.services import Services
from corral.state.machine import Phase
from corral.state.models import RunRecord

WAIT_SECONDS = 300.0
"""How long `corral approve` follows the workflow's merge (and stage) before it says where it is."""


class FleetDecisions:
    def __init__(self, services: Services, target: FleetTarget, run: RunRecord) -> None:
        self.services = services
        self.target = target
        self.run = run

    def require_waiting(self, what: str) -> None:
        from corral.fleet.client import blocking, connect, require_waiting

        async def check() -> None:
            await require_waiting(await connect(self.target), self.run.run_id, what)

        blocking(check())

    def send(self, action: str, actor: str) -> None:
        from corral.fleet.client import blocking, connect, decide
        from corral.fleet.types import Decision

        async def signal() -> None:
            await decide(await connect(self.target), self.run.run_id, Decision(action, actor))

        blocking(signal())

    def wait_past(self, *phases: Phase | None, timeout: float = WAIT_SECONDS) -> RunRecord:
        """The run once its workflow moved it out of `phases` (the steps after a decision)."""
        waiting = {p for p in phases if p is not None}
        deadline = time.monotonic() + timeout
        while True:
            record = self.services.find_run(self.run.run_id)
            if record.phase not in waiting:
                return record
            if time.monotonic() > deadline:
                raise FleetError(
                    f"run {record.run_id} is still {record.phase.value}: "
                    "its workflow has not finished the step",
                    hint="`corral workers` shows whether any host takes work; the workflow goes on by itself",
                )
            time.sleep(0.25)


def fleet_decisions(services: Services, run: RunRecord, config: Config) -> FleetDecisions | None:
    """How to reach the run's workflow, or None for a run that ran in-process."""
    if not run.meta.get("workflow_id"):
        return None
    target = fleet_target(services.settings, config)
    if target is None:
        raise FleetError(
            f"run {run.run_id} is a Temporal workflow, but no Temporal server is configured here",
            hint="set CORRAL_TEMPORAL_ADDRESS (or [stores] temporal) to the server it was submitted to",
        )
    return FleetDecisions(services, target, run)
