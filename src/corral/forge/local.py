"""A local forge: pull requests for git repositories on this machine, kept in one JSON file.

A merge is a real git merge of exactly the approved commit into the base branch
(`corral.delivery.gitmerge.merge_at`: hardened host-side git, atomic ref update, never a dirty
checkout), recorded with the approver and the merge commit.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from corral.errors import MergeRefused, NotFound, WorkspaceError
from corral.forge import Check, Comment, PullRequest
from corral.forge.jsonfile import locked_json


class _Pulls(BaseModel):
    next_number: int = 1
    pulls: list[PullRequest] = []


class LocalForge:
    """`Forge` over `<root>/pulls.json` (root defaults to `Settings.home/'forge'`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "pulls.json"

    def _find(self, data: _Pulls, number: int) -> PullRequest:
        for pr in data.pulls:
            if pr.number == number:
                return pr
        raise NotFound(
            f"pull request #{number} does not exist in {self.path}", hint="list them with the forge"
        )

    def open_pull_request(
        self, repo: Path, *, head: str, base: str, title: str, body: str, author: str
    ) -> PullRequest:
        if not (repo / ".git").exists():
            raise WorkspaceError(
                f"{repo} is not a git repository", hint="open pull requests on a git work tree"
            )
        if not title.strip():
            raise WorkspaceError("a pull request needs a title", hint="pass a short, non-empty title")
        with locked_json(self.path, _Pulls) as data:
            pr = PullRequest(
                number=data.next_number,
                repo=str(repo.resolve()),
                head=head,
                base=base,
                title=title,
                body=body,
                author=author,
            )
            data.next_number += 1
            data.pulls.append(pr)
            return pr

    def get(self, number: int) -> PullRequest:
        with locked_json(self.path, _Pulls, write=False) as data:
            return self._find(data, number)

    def comment(self, number: int, *, body: str, author: str) -> PullRequest:
        with locked_json(self.path, _Pulls) as data:
            pr = self._find(data, number)
            pr.comments.append(Comment(author=author, body=body))
            return pr

    def list_checks(self, number: int) -> list[Check]:
        return self.get(number).checks

    def record_check(self, number: int, check: Check) -> PullRequest:
        with locked_json(self.path, _Pulls) as data:
            pr = self._find(data, number)
            pr.checks = [c for c in pr.checks if c.name != check.name] + [check]
            return pr

    def publish(self, repo: Path, branch: str) -> None:
        return  # the run branch is already in the repository this forge merges into

    def update_body(self, number: int, body: str) -> PullRequest:
        with locked_json(self.path, _Pulls) as data:
            pr = self._find(data, number)
            pr.body = body
            return pr

    def review_comments(self, number: int) -> list[Comment]:
        return self.get(number).comments

    def merge(self, number: int, *, approver: str, sha: str, message: str = "") -> PullRequest:
        from corral.delivery.gitmerge import merge_at

        if not approver.startswith("human:"):
            raise WorkspaceError(
                f"merge of #{number} refused: {approver!r} is not a human approver",
                hint="merges need a recorded human approval (`corral approve RUN`)",
            )
        pr = self.get(number)
        if pr.state != "open":
            raise WorkspaceError(f"pull request #{number} is {pr.state}, not open", hint="nothing to merge")
        repo = Path(pr.repo)
        head = self._head(repo, pr.head)
        if not sha or head != sha:
            raise MergeRefused(
                f"pull request #{number}: its head is {head[:12] or 'gone'}, "
                f"not the approved {sha[:12] or '-'}",
                hint="the branch moved after the approval: review the new head and approve it",
            )
        name = approver.removeprefix("human:")
        text = message or f"Merge {pr.head} into {pr.base}\n\nApproved-by: {name}\n"
        result = merge_at(repo, pr.base, sha, message=text, approver=name)
        with locked_json(self.path, _Pulls) as data:
            pr = self._find(data, number)
            pr.state = "merged"
            pr.merged_by = approver
            pr.merge_commit = result.commit
            return pr

    @staticmethod
    def _head(repo: Path, branch: str) -> str:
        from corral.workspace import run_git

        proc = run_git(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}"], cwd=repo)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def close(self, number: int) -> PullRequest:
        with locked_json(self.path, _Pulls) as data:
            pr = self._find(data, number)
            if pr.state == "open":
                pr.state = "closed"
            return pr

    def list(self, repo: Path | None = None) -> list[PullRequest]:
        with locked_json(self.path, _Pulls, write=False) as data:
            wanted = str(repo.resolve()) if repo is not None else None
            return [pr for pr in data.pulls if wanted is None or pr.repo == wanted]
