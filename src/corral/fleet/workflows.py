"""The workflows: one per run (`CorralRun`), one per host (`CorralHost`), and the scheduled regression.

Workflow code is replayed by Temporal, so it only decides: every effect is an activity, named by
string so that this module imports nothing of corral's components.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from corral.fleet.types import Claim, Decision, DeliveryArgs, HostStatus, RegressJob, RunJob, StepArgs

HOST_LOST = ("HostLost", "HandedBack")
"""ApplicationError types a host activity raises when the run it held is gone: retry elsewhere."""

_CLAIM_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=300), maximum_interval=timedelta(seconds=2)
)
"""A full, draining or Docker-less host refuses a claim; another (or the same, later) takes it."""
_DELIVERY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)
"""Merge, stage and promote are idempotent: a retry finds the work done rather than doing it twice."""
_DELIVERY_TIMEOUT = timedelta(minutes=15)

AT_REST = ("awaiting_approval",)
ENDED = ("failed", "rejected", "no_changes", "evaluated", "promoted")


def _team(job: RunJob) -> str:
    return str(job.meta.get("team", "default"))


def _host_lost(exc: ActivityError) -> bool:
    cause = exc.cause
    if isinstance(cause, TimeoutError):
        return True
    return isinstance(cause, ApplicationError) and cause.type in HOST_LOST


def _why(exc: ActivityError, host: str) -> str:
    cause = exc.cause
    if isinstance(cause, TimeoutError):
        return f"host {host} stopped answering ({cause.type.name.lower() if cause.type else 'timeout'})"
    detail = cause.message if isinstance(cause, ApplicationError) else exc.message
    return f"host {host}: {detail}"


@workflow.defn(name="CorralRun")
class RunWorkflow:
    def __init__(self) -> None:
        self._waiting = ""
        self._decision: Decision | None = None
        self._host = ""

    @workflow.run
    async def run(self, job: RunJob) -> str:
        phase = await self._on_hosts(job)
        while phase == "awaiting_approval":
            decision = await self._wait("approval")
            if decision.action == "reject":
                return "rejected"
            phase = await self._deliver("merge", job, decision)
            if phase == "merged":
                phase = await self._deliver("stage", job, decision)
        while phase == "staged":
            decision = await self._wait("promotion")
            phase = await self._deliver("promote", job, decision)
        return phase

    @workflow.signal
    def decide(self, decision: Decision) -> None:
        # The sender checked `waiting` and the delivery rules first; a late or stray signal is dropped
        # here rather than acted on.
        wanted = {"approval": ("approve", "reject"), "promotion": ("promote",)}.get(self._waiting, ())
        if decision.action in wanted and self._decision is None:
            self._decision = decision

    @workflow.query
    def waiting(self) -> str:
        """`approval`, `promotion`, or empty: what decision this run waits for now."""
        return self._waiting

    @workflow.query
    def host(self) -> str:
        return self._host

    async def _wait(self, what: str) -> Decision:
        self._waiting = what
        await workflow.wait_condition(lambda: self._decision is not None)
        decision, self._decision, self._waiting = self._decision, None, ""
        assert decision is not None
        return decision

    async def _deliver(self, step: str, job: RunJob, decision: Decision) -> str:
        args = DeliveryArgs(job.run_id, _team(job), job.repo, decision.actor)
        result: str = await workflow.execute_activity(
            step,
            args,
            task_queue=job.queue,
            start_to_close_timeout=_DELIVERY_TIMEOUT,
            retry_policy=_DELIVERY_RETRY,
        )
        return result

    async def _on_hosts(self, job: RunJob) -> str:
        """The sandbox steps on one host; a host lost mid-run means a clean start on another."""
        attempt, previous, reason = 1, "", ""
        while True:
            try:
                return await self._attempt(job, StepArgs(job, attempt, "", previous, reason))
            except ActivityError as exc:
                why = _why(exc, self._host or "?")
                if not _host_lost(exc) or attempt >= job.max_attempts:
                    args = DeliveryArgs(job.run_id, _team(job), job.repo, reason=why)
                    await workflow.execute_activity(
                        "fail_run",
                        args,
                        task_queue=job.queue,
                        start_to_close_timeout=_DELIVERY_TIMEOUT,
                        retry_policy=_DELIVERY_RETRY,
                    )
                    return "failed"
                attempt, previous, reason = attempt + 1, self._host, why

    async def _attempt(self, job: RunJob, step: StepArgs) -> str:
        claim: Claim = await workflow.execute_activity(
            "claim",
            step,
            result_type=Claim,
            task_queue=job.queue,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=_CLAIM_RETRY,
        )
        self._host = step.host_id = claim.host_id
        beat = timedelta(seconds=job.heartbeat_seconds)
        phase = ""
        for name in ("prepare", "agent", "checks", "deliver"):
            phase = str(
                await workflow.execute_activity(
                    name,
                    step,
                    result_type=str,
                    task_queue=claim.task_queue,
                    heartbeat_timeout=beat,
                    # A host that died between two steps never starts the next one.
                    schedule_to_start_timeout=beat * 2,
                    start_to_close_timeout=timedelta(hours=6),
                    retry_policy=RetryPolicy(maximum_attempts=1),
                )
            )
            if phase in ENDED or phase in AT_REST:
                return phase
        return phase


@workflow.defn(name="CorralHost")
class HostWorkflow:
    """One host's registry entry: its worker signals its status; `corral workers` reads the memo."""

    def __init__(self) -> None:
        self._status: HostStatus | None = None
        self._signals = 0

    @workflow.run
    async def run(self, status: HostStatus | None = None) -> None:
        if status is not None:
            self._record(status)
        await workflow.wait_condition(
            lambda: (self._status is not None and self._status.stopped) or self._signals >= 500
        )
        if self._status is not None and not self._status.stopped:
            workflow.continue_as_new(self._status)  # keeps the history short on a long-lived host

    @workflow.signal
    def status(self, status: HostStatus) -> None:
        self._record(status)

    @workflow.query
    def current(self) -> HostStatus | None:
        return self._status

    def _record(self, status: HostStatus) -> None:
        self._status = status
        self._signals += 1
        workflow.upsert_memo({"status": status})


@workflow.defn(name="CorralRegress")
class RegressWorkflow:
    """A `corral regress schedule` firing: the regression as one activity on any host."""

    @workflow.run
    async def run(self, job: RegressJob) -> str:
        result: str = await workflow.execute_activity(
            "regress",
            job,
            result_type=str,
            task_queue=job.queue,
            start_to_close_timeout=timedelta(hours=12),
            heartbeat_timeout=timedelta(minutes=5),
            retry_policy=RetryPolicy(maximum_attempts=2),
        )
        return result
