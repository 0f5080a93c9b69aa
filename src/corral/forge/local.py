"""A local forge: pull requests for git repositories on this machine, kept in one JSON file.

Minimal on purpose (the delivery issue grows it): merge records the decision and the approver; it does
not touch the repository, because host-side git on a repository the agent wrote to is hostile input.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from corral.errors import NotFound, WorkspaceError
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

    def merge(self, number: int, *, approver: str) -> PullRequest:
        if not approver.startswith("human:"):
            raise WorkspaceError(
                f"merge of #{number} refused: {approver!r} is not a human approver",
                hint="merges need a recorded human approval (`corral approve RUN`)",
            )
        with locked_json(self.path, _Pulls) as data:
            pr = self._find(data, number)
            if pr.state != "open":
                raise WorkspaceError(
                    f"pull request #{number} is {pr.state}, not open", hint="nothing to merge"
                )
            pr.state = "merged"
            pr.merged_by = approver
            return pr

    def list(self, repo: Path | None = None) -> list[PullRequest]:
        with locked_json(self.path, _Pulls, write=False) as data:
            wanted = str(repo.resolve()) if repo is not None else None
            return [pr for pr in data.pulls if wanted is None or pr.repo == wanted]
