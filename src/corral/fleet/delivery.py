"""The delivery steps of a run's workflow, on any host: merge, stage and promote after a recorded
human decision (the same functions `corral approve` and `corral deploy promote` use in-process), and
`fail_run` when the workflow gives up on a run.

Each is idempotent, and each start is audited with its attempt, so a retry shows in the run's audit
and finds its work done instead of doing it twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from temporalio import activity

from corral.errors import CorralError
from corral.events import FleetActivity
from corral.fleet.types import DeliveryArgs
from corral.scope import resolve_scope
from corral.services import Services
from corral.settings import Settings
from corral.state.machine import AT_REST, TERMINAL, Phase


class DeliveryActivities:
    def __init__(self, settings: Settings, host_id: str, services: Services | None = None) -> None:
        self.settings = settings
        self.host_id = host_id
        self.services = services or Services(settings)
        """The worker's: each step borrows its stores (`Services.for_run`)."""

    def activities(self) -> list[Callable[..., object]]:
        return [self.merge, self.stage, self.promote, self.fail_run]

    @activity.defn(name="merge")
    async def merge(self, args: DeliveryArgs) -> str:
        from corral.delivery.approve import merge_approved

        return await self._step("merge", args, merge_approved)

    @activity.defn(name="stage")
    async def stage(self, args: DeliveryArgs) -> str:
        from corral.delivery.approve import stage_merged

        return await self._step("stage", args, stage_merged)

    @activity.defn(name="promote")
    async def promote(self, args: DeliveryArgs) -> str:
        from corral.delivery.approve import promote_staged

        return await self._step("promote", args, promote_staged)

    @activity.defn(name="fail_run")
    async def fail_run(self, args: DeliveryArgs) -> str:
        return await self._step("fail_run", args, _fail)

    async def _step(self, name: str, args: DeliveryArgs, fn: Callable[[Services, str, str], Phase]) -> str:
        info = activity.info()

        def work() -> str:
            services = self.services.for_run(None, resolve_scope(self.settings, args.team, Path(args.repo)))
            try:
                recorder = services.audit().for_run(args.run_id, team=services.team)
                try:
                    recorder.emit(
                        FleetActivity(
                            activity=name,
                            attempt=info.attempt,
                            host_id=self.host_id,
                            workflow_id=info.workflow_id,
                            workflow_run_id=info.workflow_run_id,
                        ),
                        durable=True,
                    )
                finally:
                    recorder.close()
                actor = args.reason if name == "fail_run" else args.actor
                return fn(services, args.run_id, actor).value
            finally:
                services.close()

        return await asyncio.to_thread(work)


def _fail(services: Services, run_id: str, reason: str) -> Phase:
    """The workflow gave up (its hosts kept dying, or a step failed outside the run's own handling)."""
    from corral.gc import record_failure_in_audit

    run = services.find_run(run_id)
    if run.phase in AT_REST | TERMINAL:
        return run.phase
    why = f"the fleet gave up on it: {reason}"
    try:
        services.state().transition(run.run_id, Phase.FAILED, why, expect=run.phase)
    except CorralError:
        return services.find_run(run_id).phase
    record_failure_in_audit(services.audit(), run.run_id, run.phase.value, why)
    return Phase.FAILED
