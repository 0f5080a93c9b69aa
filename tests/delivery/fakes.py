"""Loopback fakes of the GitHub and Vercel REST APIs, following the vendors' documented shapes.

GitHub (docs.github.com/en/rest/pulls, /commits/statuses, API version 2022-11-28): pull requests with
`number`, `html_url`, `head{ref,sha}`, `base{ref}`, `merged`, `merge_commit_sha`; errors as
`{"message", "documentation_url", "errors"}` with 405 (not mergeable), 409 (head moved), 422
(validation failed). Vercel (vercel.com/docs/rest-api): deployments with `id`, `url`, `readyState`
(QUEUED → BUILDING → READY | ERROR | CANCELED), `errorMessage`, `alias`; errors as
`{"error": {"code", "message"}}`. Both refuse a request without the expected bearer token.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

Route = Callable[[dict[str, Any], re.Match[str]], tuple[int, Any]]


class FakeServer:
    def __init__(self, token: str) -> None:
        self.token = token
        self.requests: list[tuple[str, str, Any]] = []
        self.routes: list[tuple[str, re.Pattern[str], Route]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                path = self.path.split("?")[0]
                fake.requests.append((self.command, path, body))
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    status, data = 401, fake.unauthorized()
                else:
                    status, data = 404, {"message": "Not Found"}
                    for method, pattern, route in fake.routes:
                        match = pattern.fullmatch(path)
                        if method == self.command and match:
                            status, data = route(body, match)
                            break
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PUT = do_PATCH = _serve

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def unauthorized(self) -> Any:
        return {"message": "Bad credentials"}

    def route(self, method: str, pattern: str, handler: Route) -> None:
        self.routes.append((method, re.compile(pattern), handler))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeGitHub(FakeServer):
    def __init__(self, token: str, repository: str, bare: Path) -> None:
        super().__init__(token)
        self.repository = repository
        self.bare = bare
        """The repository's git side: a bare repository that corral pushes run branches to."""
        self.heads: dict[str, str] = {}
        """branch → head SHA overrides (a head that moved on GitHub); else the bare repository's."""
        self.pulls: dict[int, dict[str, Any]] = {}
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self.review_comments: dict[int, list[dict[str, Any]]] = {}
        self.unmergeable: set[int] = set()
        base = f"/repos/{repository}"
        self.route("POST", f"{base}/pulls", self.create)
        self.route(
            "GET", f"{base}/pulls", lambda _b, _m: (200, [self.view(n) for n in sorted(self.pulls)][::-1])
        )
        self.route("GET", rf"{base}/pulls/(\d+)", lambda _b, m: self.one(int(m[1])))
        self.route("PATCH", rf"{base}/pulls/(\d+)", self.update)
        self.route("PUT", rf"{base}/pulls/(\d+)/merge", self.merge)
        self.route(
            "GET",
            rf"{base}/pulls/(\d+)/comments",
            lambda _b, m: (200, self.review_comments.get(int(m[1]), [])),
        )
        self.route(
            "POST", rf"{base}/issues/(\d+)/comments", lambda b, _m: (201, {"id": 1, "body": b["body"]})
        )
        self.route("POST", rf"{base}/statuses/([0-9a-f]+)", self.status)
        self.route(
            "GET",
            rf"{base}/commits/([0-9a-f]+)/statuses",
            lambda _b, m: (200, self.statuses.get(m[1], [])[::-1]),
        )

    @staticmethod
    def error(message: str, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"message": message, "documentation_url": "https://docs.github.com/rest"}
        if errors:
            data["errors"] = errors
        return data

    def head_of(self, branch: str) -> str:
        if branch in self.heads:
            return self.heads[branch]
        cmd = ["git", "-C", str(self.bare), "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"]
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()

    def view(self, number: int) -> dict[str, Any]:
        pr = self.pulls[number]
        return {
            **pr,
            "head": {"ref": pr["head"], "sha": self.head_of(pr["head"])},
            "base": {"ref": pr["base"]},
        }

    def one(self, number: int) -> tuple[int, Any]:
        return (200, self.view(number)) if number in self.pulls else (404, self.error("Not Found"))

    def create(self, body: dict[str, Any], _m: re.Match[str]) -> tuple[int, Any]:
        if not self.head_of(str(body.get("head"))):
            return 422, self.error(
                "Validation Failed", [{"resource": "PullRequest", "field": "head", "code": "invalid"}]
            )
        if any(p["head"] == body["head"] and p["state"] == "open" for p in self.pulls.values()):
            message = f"A pull request already exists for {self.repository.split('/')[0]}:{body['head']}."
            return 422, self.error(
                "Validation Failed", [{"resource": "PullRequest", "code": "custom", "message": message}]
            )
        number = len(self.pulls) + 1
        self.pulls[number] = {
            "number": number,
            "html_url": f"https://github.com/{self.repository}/pull/{number}",
            "state": "open",
            "title": body["title"],
            "body": body.get("body", ""),
            "head": body["head"],
            "base": body["base"],
            "user": {"login": "corral-bot"},
            "merged": False,
            "merged_at": None,
            "merge_commit_sha": None,
        }
        return 201, self.view(number)

    def update(self, body: dict[str, Any], m: re.Match[str]) -> tuple[int, Any]:
        pr = self.pulls[int(m[1])]
        pr.update({k: v for k, v in body.items() if k in ("body", "state", "title")})
        return 200, self.view(pr["number"])

    def status(self, body: dict[str, Any], m: re.Match[str]) -> tuple[int, Any]:
        if body.get("state") not in ("error", "failure", "pending", "success"):
            return 422, self.error(
                "Validation Failed", [{"resource": "Status", "field": "state", "code": "invalid"}]
            )
        self.statuses.setdefault(m[1], []).append(body)
        return 201, {"id": len(self.statuses[m[1]]), **body}

    def merge(self, body: dict[str, Any], m: re.Match[str]) -> tuple[int, Any]:
        number = int(m[1])
        pr = self.pulls.get(number)
        if pr is None:
            return 404, self.error("Not Found")
        if not isinstance(body.get("sha"), str) or not body["sha"]:
            return 422, self.error(
                "Validation Failed", [{"resource": "PullRequest", "field": "sha", "code": "missing"}]
            )
        if pr["merged"] or pr["state"] != "open" or number in self.unmergeable:
            return 405, self.error("Pull Request is not mergeable")
        if body["sha"] != self.head_of(pr["head"]):
            return 409, self.error("Head branch was modified. Review and try the merge again.")
        sha = secrets.token_hex(20)
        pr.update(merged=True, state="closed", merged_at="2026-12-01T00:00:00Z", merge_commit_sha=sha)
        return 200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}


