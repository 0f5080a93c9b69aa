"""The Vercel deploy backend: stage a preview from the merged commit, promote it, roll back.

Endpoints (vercel.com/docs/rest-api), with `?teamId=` when `[deploy] team_id` is set:
- `POST /v13/deployments` with `gitSource` {type github, org, repo, ref, sha}: a preview, since no
  `target` is given;
- `GET /v13/deployments/{id}` polled until `readyState` is READY, or ERROR / CANCELED (a failure with
  Vercel's `errorMessage`; production is untouched);
- `POST /v10/projects/{projectId}/promote/{deploymentId}`: production, without a rebuild;
- `POST /v1/projects/{projectId}/rollback/{deploymentId}`: back to an earlier production deployment.
The token (`[deploy] token`, `env:VERCEL_TOKEN` by default) stays on the host. The deployments and the
order of promotions are also kept in `<root>/deployments.json`, so a rollback knows where to go back.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from corral.config import DeployConfig
from corral.deploy import Deployment
from corral.deploy.local import Deployments
from corral.errors import ConfigError, DeployError, NotFound, RunError
from corral.forge.jsonfile import locked_json

_DONE = ("READY", "ERROR", "CANCELED")


class VercelDeploy:
    targets: tuple[str, ...] = ("preview",)

    def __init__(
        self,
        config: DeployConfig,
        token: str,
        root: Path,
        client: httpx.Client | None = None,
    ) -> None:
        if not config.project_id or config.repository.count("/") != 1:
            raise ConfigError(
                "[deploy] backend vercel needs project_id and repository = 'owner/name'",
                hint="set both in corral.toml",
            )
        self.config = config
        self.path = root / "deployments.json"
        self.poll_seconds = config.poll_seconds
        self.http = client or httpx.Client(
            base_url=config.api_url.rstrip("/"), timeout=30.0, headers={"Authorization": f"Bearer {token}"}
        )

    def _call(self, method: str, path: str, what: str, json: Any = None) -> Any:
        params = {"teamId": self.config.team_id} if self.config.team_id else None
        try:
            response = self.http.request(method, path, params=params, json=json)
        except httpx.HTTPError as exc:
            raise DeployError(f"Vercel: could not {what}: {exc}", hint="check [deploy] api_url") from exc
        if response.status_code >= 400:
            try:
                error = response.json().get("error", {})
                text = f"{error.get('code', '')}: {error.get('message', '')}"
            except ValueError:
                text = response.text[:300]
            raise DeployError(
                f"Vercel refused to {what}: {response.status_code} {text}", hint="check the token and project"
            )
        return response.json() if response.content else {}

    def stage(self, *, run_id: str, ref: str, target: str) -> Deployment:
        raise RunError(
            "the Vercel backend stages merged commits only", hint="approve the run; corral stages it then"
        )

    def stage_commit(self, *, run_id: str, project: str, commit: str, branch: str) -> Deployment:
        org, repo = self.config.repository.split("/")
        body = {
            "name": self.config.project_id,
            "project": self.config.project_id,
            "gitSource": {"type": "github", "org": org, "repo": repo, "ref": branch, "sha": commit},
        }
        data = self._call("POST", "/v13/deployments", "create a deployment", body)
        dep = Deployment(
            id=str(data["id"]), run_id=run_id, ref=commit, target="preview", state="building", project=project
        )
        with locked_json(self.path, Deployments) as store:
            store.deployments.append(dep)
        deadline = time.monotonic() + self.config.timeout_seconds
        while str(data.get("readyState")) not in _DONE:
            if time.monotonic() > deadline:
                self._set(dep.id, state="failed", error="timed out waiting for READY")
                raise DeployError(f"Vercel deployment {dep.id} was not READY in time", hint="see Vercel")
            time.sleep(self.poll_seconds)
            data = self._call("GET", f"/v13/deployments/{dep.id}", "read the deployment")
        state = str(data["readyState"])
        if state != "READY":
            message = str(data.get("errorMessage") or data.get("errorCode") or state)
            self._set(dep.id, state="failed", error=f"{state}: {message}")
            raise DeployError(
                f"Vercel deployment {dep.id} ended {state}: {message}", hint="production is unchanged"
            )
        url = f"https://{data['url']}"
        return self._set(dep.id, state="staged", url=url, preview_url=url)

    def _set(self, dep_id: str, **fields: str) -> Deployment:
        with locked_json(self.path, Deployments) as store:
            dep = self._find(store, dep_id)
            for key, value in fields.items():
                setattr(dep, key, value)
            return dep.model_copy()

    def _find(self, store: Deployments, dep_id: str) -> Deployment:
        for dep in store.deployments:
            if dep.id == dep_id:
                return dep
        raise NotFound(f"deployment {dep_id!r} is not recorded in {self.path}", hint="list deployments")

    def _production_url(self, dep_id: str) -> str:
        data = self._call("GET", f"/v13/deployments/{dep_id}", "read the deployment")
        aliases = data.get("alias") or []
        return f"https://{aliases[0]}" if aliases else f"https://{data['url']}"

    def promote(self, deployment_id: str, *, approver: str) -> Deployment:
        if not approver.startswith("human:"):
            raise RunError(f"promote refused: {approver!r} is not a human approver", hint="approve it")
        project = self.config.project_id
        self._call("POST", f"/v10/projects/{project}/promote/{deployment_id}", "promote", {})
        url = self._production_url(deployment_id)
        with locked_json(self.path, Deployments) as store:
            dep = self._find(store, deployment_id)
            for old in store.deployments:
                if old.project == dep.project and old.state == "promoted":
                    old.state = "retired"
            store.promotions.setdefault(dep.project, []).append(dep.id)
            dep.state, dep.promoted_by, dep.url = "promoted", approver, url
            return dep.model_copy()

    def rollback(self, *, project: str, approver: str) -> Deployment:
        with locked_json(self.path, Deployments, write=False) as store:
            history = list(store.promotions.get(project, []))
        if len(history) < 2:
            raise RunError(f"project {project!r} has no earlier production deployment", hint="promote twice")
        vercel_project = self.config.project_id
        self._call("POST", f"/v1/projects/{vercel_project}/rollback/{history[-2]}", "roll back", {})
        url = self._production_url(history[-2])
        with locked_json(self.path, Deployments) as store:
            store.promotions[project].pop()
            self._find(store, history[-1]).state = "retired"
            back = self._find(store, history[-2])
            back.state, back.url = "promoted", url
            return back.model_copy()

    def production(self, project: str) -> Deployment | None:
        with locked_json(self.path, Deployments, write=False) as store:
            history = store.promotions.get(project, [])
            return self._find(store, history[-1]).model_copy() if history else None

    def production_url(self, project: str) -> str:
        current = self.production(project)
        return current.url if current else ""

    def get(self, deployment_id: str) -> Deployment:
        with locked_json(self.path, Deployments, write=False) as store:
            return self._find(store, deployment_id)

    def list(self, run_id: str | None = None) -> list[Deployment]:
        with locked_json(self.path, Deployments, write=False) as store:
            return [d for d in store.deployments if run_id is None or d.run_id == run_id]
