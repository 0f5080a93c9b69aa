"""A host's activities: `claim` a run (on the shared queue) and its sandbox steps (on the host's own
queue): prepare, agent, checks, deliver, each one step of `corral.runs._Run`.

The run lives in this process between its steps (`_Held`): its worktree, sockets, proxy, gateway and
containers are here. A step for a run this process does not hold (it restarted) says `HostLost`, and the
workflow starts the run again elsewhere, cleanly: the branch and any worktree an earlier attempt left
are removed first, so the run commits once, and its pull request (found by branch) is opened once.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from corral.events import CheckResult, RunAttempt
from corral.fleet import host_queue
from corral.fleet.types import Claim, HostStatus, StepArgs
from corral.run_request import Prepared, RunRequest
from corral.scope import resolve_scope
from corral.services import Services
from corral.settings import Settings
from corral.state.machine import Phase
from corral.workspace import delete_branch, inspect_repo, remove_worktree, run_git

if TYPE_CHECKING:
    from corral.runs import _Run
    from corral.sandbox.warm import WarmPool

T = TypeVar("T")

CLAIM_HOLD_SECONDS = 120.0
"""A slot claimed for a run whose prepare step never came (its workflow moved on) is freed after this."""


@dataclass
class _Held:
    run: _Run
    services: Services
    prepared: Prepared | None = None
    check: CheckResult | None = None
    handed_back: bool = False


class HostActivities:
    def __init__(
        self, settings: Settings, queue: str, host_id: str, max_runs: int, services: Services | None = None
    ) -> None:
        self.settings = settings
        self.services = services or Services(settings)
        """The worker's: every run held here borrows its stores (`Services.for_run`)."""
        self.host_id = host_id
        self.max_runs = max_runs
        self.fleet = queue
        self.task_queue = host_queue(queue, host_id)
        self.claims: dict[str, float] = {}
        """Runs this host said yes to (run id -> when), until they rest or end here."""
        self.held: dict[str, _Held] = {}
        self.draining = False
        self.hand_back = False
        """Set when a drain ran out of time: every step still running says `HandedBack`."""
        self.docker_error = ""
        """Why the Docker Engine is not usable here (the worker's status loop checks); empty: it is."""
        self.warm = 0
        self.warm_pool: WarmPool | None = None
        """`corral worker --warm N`: this host's pool, claimed by every run it holds (one per process)."""
        self._lock = threading.Lock()

    def activities(self) -> list[Callable[..., object]]:
        return [self.prepare, self.agent, self.checks, self.deliver]

    def status(self) -> HostStatus:
        with self._lock:
            runs = sorted(self.claims)
        return HostStatus(
            host_id=self.host_id,
            task_queue=self.task_queue,
            max_runs=self.max_runs,
            fleet=self.fleet,
            load=len(runs),
            runs=runs,
            docker=not self.docker_error,
            docker_error=self.docker_error,
            draining=self.draining,
            warm=self.warm,
            pid=os.getpid(),
            updated=time.time(),
        )

    # ---- the shared queue ----------------------------------------------------------------------

    @activity.defn(name="claim")
    async def claim(self, step: StepArgs) -> Claim:
        run_id = step.job.run_id
        with self._lock:
            now = time.monotonic()
            for stale in [
                r for r, at in self.claims.items() if r not in self.held and now - at > CLAIM_HOLD_SECONDS
            ]:
                del self.claims[stale]
            refusal = self._refusal(run_id)
            if refusal:
                raise ApplicationError(refusal, type="HostBusy")
            self.claims[run_id] = now
        return Claim(self.host_id, self.task_queue)

    def _refusal(self, run_id: str) -> str:
        if self.draining:
            return f"host {self.host_id} is draining"
        if self.docker_error:
            return f"host {self.host_id} refuses work: its Docker Engine is down ({self.docker_error})"
        if run_id not in self.claims and len(self.claims) >= self.max_runs:
            return f"host {self.host_id} is full ({self.max_runs} runs)"
        return ""

    # ---- the host's queue ----------------------------------------------------------------------

    @activity.defn(name="prepare")
    async def prepare(self, step: StepArgs) -> str:
        info = activity.info()
        return await self._beating(self._prepare, step, info.workflow_id, info.workflow_run_id)

    @activity.defn(name="agent")
    async def agent(self, step: StepArgs) -> str:
        return await self._beating(self._agent, step)

    @activity.defn(name="checks")
    async def checks(self, step: StepArgs) -> str:
        return await self._beating(self._checks, step)

    @activity.defn(name="deliver")
    async def deliver(self, step: StepArgs) -> str:
        return await self._beating(self._deliver, step)

    async def _beating(self, fn: Callable[..., T], *args: object) -> T:
        """Run a blocking step in a thread and heartbeat while it works: a host that dies stops
        heartbeating, and Temporal gives the run to another host."""
        beat = activity.info().heartbeat_timeout or timedelta(seconds=30)
        interval = min(1.0, max(0.2, beat.total_seconds() / 4))
        work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        while not work.done():
            if self.hand_back:
                # What the step holds here is reaped when this worker starts again (`reap`).
                raise ApplicationError(f"host {self.host_id} is shutting down", type="HandedBack")
            activity.heartbeat()
            await asyncio.wait({work}, timeout=interval)
        return work.result()

    def _prepare(self, step: StepArgs, workflow_id: str, workflow_run_id: str) -> str:
        job = step.job
        if step.attempt > 1 and (done := self._finished_before(step)):
            # The earlier attempt got the run to rest or to its end, and only its report to Temporal
            # was lost (a server restart, a host dying after the last step): never run it again.
            self._drop(job.run_id)
            return done
        held = self._open(step)
        run = held.run
        run.sink.emit(
            RunAttempt(
                attempt=step.attempt,
                host_id=self.host_id,
                task_queue=self.task_queue,
                workflow_id=workflow_id,
                workflow_run_id=workflow_run_id,
                previous_host=step.previous_host,
                reason=step.reason,
            ),
            durable=True,
        )
        if step.attempt > 1:
            _clean_start(run.repo_info.root, job.run_id)

        def begin() -> None:
            held.prepared = run.begin(created=True)

        return self._guarded(held, begin)

    def _agent(self, step: StepArgs) -> str:
        held = self._holding(step)
        assert held.prepared is not None
        prepared = held.prepared
        return self._guarded(held, lambda: held.run.agent_step(prepared))

    def _checks(self, step: StepArgs) -> str:
        held = self._holding(step)

        def checks() -> None:
            if not held.run.ended_empty():
                held.check = held.run.checks_step()

        return self._guarded(held, checks)

    def _deliver(self, step: StepArgs) -> str:
        held = self._holding(step)
        assert held.prepared is not None and held.check is not None
        prepared, check = held.prepared, held.check
        try:
            with held.run.ending():
                held.run.deliver_step(prepared, check)
        finally:
            self._drop(step.job.run_id)
        return held.run.phase.value

    def _guarded(self, held: _Held, step: Callable[[], None]) -> str:
        """One step; a failure ends the run here (recorded, everything given back)."""
        try:
            with held.run.ending(on_success=False):
                step()
        finally:
            if held.run.ended:
                self._drop(held.run.run_id)
        return held.run.phase.value

    def _open(self, step: StepArgs) -> _Held:
        """The run its submitter recorded, opened on this host as `corral.runs._Run`."""
        from corral.audit.observed import ObservedSink
        from corral.incident.evidence import EvidenceCollector
        from corral.runs import RunOrchestrator, _Run

        job = step.job
        repo = Path(job.repo)
        services = self.services.for_run(None, resolve_scope(self.settings, str(job.meta.get("team")), repo))
        request = RunRequest(
            task=job.task,
            repo=repo,
            playbook=Path(job.playbook) if job.playbook else None,
            config_path=Path(job.config_path) if job.config_path else None,
            requester=job.requester,
        )
        config, script = RunOrchestrator(services).prepare_inputs(request)
        state = services.state(config)
        record = state.get_run(job.run_id)
        info = inspect_repo(repo, config.project.base_branch)
        repo_info = replace(info, base_commit=record.base_commit, dirty_paths=())
        services.warm_pool = self.warm_pool
        backend = services.sandbox_backend()
        meta = {**record.meta, "host": self.host_id, "attempt": step.attempt}
        state.update_run(job.run_id, pid=os.getpid(), meta=meta)
        recorder = services.audit(config).for_run(job.run_id, team=config.project.team)
        evidence = EvidenceCollector()
        sink = ObservedSink(recorder, [evidence])
        run = _Run(
            services, request, config, script, repo_info, backend, job.run_id, recorder, sink, evidence
        )
        run.phase = Phase(record.phase)
        held = _Held(run, services)
        with self._lock:
            self.held[job.run_id] = held
        return held

    def _finished_before(self, step: StepArgs) -> str:
        from corral.state.machine import AT_REST, TERMINAL

        scope = resolve_scope(self.settings, str(step.job.meta.get("team", "default")), Path(step.job.repo))
        services = self.services.for_run(None, scope)
        try:
            phase = services.find_run(step.job.run_id).phase
        finally:
            services.close()
        return phase.value if phase in AT_REST | TERMINAL else ""

    def _holding(self, step: StepArgs) -> _Held:
        with self._lock:
            held = self.held.get(step.job.run_id)
        if held is None:
            raise ApplicationError(
                f"host {self.host_id} no longer holds run {step.job.run_id} (its worker restarted)",
                type="HostLost",
            )
        return held

    def _drop(self, run_id: str) -> None:
        with self._lock:
            held = self.held.pop(run_id, None)
            self.claims.pop(run_id, None)
        if held is not None:
            held.services.close()


def _clean_start(repo: Path, run_id: str) -> None:
    """Remove what an earlier attempt left of the run in the repository: any worktree on its branch
    (another host's, registered here when hosts share the repository) and the branch itself."""
    branch = f"refs/heads/corral/{run_id}"
    listing = run_git(["worktree", "list", "--porcelain"], cwd=repo).stdout
    path = ""
    for line in listing.splitlines():
        if line.startswith("worktree "):
            path = line.removeprefix("worktree ")
        elif line == f"branch {branch}" and path:
            remove_worktree(repo, Path(path))
    delete_branch(repo, f"corral/{run_id}")
