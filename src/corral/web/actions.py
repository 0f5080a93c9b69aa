"""The review actions, through the same library functions as the CLI (and so under the same rules).

Approve, comment and promote live in `corral.delivery` (the delivery issue); where this installation
does not have it yet, they raise NotAvailable and the server answers 501 saying so.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from corral.errors import NotAvailable

if TYPE_CHECKING:
    from corral.services import Services


def _delivery() -> Any:
    try:
        return importlib.import_module("corral.delivery.approve")
    except ImportError as exc:
        raise NotAvailable(
            "approve, comment and promote are not available in this corral yet (no corral.delivery)",
            hint="reject works; upgrade corral to a version with delivery for the others",
        ) from exc


def reject(services: Services, run_id: str, user: str, text: str) -> dict[str, Any]:
    from corral.review import reject as reject_run

    result = reject_run(services, run_id, text, user)
    return {
        "run_id": result.run_id,
        "decision": "rejected",
        "preference": getattr(result.preference, "id", None),
    }


def approve(services: Services, run_id: str, user: str, text: str) -> dict[str, Any]:
    done = _delivery().approve(services, run_id, approver=user, comment=text)
    return {"run_id": run_id, "decision": "approved", "result": repr(done)}


def promote(services: Services, run_id: str, user: str, text: str) -> dict[str, Any]:
    done = _delivery().promote(services, run_id, approver=user, comment=text)
    return {"run_id": run_id, "decision": "promoted", "result": repr(done)}


def comment(services: Services, run_id: str, user: str, text: str) -> dict[str, Any]:
    pr, pref = _delivery().comment(services, run_id, author=user, body=text)
    return {"run_id": run_id, "pull_request": pr, "preference": pref}


ACTIONS = {"approve": approve, "reject": reject, "comment": comment, "promote": promote}
