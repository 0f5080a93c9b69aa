"""A local deploy target: builds served on 127.0.0.1, recorded in one JSON file.

A staged deployment is a build of one commit (made by `builder`, in a sandbox: corral/delivery/build.py)
copied under `<root>/builds/<id>/out` and served by its own server process on its own port. Production
of a project is the symbolic link `<root>/projects/<project>/current`, served by one more server;
promotion and rollback replace that link atomically (`os.replace`), and the promotions are kept in
order, so a rollback goes back to the build production served before. A failed build is recorded as
`failed` and production is never touched by it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from corral.deploy import Deployment
from corral.deploy.serve import ensure_server, read_server, stop_server
from corral.errors import DeployError, NotFound, RunError
from corral.forge.jsonfile import locked_json

Builder = Callable[[str, Path], None]
"""`builder(commit, dest)` leaves the built output of `commit` in the new directory `dest`, or raises
`DeployError` with the build's message."""


class Deployments(BaseModel):
    deployments: list[Deployment] = []
    promotions: dict[str, list[str]] = {}
    """Per project, the deployment ids production served, oldest first; the last is current."""


def _human(approver: str, what: str) -> None:
    if not approver.startswith("human:"):
        raise RunError(
            f"{what} refused: {approver!r} is not a human approver",
            hint="promotion needs a recorded human approval (`corral deploy promote RUN`)",
        )


class LocalDeploy:
    """`Deployer` over `<root>/deployments.json` (root defaults to `Settings.home/'deploy'`)."""

    targets: tuple[str, ...] = ("preview", "staging")

    def __init__(self, root: Path, builder: Builder | None = None) -> None:
        self.root = root
        self.path = root / "deployments.json"
        self.builder = builder

    def _find(self, data: Deployments, deployment_id: str) -> Deployment:
        for dep in data.deployments:
            if dep.id == deployment_id:
                return dep
        raise NotFound(f"deployment {deployment_id!r} does not exist in {self.path}", hint="list deployments")

    def stage(self, *, run_id: str, ref: str, target: str) -> Deployment:
        """Record an agent-requested staging of a run's committed result (before any approval)."""
        if target not in self.targets:
            raise RunError(
                f"deploy target {target!r} is not a staging target",
                hint=f"stage to one of {', '.join(self.targets)}; production is reached only by promote",
            )
        dep_id = "dep_" + secrets.token_hex(6)
        dep = Deployment(id=dep_id, run_id=run_id, ref=ref, target=target, url=f"local://{target}/{dep_id}")
        with locked_json(self.path, Deployments) as data:
            data.deployments.append(dep)
        return dep

    # ---- delivery ------------------------------------------------------------------------------

    def _build_dir(self, dep_id: str) -> Path:
        return self.root / "builds" / dep_id

    def _project_dir(self, project: str) -> Path:
        return self.root / "projects" / project

    def stage_commit(self, *, run_id: str, project: str, commit: str, branch: str) -> Deployment:
        if self.builder is None:
            raise DeployError("this local deploy target has no builder", hint="open it through Services")
        dep = Deployment(
            id="dep_" + secrets.token_hex(6), run_id=run_id, ref=commit, target="preview", state="building",
            project=project,
        )  # fmt: skip
        with locked_json(self.path, Deployments) as data:
            data.deployments.append(dep)
        build_dir = self._build_dir(dep.id)
        build_dir.mkdir(parents=True, exist_ok=True)
        out = build_dir / "out"
        try:
            self.builder(commit, out)
            _pid, port = ensure_server(out, build_dir / "server.port")
        except DeployError as exc:
            self._update(dep.id, state="failed", error=exc.message)
            raise
        url = f"http://127.0.0.1:{port}/"
        return self._update(dep.id, state="staged", url=url, preview_url=url)

    def _update(self, deployment_id: str, **fields: str) -> Deployment:
        with locked_json(self.path, Deployments) as data:
            dep = self._find(data, deployment_id)
            for key, value in fields.items():
                setattr(dep, key, value)
            return dep.model_copy()

    def production_url(self, project: str) -> str:
        current = self._project_dir(project) / "current"
        if not current.is_symlink():
            return ""
        _pid, port = ensure_server(current, self._project_dir(project) / "server.port")
        return f"http://127.0.0.1:{port}/"

    def _switch(self, project: str, dep_id: str) -> str:
        """Point production at `dep_id`'s build in one rename, then make sure it is served."""
        pdir = self._project_dir(project)
        pdir.mkdir(parents=True, exist_ok=True)
        tmp = pdir / f"current.{secrets.token_hex(4)}"
        os.symlink(self._build_dir(dep_id) / "out", tmp)
        os.replace(tmp, pdir / "current")
        return self.production_url(project)

    def promote(self, deployment_id: str, *, approver: str) -> Deployment:
        _human(approver, f"promote of {deployment_id}")
        with locked_json(self.path, Deployments) as data:
            dep = self._find(data, deployment_id)
            if dep.state != "staged":
                raise RunError(
                    f"deployment {deployment_id} is {dep.state}, not staged", hint="stage a new one"
                )
            if not dep.project:  # an agent-requested staging record: nothing was built to serve
                dep.state, dep.promoted_by = "promoted", approver
                dep.url = f"local://production/{dep.id}"
                return dep.model_copy()
            url = self._switch(dep.project, dep.id)
            history = data.promotions.setdefault(dep.project, [])
            for old in data.deployments:
                if old.project == dep.project and old.state == "promoted":
                    old.state = "retired"
            history.append(dep.id)
            dep.state, dep.promoted_by, dep.url = "promoted", approver, url
            return dep.model_copy()

    def rollback(self, *, project: str, approver: str) -> Deployment:
        _human(approver, f"rollback of {project}")
        with locked_json(self.path, Deployments) as data:
            history = data.promotions.get(project, [])
            if len(history) < 2:
                raise RunError(
                    f"project {project!r} has no earlier production build to roll back to",
                    hint="a rollback needs two promotions; see `corral deploy list`",
                )
            current, previous = self._find(data, history[-1]), self._find(data, history[-2])
            url = self._switch(project, previous.id)
            history.pop()
            current.state = "retired"
            previous.state, previous.url = "promoted", url
            return previous.model_copy()

    def production(self, project: str) -> Deployment | None:
        with locked_json(self.path, Deployments, write=False) as data:
            history = data.promotions.get(project, [])
            return self._find(data, history[-1]).model_copy() if history else None

    def get(self, deployment_id: str) -> Deployment:
        with locked_json(self.path, Deployments, write=False) as data:
            return self._find(data, deployment_id)

    def stop_previews(self, ended: Callable[[str], bool]) -> list[str]:
        """Stop the preview server of each deployment whose run has `ended` (nobody will promote it;
        a promoted build stays served as production, by its project's server). Returns their ids."""
        if not self.path.exists():
            return []
        stopped: list[str] = []
        with locked_json(self.path, Deployments, write=False) as data:
            deployments = list(data.deployments)
        for dep in deployments:
            build_dir = self._build_dir(dep.id)
            port_file = build_dir / "server.port"
            if not ended(dep.run_id) or read_server(port_file, build_dir / "out") is None:
                continue
            stop_server(port_file, build_dir / "out")
            stopped.append(dep.id)
        return stopped

    def list(self, run_id: str | None = None) -> list[Deployment]:
        with locked_json(self.path, Deployments, write=False) as data:
            return [d for d in data.deployments if run_id is None or d.run_id == run_id]
