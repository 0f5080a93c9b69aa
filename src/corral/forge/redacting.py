"""`RedactingForge`: the forge exit. Whatever corral or the agent writes to a forge (a pull request's
title and body, a comment, a check's summary, a merge message) is redacted by the process redactor
first, whichever backend takes it. `Services.forge` and the run gateway's forge tools are wrapped, so
a value the run resolved never reaches a pull request a reviewer (or, on GitHub, the world) reads."""

from __future__ import annotations

from pathlib import Path

from corral.audit.redact import process_redactor
from corral.forge import Check, Comment, Forge, PullRequest


def _clean(text: str) -> str:
    return process_redactor().redact_text(text)


class RedactingForge:
    """Implements `corral.forge.Forge` over `inner`, redacting every text it writes."""

    def __init__(self, inner: Forge) -> None:
        self.inner = inner

    def open_pull_request(
        self, repo: Path, *, head: str, base: str, title: str, body: str, author: str
    ) -> PullRequest:
        return self.inner.open_pull_request(
            repo, head=head, base=base, title=_clean(title), body=_clean(body), author=author
        )

    def get(self, number: int) -> PullRequest:
        return self.inner.get(number)

    def comment(self, number: int, *, body: str, author: str) -> PullRequest:
        return self.inner.comment(number, body=_clean(body), author=author)

    def list_checks(self, number: int) -> list[Check]:
        return self.inner.list_checks(number)

    def record_check(self, number: int, check: Check) -> PullRequest:
        return self.inner.record_check(number, check.model_copy(update={"summary": _clean(check.summary)}))

    def publish(self, repo: Path, branch: str) -> None:
        self.inner.publish(repo, branch)

    def update_body(self, number: int, body: str) -> PullRequest:
        return self.inner.update_body(number, _clean(body))

    def review_comments(self, number: int) -> list[Comment]:
        return self.inner.review_comments(number)

    def merge(self, number: int, *, approver: str, sha: str, message: str = "") -> PullRequest:
        return self.inner.merge(number, approver=approver, sha=sha, message=_clean(message))

    def close(self, number: int) -> PullRequest:
        return self.inner.close(number)

    def list(self, repo: Path | None = None) -> list[PullRequest]:
        return self.inner.list(repo)
