"""The GitHub forge: pull requests, commit statuses, review comments and merges over the REST API.

The token is read by corral on the host (`[forge] token`, `env:GITHUB_TOKEN` by default) and sent only
to `[forge] api_url`; no sandbox ever sees it. The endpoints (docs.github.com/en/rest, API version
2022-11-28):
- `POST /repos/{owner}/{repo}/pulls`, `GET`/`PATCH /repos/{owner}/{repo}/pulls/{n}`,
  `GET /repos/{owner}/{repo}/pulls?state=all`;
- `POST /repos/{owner}/{repo}/statuses/{sha}` for the checks (commit statuses), read back with
  `GET /repos/{owner}/{repo}/commits/{sha}/statuses`;
- `GET /repos/{owner}/{repo}/pulls/{n}/comments` (review comments), `POST .../issues/{n}/comments`;
- `PUT /repos/{owner}/{repo}/pulls/{n}/merge` with `sha`: 405 (not mergeable) and 409 (the head
  moved) and 422 become `MergeRefused`, and nothing is merged.
Before its pull request opens, the run branch is pushed to `[forge] remote` under its own name.
"""

from __future__ import annotations

import base64
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from corral.config import ForgeConfig
from corral.errors import ConfigError, MergeRefused, NotFound, WorkspaceError
from corral.forge import Check, CheckStatus, Comment, PullRequest
from corral.workspace import run_git

_STATUS = {"passed": "success", "failed": "failure", "pending": "pending"}
_CHECK = {"success": "passed", "failure": "failed", "error": "failed", "pending": "pending"}


def _message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:300]
    text = str(data.get("message", "")) if isinstance(data, dict) else ""
    errors = data.get("errors", []) if isinstance(data, dict) else []
    details = [
        str(e.get("message") or " ".join(str(e[k]) for k in ("resource", "field", "code") if e.get(k)))
        for e in errors
        if isinstance(e, dict)
    ]
    return "; ".join([text, *details]) if details else text


