"""A local deploy target: staged deployments kept in one JSON file (the delivery issue adds a server)."""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import BaseModel

from corral.deploy import Deployment
from corral.errors import NotFound, RunError
from corral.forge.jsonfile import locked_json


class _Deployments(BaseModel):
    deployments: list[Deployment] = []


class LocalDeploy:
    """`DeployTarget` over `<root>/deployments.json` (root defaults to `Settings.home/'deploy'`)."""

    targets: tuple[str, ...] = ("preview", "staging")

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "deployments.json"

    def _find(self, data: _Deployments, deployment_id: str) -> Deployment:
        for dep in data.deployments:
            if dep.id == deployment_id:
                return dep
        raise NotFound(f"deployment {deployment_id!r} does not exist in {self.path}", hint="list deployments")

    def stage(self, *, run_id: str, ref: str, target: str) -> Deployment:
        if target not in self.targets:
            raise RunError(
                f"deploy target {target!r} is not a staging target",
                hint=f"stage to one of {', '.join(self.targets)}; production is reached only by promote",
            )
        dep_id = "dep_" + secrets.token_hex(6)
        dep = Deployment(id=dep_id, run_id=run_id, ref=ref, target=target, url=f"local://{target}/{dep_id}")
        with locked_json(self.path, _Deployments) as data:
            data.deployments.append(dep)
        return dep

    def promote(self, deployment_id: str, *, approver: str) -> Deployment:
        if not approver.startswith("human:"):
            raise RunError(
                f"promote of {deployment_id} refused: {approver!r} is not a human approver",
                hint="promotion needs a recorded human approval (`corral deploy promote RUN`)",
            )
        with locked_json(self.path, _Deployments) as data:
            dep = self._find(data, deployment_id)
            if dep.state != "staged":
                raise RunError(f"deployment {deployment_id} is already {dep.state}", hint="stage a new one")
            dep.state = "promoted"
            dep.promoted_by = approver
            dep.url = f"local://production/{dep.id}"
            return dep

    def get(self, deployment_id: str) -> Deployment:
        with locked_json(self.path, _Deployments, write=False) as data:
            return self._find(data, deployment_id)

    def list(self, run_id: str | None = None) -> list[Deployment]:
        with locked_json(self.path, _Deployments, write=False) as data:
            return [d for d in data.deployments if run_id is None or d.run_id == run_id]
