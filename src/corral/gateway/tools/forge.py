"""`forge.*`: open_pull_request, comment, list_checks; and merge_pull_request, never grantable to agents.

Every tool that takes a pull request `number` reaches only the caller's own run's pull requests: the
run's repository and the run's head branch, both from the gateway's binding of the verified token. A
number outside that set is refused the same way whether it exists elsewhere or not, so the refusal
tells the agent nothing about other projects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from corral.errors import RunError
from corral.events import PrOpened
from corral.forge import Forge, PullRequest
from corral.gateway.tools import BuiltinTool, BuiltinUpstream, RunBinding, obj, unbound
from corral.gateway.upstreams import Caller

_NUMBER = {"type": "integer", "minimum": 1, "description": "this run's pull request number"}


def forge_upstream(forge: Forge, bindings: Mapping[str, RunBinding]) -> BuiltinUpstream:
    def own_numbers(run: RunBinding) -> list[int]:
        assert run.repo is not None
        return [pr.number for pr in forge.list(run.repo) if pr.head == run.head]

    def scope(args: dict[str, Any], run: RunBinding) -> str | None:
        why = unbound(run, "pull request")
        if why is not None:
            return why
        number = args.get("number")
        own = own_numbers(run)
        if isinstance(number, int) and not isinstance(number, bool) and number in own:
            return None
        mine = f"its pull request is #{own[-1]}" if own else "it has opened none yet"
        return (
            f"pull request {number!r} is not this run's: a run's token reaches only the pull requests "
            f"of its own branch {run.head} in its own repository, and {mine}"
        )

    def run_pull_request(args: dict[str, Any], run: RunBinding) -> PullRequest:
        # The gateway asked `scope` already; ask again so the handler is safe on its own.
        refusal = scope(args, run)
        if refusal is not None:
            raise RunError(refusal, hint="act only on the pull request this run opened")
        return forge.get(args["number"])

    def open_pr(args: dict[str, Any], caller: Caller, run: RunBinding) -> dict[str, Any]:
        if run.repo is None or not run.head:
            raise RunError(
                f"run {caller.run_id} has no repository bound", hint="start the run gateway with repo="
            )
        pr = forge.open_pull_request(
            run.repo,
            head=run.head,
            base=run.base,
            title=args["title"],
            body=args.get("body", ""),
            author=caller.principal if caller.principal != "agent" else f"agent:{caller.run_id}",
        )
        if run.sink is not None:
            run.sink.emit(PrOpened(number=pr.number, url=pr.url, branch=pr.head, actor="agent"))
        return {"number": pr.number, "url": pr.url, "head": pr.head, "base": pr.base, "state": pr.state}

    def comment(args: dict[str, Any], caller: Caller, run: RunBinding) -> dict[str, Any]:
        pr = run_pull_request(args, run)
        pr = forge.comment(pr.number, body=args["body"], author=f"{caller.principal}:{caller.run_id}")
        return {"number": pr.number, "comments": len(pr.comments)}

    def list_checks(args: dict[str, Any], caller: Caller, run: RunBinding) -> dict[str, Any]:
        pr = run_pull_request(args, run)
        return {"number": pr.number, "checks": [c.model_dump() for c in pr.checks]}

    def merge(args: dict[str, Any], caller: Caller, run: RunBinding) -> dict[str, Any]:
        # Policy already refuses agents; the forge checks the principal again (defence in depth).
        pr = forge.merge(run_pull_request(args, run).number, approver=caller.principal, sha=str(args["sha"]))
        return {"number": pr.number, "state": pr.state, "merged_by": pr.merged_by}

    tools = [
        BuiltinTool(
            "open_pull_request",
            "Open a pull request from this run's branch into its base branch.",
            obj({"title": {"type": "string", "minLength": 1}, "body": {"type": "string"}}, ["title"]),
            "write",
            open_pr,
        ),
        BuiltinTool(
            "comment",
            "Comment on this run's pull request.",
            obj({"number": _NUMBER, "body": {"type": "string", "minLength": 1}}, ["number", "body"]),
            "write",
            comment,
            scope,
        ),
        BuiltinTool(
            "list_checks",
            "List the checks recorded on this run's pull request.",
            obj({"number": _NUMBER}, ["number"]),
            "read",
            list_checks,
            scope,
        ),
        BuiltinTool(
            "merge_pull_request",
            "Merge a pull request at its approved head commit. Needs a human principal; never granted to"
            " agents.",
            obj({"number": _NUMBER, "sha": {"type": "string", "minLength": 7}}, ["number", "sha"]),
            "write",
            merge,
            scope,
        ),
    ]
    return BuiltinUpstream("forge", tools, bindings)