class GitHubForge:
    def __init__(self, config: ForgeConfig, token: str, client: httpx.Client | None = None) -> None:
        if config.repository.count("/") != 1:
            raise ConfigError(
                f"[forge] repository {config.repository!r} is not owner/name",
                hint='set [forge] repository = "owner/name" for the github backend',
            )
        self.repository = config.repository
        self.remote = config.remote or f"https://github.com/{config.repository}.git"
        self._token = token
        self.http = client or httpx.Client(
            base_url=config.api_url.rstrip("/"),
            timeout=30.0,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            },
        )
        self._repo_path = ""

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, f"/repos/{self.repository}{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise WorkspaceError(
                f"GitHub {method} {path} failed: {exc}", hint="check [forge] api_url"
            ) from exc
        if response.status_code == 404:
            raise NotFound(
                f"GitHub {method} {path}: not found ({_message(response)})", hint="check the number"
            )
        return response

    def _ok(self, response: httpx.Response, what: str) -> Any:
        if response.status_code >= 400:
            raise WorkspaceError(
                f"GitHub refused to {what}: {response.status_code} {_message(response)}",
                hint="check the token's permissions and the repository",
            )
        return response.json()

    def _pull(self, data: dict[str, Any], author: str = "") -> PullRequest:
        state = "merged" if data.get("merged") or data.get("merged_at") else str(data.get("state", "open"))
        return PullRequest(
            number=int(data["number"]),
            repo=self._repo_path or self.repository,
            head=str(data["head"]["ref"]),
            base=str(data["base"]["ref"]),
            title=str(data.get("title", "")),
            body=str(data.get("body") or ""),
            author=author or str((data.get("user") or {}).get("login", "")),
            state="merged" if state == "merged" else ("closed" if state == "closed" else "open"),
            merge_commit=str(data.get("merge_commit_sha") or "") if state == "merged" else "",
            html_url=str(data.get("html_url", "")),
        )

    def open_pull_request(
        self, repo: Path, *, head: str, base: str, title: str, body: str, author: str
    ) -> PullRequest:
        self._repo_path = str(repo.resolve())
        data = self._ok(
            self._call("POST", "/pulls", json={"title": title, "head": head, "base": base, "body": body}),
            f"open a pull request from {head}",
        )
        return self._pull(data, author)

    def publish(self, repo: Path, branch: str) -> None:
        """`git push` of the run branch to `remote` with corral's hardened git: only the remote's own
        transport is allowed, and the token travels as an Authorization header set through
        `GIT_CONFIG_*` (never in the URL, the arguments or a file)."""
        scheme = self.remote.split("://", 1)[0] if "://" in self.remote else "file"
        basic = base64.b64encode(f"x-access-token:{self._token}".encode()).decode()
        env = {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
            "GIT_TERMINAL_PROMPT": "0",
        }
        ref = f"refs/heads/{branch}"
        proc = run_git(
            [
                "-c",
                f"protocol.{scheme}.allow=always",
                "push",
                "--no-verify",
                "--quiet",
                self.remote,
                f"{ref}:{ref}",
            ],
            cwd=repo,
            env=env,
        )
        if proc.returncode != 0:
            said = proc.stderr.strip().replace(self._token, "***")
            raise WorkspaceError(
                f"pushing {branch} to {self.remote} failed: {said}",
                hint="check [forge] remote and that the token may push to the repository",
            )

    def get(self, number: int) -> PullRequest:
        return self._pull(self._ok(self._call("GET", f"/pulls/{number}"), f"read #{number}"))

    def update_body(self, number: int, body: str) -> PullRequest:
        return self._pull(self._ok(self._call("PATCH", f"/pulls/{number}", json={"body": body}), "update"))

    def close(self, number: int) -> PullRequest:
        return self._pull(
            self._ok(self._call("PATCH", f"/pulls/{number}", json={"state": "closed"}), "close")
        )

    def comment(self, number: int, *, body: str, author: str) -> PullRequest:
        self._ok(
            self._call("POST", f"/issues/{number}/comments", json={"body": body}), f"comment on #{number}"
        )
        return self.get(number)

    def review_comments(self, number: int) -> list[Comment]:
        data = self._ok(self._call("GET", f"/pulls/{number}/comments"), f"read the comments of #{number}")
        return [
            Comment(
                author=str((c.get("user") or {}).get("login", "")),
                body=str(c.get("body", "")),
                ts=datetime.fromisoformat(str(c["created_at"]).replace("Z", "+00:00")),
            )
            for c in data
        ]

    def _head_sha(self, number: int) -> str:
        data = self._ok(self._call("GET", f"/pulls/{number}"), f"read #{number}")
        return str(data["head"]["sha"])

    def record_check(self, number: int, check: Check) -> PullRequest:
        status = {"state": _STATUS[check.status], "context": check.name, "description": check.summary[:140]}
        self._ok(self._call("POST", f"/statuses/{self._head_sha(number)}", json=status), "report a check")
        return self.get(number)

    def list_checks(self, number: int) -> list[Check]:
        data = self._ok(self._call("GET", f"/commits/{self._head_sha(number)}/statuses"), "read the checks")
        latest: dict[str, Check] = {}
        for s in reversed(data):  # newest first on GitHub: keep the newest per context
            status: CheckStatus = _CHECK.get(str(s.get("state")), "pending")  # type: ignore[assignment]
            latest[str(s["context"])] = Check(
                name=str(s["context"]), status=status, summary=str(s.get("description") or "")
            )
        return list(latest.values())

    def merge(self, number: int, *, approver: str, sha: str, message: str = "") -> PullRequest:
        if not approver.startswith("human:"):
            raise WorkspaceError(
                f"merge of #{number} refused: {approver!r} is not a human approver",
                hint="merges need a recorded human approval (`corral approve RUN`)",
            )
        title, _, rest = (message or f"Merge #{number}").partition("\n")
        payload = {"sha": sha, "merge_method": "merge", "commit_title": title, "commit_message": rest.strip()}
        response = self._call("PUT", f"/pulls/{number}/merge", json=payload)
        if response.status_code == 405:
            raise MergeRefused(
                f"GitHub: pull request #{number} is not mergeable: {_message(response)}",
                hint="resolve the conflict or the branch protection on GitHub, then approve again",
            )
        if response.status_code == 409:
            raise MergeRefused(
                f"GitHub: the head of #{number} moved since {sha[:12]} was approved: {_message(response)}",
                hint="a moved head needs a new review and a new approval",
            )
        if response.status_code == 422:
            raise MergeRefused(
                f"GitHub refused the merge of #{number}: {_message(response)}", hint="see the pull request"
            )
        data = self._ok(response, f"merge #{number}")
        if not data.get("merged"):
            raise MergeRefused(
                f"GitHub did not merge #{number}: {data.get('message', '')}", hint="see GitHub"
            )
        merged = self.get(number)
        return merged.model_copy(update={"merge_commit": str(data["sha"]), "merged_by": approver})

    def list(self, repo: Path | None = None) -> list[PullRequest]:
        if repo is not None:
            self._repo_path = str(repo.resolve())
        data = self._ok(self._call("GET", "/pulls", params={"state": "all", "per_page": 100}), "list")
        return [self._pull(d) for d in reversed(data)]  # GitHub lists newest first; the protocol, oldest
