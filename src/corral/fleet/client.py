"""The Temporal client side: connect (failing at once, never falling back), start a run's workflow,
send it a decision, read the host registry.

corral's commands are synchronous; each call here runs its own event loop (`blocking`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from corral.errors import FleetError, SignalRefused
from corral.fleet import FleetTarget
from corral.fleet.types import Decision, HostStatus, RunJob

T = TypeVar("T")

CONNECT_TIMEOUT = 10.0


def blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to its end from synchronous code, also from a thread that runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def connect(target: FleetTarget) -> Client:
    try:
        return await asyncio.wait_for(
            Client.connect(target.address, namespace=target.namespace), CONNECT_TIMEOUT
        )
    except (RuntimeError, OSError, TimeoutError) as exc:
        raise FleetError(
            f"cannot reach the Temporal server at {target.address} (from {target.source}): "
            f"{str(exc) or type(exc).__name__}",
            hint="start it or fix the address; unset CORRAL_TEMPORAL_ADDRESS (and [stores] temporal) to "
            "run in-process. corral never runs in-process instead on its own",
        ) from exc


async def start_run(client: Client, job: RunJob) -> WorkflowHandle[Any, Any]:
    """The run's workflow: its id is the run id, and its memo carries it too."""
    return await client.start_workflow(
        "CorralRun",
        job,
        id=job.run_id,
        task_queue=job.queue,
        memo={"corral_run_id": job.run_id, "task": job.task[:200]},
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )


async def _running(client: Client, run_id: str) -> WorkflowHandle[Any, Any]:
    handle = client.get_workflow_handle(run_id)
    try:
        described = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise SignalRefused(
                f"run {run_id} has no workflow on Temporal",
                hint="it was not submitted to this Temporal server and namespace; "
                "check CORRAL_TEMPORAL_ADDRESS",
            ) from exc
        raise FleetError(f"Temporal refused to describe run {run_id}: {exc.message}") from exc
    if described.status != WorkflowExecutionStatus.RUNNING:
        status = described.status.name.lower() if described.status else "unknown"
        raise SignalRefused(
            f"run {run_id}'s workflow is {status}: it waits for no decision",
            hint="see `corral show RUN`",
        )
    return handle


async def waiting_for(client: Client, run_id: str) -> str:
    """What decision the run's workflow waits for now: `approval`, `promotion`, or empty."""
    handle = await _running(client, run_id)
    waiting: str = await handle.query("waiting", result_type=str)
    return waiting


CATCH_UP_SECONDS = 30.0
"""How long a workflow still reporting its last step may take to start waiting (the step's result
reaches Temporal a moment after the run's phase is recorded, or after a server restart)."""


async def require_waiting(client: Client, run_id: str, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + CATCH_UP_SECONDS
    waiting = await waiting_for(client, run_id)
    while not waiting and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.25)
        waiting = await waiting_for(client, run_id)
    if waiting != what:
        now = f"waits for {waiting}" if waiting else "is not waiting for a decision (it is still working)"
        raise SignalRefused(
            f"run {run_id} is not waiting for {what}: its workflow {now}",
            hint="see `corral show RUN`; a decision is sent only when the run waits for it",
        )


async def decide(client: Client, run_id: str, decision: Decision) -> None:
    handle = await _running(client, run_id)
    await handle.signal("decide", decision)


async def hosts(client: Client, queue: str) -> list[HostStatus]:
    """Every host of the fleet on `queue` that registered and has not stopped, from the memo of its
    registry workflow (readable while no worker runs)."""
    found: list[HostStatus] = []
    query = 'WorkflowType = "CorralHost" AND ExecutionStatus = "Running"'
    async for execution in client.list_workflows(query):
        memo = await execution.memo_value("status", None, type_hint=HostStatus)
        if isinstance(memo, HostStatus) and memo.fleet == queue:
            found.append(memo)
    return sorted(found, key=lambda h: h.host_id)
