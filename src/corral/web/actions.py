"""The review actions, through the same library functions as the CLI (and so under the same rules):
`corral.review.reject` and `corral.delivery.approve.{approve,comment,promote}`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.delivery.approve import Delivered
    from corral.services import Services


def _delivered(done: Delivered) -> dict[str, Any]:
    dep = done.deployment
    return {
        "run_id": done.run_id,
        "phase": done.phase.value,
        "head_sha": done.head_sha,
        "merge_commit": done.merge_commit,
        "deployment": dep.model_dump(mode="json") if dep is not None else None,
    }


def reject(services: Services, run_id: str, user: str, text: str) -> dict[str, Any]:
    from corral.review import reject as reject_run

    result = reject_run(services, run_id, text, user)
    return {
        "run_id": result.run_id,
        "phase": "rejected",
        "preference": getattr(result.preference, "id", None),
    }


def approve(services: Services, run_id: str, user: str, text: str, override: bool = False) -> dict[str, Any]:
    """`override`: approve although the checks failed (`corral approve --override`), audited."""
    from corral.delivery.approve import approve as approve_run

    return _delivered(approve_run(services, run_id, approver=user, comment=text, override=override))


def promote(services: Services, run_id: str, user: str, text: str) -> dict[str, Any]:
    from corral.delivery.approve import promote as promote_run

    return _delivered(promote_run(services, run_id, approver=user, comment=text))


def comment(services: Services, run_id: str, user: str, text: str) -> dict[str, Any]:
    from corral.delivery.approve import comment as comment_run

    pr, pref = comment_run(services, run_id, author=user, body=text)
    return {"run_id": run_id, "pull_request": pr, "preference": pref}


ACTIONS = {"approve": approve, "reject": reject, "comment": comment, "promote": promote}
