"""`corral worker`: one long-lived process per sandbox host.

It serves the shared dispatch queue (run workflows, `claim`, the delivery steps, the host registry)
and its own host queue (the sandbox steps), takes at most `max_runs` runs at once, keeps its imports
and its state and audit stores open for every run and step (each run opens a Docker client of its
own, `Services.for_run`), and signals its status to its registry workflow for `corral workers`. A host
whose Docker Engine is down refuses every claim and says so. On SIGTERM it drains: it takes nothing
new, lets the runs it holds finish, and after `drain_seconds` hands back the rest (the workflow starts
them again on another host). On start it reaps what an earlier life of this host left (`corral gc`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from corral.errors import CorralError
from corral.fleet import FleetTarget, host_queue
from corral.fleet.client import connect
from corral.fleet.delivery import DeliveryActivities
from corral.fleet.host import HostActivities
from corral.fleet.types import HostStatus
from corral.fleet.workflows import HostWorkflow, RegressWorkflow, RunWorkflow
from corral.services import Services
from corral.settings import Settings

Progress = Callable[[str], None]


@dataclass(frozen=True)
class WorkerOptions:
    host_id: str
    max_runs: int = 2
    warm: int = 0
    """`--warm N`: pre-created, self-tested sandboxes kept per image (`corral.sandbox.warm`; 0: none)."""
    drain_seconds: float = 600.0
    status_seconds: float = 2.0


def docker_problem() -> str:
    """Why this host's Docker Engine cannot be used now; empty when it answers."""
    from corral.sandbox.images import docker_client

    try:
        docker_client(timeout=5).close()
    except CorralError as exc:
        return exc.message
    return ""


def reap(services: Services) -> int:
    """What an earlier life of this worker left here (containers, sockets, worktrees): gc's job."""
    from corral.gc import collect

    try:
        report = collect(services.settings, services.state(), services.sandbox_backend(), services.audit())
        return len(report.containers) + len(report.worktrees) + len(report.socket_dirs)
    except CorralError:
        return 0


class FleetWorker:
    def __init__(
        self, settings: Settings, target: FleetTarget, options: WorkerOptions, progress: Progress
    ) -> None:
        self.settings = settings
        self.target = target
        self.options = options
        self.progress = progress
        self.services = Services(settings, progress)
        """The process's stores, opened once and borrowed by every run and step (`Services.for_run`),
        and the warm pool's Docker client."""
        self.host = HostActivities(settings, target.queue, options.host_id, options.max_runs, self.services)
        self.host.warm = options.warm
        self.delivery = DeliveryActivities(settings, options.host_id, self.services)
        self._stop = asyncio.Event()

    async def serve(self) -> None:
        settings, options = self.settings, self.options
        client = await connect(self.target)
        settings.home.mkdir(parents=True, exist_ok=True)
        settings.host_id_file.write_text(options.host_id + "\n")
        self.host.docker_error = await asyncio.to_thread(docker_problem)
        if not self.host.docker_error:
            reaped = await asyncio.to_thread(reap, self.services)
            if reaped:
                self.progress(f"reaped {reaped} leftover(s) of an earlier life of host {options.host_id}")
            if options.warm:
                self._start_pool(options.warm)
        from corral.fleet.schedules import regress_activity

        dispatch = Worker(
            client,
            task_queue=self.target.queue,
            workflows=[RunWorkflow, HostWorkflow, RegressWorkflow],
            activities=[self.host.claim, *self.delivery.activities(), regress_activity],
            max_concurrent_activities=8,
            identity=f"{options.host_id}/dispatch",
        )
        on_host = Worker(
            client,
            task_queue=self.host.task_queue,
            activities=self.host.activities(),
            max_concurrent_activities=options.max_runs * 4 + 4,
            graceful_shutdown_timeout=timedelta(seconds=5),
            identity=f"{options.host_id}/host",
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        runs = [asyncio.ensure_future(dispatch.run()), asyncio.ensure_future(on_host.run())]
        status = asyncio.ensure_future(self._report(client))
        state = "refusing work: " + self.host.docker_error if self.host.docker_error else "ready"
        self.progress(
            f"host {options.host_id}: {state}; up to {options.max_runs} runs; queue {self.host.task_queue}"
        )
        await self._stop.wait()
        self.host.draining = True
        self.progress(f"host {options.host_id}: draining ({len(self.host.claims)} run(s) held)")
        await self._publish(client)
        await dispatch.shutdown()
        await self._drain()
        await on_host.shutdown()
        status.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await status
        for task in runs:
            with contextlib.suppress(Exception):
                await task
        await self._publish(client, stopped=True)
        if self.host.warm_pool is not None:
            await asyncio.to_thread(self.host.warm_pool.close)
        await asyncio.to_thread(self.services.close)
        self.progress(f"host {options.host_id}: stopped")

    def _start_pool(self, size: int) -> None:
        """The host's warm pool, as `corral server --warm N` keeps one: filled now, claimed by every run
        this worker holds, removed when it stops (and by `corral gc` if it is killed)."""
        from corral.web.serve import start_pool

        self.host.warm_pool = start_pool(self.services, size)

    async def _drain(self) -> None:
        deadline = asyncio.get_running_loop().time() + self.options.drain_seconds
        while self.host.held and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
        if self.host.held:
            self.progress(
                f"handing back {', '.join(sorted(self.host.held))}: the fleet starts them elsewhere"
            )
            self.host.hand_back = True

    async def _report(self, client: Client) -> None:
        while True:
            self.host.docker_error = await asyncio.to_thread(docker_problem)
            with contextlib.suppress(Exception):
                await self._publish(client)
            await asyncio.sleep(self.options.status_seconds)

    async def _publish(self, client: Client, *, stopped: bool = False) -> None:
        status: HostStatus = self.host.status()
        status.stopped = stopped
        await client.start_workflow(
            "CorralHost",
            status,
            id=host_queue(self.target.queue, self.options.host_id),
            task_queue=self.target.queue,
            start_signal="status",
            start_signal_args=[status],
        )


def run_worker(settings: Settings, target: FleetTarget, options: WorkerOptions, progress: Progress) -> None:
    asyncio.run(FleetWorker(settings, target, options, progress).serve())