class FakeVercel(FakeServer):
    def __init__(self, token: str, project: str) -> None:
        super().__init__(token)
        self.project = project
        self.deployments: dict[str, dict[str, Any]] = {}
        self.outcomes: list[tuple[str, str]] = []
        """What the next deployments end as: (readyState, errorMessage); READY when empty."""
        self.production = ""
        self.route("POST", "/v13/deployments", self.create)
        self.route("GET", r"/v13/deployments/([\w-]+)", self.read)
        self.route("POST", rf"/v10/projects/{project}/promote/([\w-]+)", self.promote)
        self.route("POST", rf"/v1/projects/{project}/rollback/([\w-]+)", self.rollback)

    def unauthorized(self) -> Any:
        return {"error": {"code": "forbidden", "message": "Not authorized"}}

    def create(self, body: dict[str, Any], _m: re.Match[str]) -> tuple[int, Any]:
        source = body.get("gitSource") or {}
        if source.get("type") != "github" or not source.get("sha") or not source.get("ref"):
            return 400, {"error": {"code": "bad_request", "message": "Invalid request: gitSource is missing"}}
        dep_id = "dpl_" + secrets.token_hex(8)
        final, message = self.outcomes.pop(0) if self.outcomes else ("READY", "")
        self.deployments[dep_id] = {
            "id": dep_id,
            "url": f"{self.project}-{dep_id[4:12]}.vercel.app",
            "readyState": "QUEUED",
            "target": body.get("target"),
            "gitSource": source,
            "alias": [],
            "_steps": ["BUILDING", final],
            "_error": message,
        }
        return 200, self.public(dep_id)

    def public(self, dep_id: str) -> dict[str, Any]:
        dep = self.deployments[dep_id]
        data = {k: v for k, v in dep.items() if not k.startswith("_")}
        if dep["readyState"] == "ERROR":
            data.update(errorCode="BUILD_FAILED", errorMessage=dep["_error"])
        if dep["readyState"] == "CANCELED":
            data.update(errorMessage=dep["_error"] or "The deployment was canceled")
        return data

    def read(self, _b: dict[str, Any], m: re.Match[str]) -> tuple[int, Any]:
        dep = self.deployments.get(m[1])
        if dep is None:
            return 404, {"error": {"code": "not_found", "message": "Deployment not found"}}
        if dep["_steps"]:
            dep["readyState"] = dep["_steps"].pop(0)
        return 200, self.public(m[1])

    def _production(self, dep_id: str) -> tuple[int, Any]:
        dep = self.deployments.get(dep_id)
        if dep is None or dep["readyState"] != "READY":
            return 400, {"error": {"code": "invalid_deployment", "message": "Deployment is not READY"}}
        for other in self.deployments.values():
            other["alias"] = []
        dep["alias"] = [f"{self.project}.vercel.app"]
        self.production = dep_id
        return 201, {}

    def promote(self, _b: dict[str, Any], m: re.Match[str]) -> tuple[int, Any]:
        return self._production(m[1])

    def rollback(self, _b: dict[str, Any], m: re.Match[str]) -> tuple[int, Any]:
        return self._production(m[1])
