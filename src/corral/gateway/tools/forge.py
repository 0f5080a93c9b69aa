"""`forge.*`: open_pull_request, comment, list_checks; and merge_pull_request, never grantable to agents."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from corral.errors import RunError
from corral.events import PrOpened
from corral.forge import Forge
from corral.gateway.tools import BuiltinTool, BuiltinUpstream, RunBinding, obj
from corral.gateway.upstreams import Caller

_NUMBER = {"type": "integer", "minimum": 1, "description": "pull request number"}


def forge_upstream(forge: Forge, bindings: Mapping[str, RunBinding]) -> BuiltinUpstream:
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
        pr = forge.comment(args["number"], body=args["body"], author=f"{caller.principal}:{caller.run_id}")
        return {"number": pr.number, "comments": len(pr.comments)}

    def list_checks(args: dict[str, Any], caller: Caller, run: RunBinding) -> dict[str, Any]:
        return {
            "number": args["number"],
            "checks": [c.model_dump() for c in forge.list_checks(args["number"])],
        }

    def merge(args: dict[str, Any], caller: Caller, run: RunBinding) -> dict[str, Any]:
        # Policy already refuses agents; the forge checks the principal again (defence in depth).
        pr = forge.merge(args["number"], approver=caller.principal)
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
            "Comment on a pull request.",
            obj({"number": _NUMBER, "body": {"type": "string", "minLength": 1}}, ["number", "body"]),
            "write",
            comment,
        ),
        BuiltinTool(
            "list_checks",
            "List the checks recorded on a pull request.",
            obj({"number": _NUMBER}, ["number"]),
            "read",
            list_checks,
        ),
        BuiltinTool(
            "merge_pull_request",
            "Merge a pull request. Needs a human principal; never granted to agents.",
            obj({"number": _NUMBER}, ["number"]),
            "write",
            merge,
        ),
    ]
    return BuiltinUpstream("forge", tools, bindings)
