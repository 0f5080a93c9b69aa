"""`deploy.*`: stage (to a preview or staging target); promote, never grantable to agents."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from corral.deploy import DeployTarget
from corral.events import DeployPromoted, DeployStaged
from corral.gateway.tools import BuiltinTool, BuiltinUpstream, RunBinding, obj
from corral.gateway.upstreams import Caller


def deploy_upstream(deploy: DeployTarget, bindings: Mapping[str, RunBinding]) -> BuiltinUpstream:
    def stage(args: dict[str, Any], caller: Caller, run: RunBinding) -> dict[str, Any]:
        dep = deploy.stage(
            run_id=caller.run_id, ref=run.head or caller.run_id, target=args.get("target", "preview")
        )
        if run.sink is not None:
            run.sink.emit(DeployStaged(deployment_id=dep.id, url=dep.url, actor="agent"))
        return {"deployment_id": dep.id, "target": dep.target, "url": dep.url, "state": dep.state}

    def promote(args: dict[str, Any], caller: Caller, run: RunBinding) -> dict[str, Any]:
        dep = deploy.promote(args["deployment_id"], approver=caller.principal)
        if run.sink is not None:
            run.sink.emit(DeployPromoted(deployment_id=dep.id, url=dep.url, actor=caller.principal))
        return {"deployment_id": dep.id, "state": dep.state, "url": dep.url}

    tools = [
        BuiltinTool(
            "stage",
            "Stage this run's branch on a non-production target.",
            obj({"target": {"type": "string", "enum": list(deploy.targets), "default": "preview"}}, []),
            "write",
            stage,
        ),
        BuiltinTool(
            "promote",
            "Promote a staged deployment to production. Needs a human principal; never granted to agents.",
            obj({"deployment_id": {"type": "string"}}, ["deployment_id"]),
            "write",
            promote,
        ),
    ]
    return BuiltinUpstream("deploy", tools, bindings)
