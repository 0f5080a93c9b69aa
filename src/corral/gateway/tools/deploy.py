"""`deploy.*`: stage (a request, carried out by corral after the checks); promote, never grantable to agents.

`stage` does not deploy anything while the agent runs: at that point nothing is committed and the
branch can still move. It records the request on the run's binding (and in the audit log); the run
lifecycle stages the committed SHA once the checks have passed (`corral.runs`). `promote` reaches only
the deployments of the caller's own run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from corral.deploy import DeployTarget
from corral.errors import NotFound, RunError
from corral.events import DeployPromoted, DeployRequested
from corral.gateway.tools import BuiltinTool, BuiltinUpstream, RunBinding, obj, unbound
from corral.gateway.upstreams import Caller


def deploy_upstream(deploy: DeployTarget, bindings: Mapping[str, RunBinding]) -> BuiltinUpstream:
    def stage_scope(args: dict[str, Any], run: RunBinding) -> str | None:
        return unbound(run, "deployment")

    def promote_scope(args: dict[str, Any], run: RunBinding) -> str | None:
        why = unbound(run, "deployment")
        if why is not None:
            return why
        try:
            owner = deploy.get(str(args.get("deployment_id"))).run_id
        except NotFound:
            owner = None
        if owner == run.run_id:
            return None
        return f"deployment {args.get('deployment_id')!r} is not this run's: a run reaches only its own"

    def stage(args: dict[str, Any], caller: Caller, run: RunBinding) -> dict[str, Any]:
        refusal = stage_scope(args, run)
        if refusal is not None:
            raise RunError(refusal, hint="stage from a run's own gateway")
        target = args.get("target", "preview")
        if target not in deploy.targets:
            raise RunError(
                f"deploy target {target!r} is not a staging target",
                hint=f"stage to one of {', '.join(deploy.targets)}; production is reached only by promote",
            )
        if target not in run.stage_requests:
            run.stage_requests.append(target)
        if run.sink is not None:
            run.sink.emit(DeployRequested(target=target, branch=run.head, actor="agent"))
        return {
            "target": target,
            "state": "requested",
            "note": "corral stages this run's committed result here once its checks pass",
        }

    def promote(args: dict[str, Any], caller: Caller, run: RunBinding) -> dict[str, Any]:
        refusal = promote_scope(args, run)
        if refusal is not None:
            raise RunError(refusal, hint="promote only this run's deployments")
        dep = deploy.promote(args["deployment_id"], approver=caller.principal)
        if run.sink is not None:
            run.sink.emit(DeployPromoted(deployment_id=dep.id, url=dep.url, actor=caller.principal))
        return {"deployment_id": dep.id, "state": dep.state, "url": dep.url}

    tools = [
        BuiltinTool(
            "stage",
            "Ask corral to stage this run's result on a non-production target once its checks pass.",
            obj({"target": {"type": "string", "enum": list(deploy.targets), "default": "preview"}}, []),
            "write",
            stage,
            stage_scope,
        ),
        BuiltinTool(
            "promote",
            "Promote a staged deployment to production. Needs a human principal; never granted to agents.",
            obj({"deployment_id": {"type": "string"}}, ["deployment_id"]),
            "write",
            promote,
            promote_scope,
        ),
    ]
    return BuiltinUpstream("deploy", tools, bindings)
