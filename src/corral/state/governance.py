"""Approvals, model pins and capability tokens: who decided what, which model is pinned, which
tokens are live. Mixed into `StateStore`; every query is team-scoped through `transaction()`."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from corral.errors import StoreError
from corral.state import tokens
from corral.state.base import StoreBase, row_dict, run_not_found, utcnow
from corral.state.models import ApprovalRecord, Decision, ModelPin, Subject, TokenRecord
from corral.state.schema import approvals, model_pins, runs


class GovernanceStore(StoreBase):
    # ---- approvals --------------------------------------------------------------------------

    def record_approval(
        self,
        run_id: str,
        actor: str,
        decision: Decision,
        subject: Subject = "run",
        comment: str = "",
        *,
        head_sha: str = "",
        override: bool = False,
    ) -> ApprovalRecord:
        """Record who approved or rejected what. The phase change is the caller's, via transition()."""
        if decision not in ("approved", "rejected"):
            raise StoreError(f"decision {decision!r} must be 'approved' or 'rejected'")
        if subject not in ("run", "merge", "deploy_promotion"):
            raise StoreError(f"approval subject {subject!r} must be run, merge or deploy_promotion")
        with self.transaction(write=True) as conn:
            run = conn.execute(
                sa.select(runs.c.run_id, runs.c.project).where(
                    runs.c.team == self.team, runs.c.run_id == run_id
                )
            ).first()
            if run is None:
                raise run_not_found(run_id, self.team)
            row = conn.execute(
                sa.insert(approvals)
                .values(
                    team=self.team,
                    project=run.project,
                    run_id=run.run_id,
                    actor=actor,
                    decision=decision,
                    subject=subject,
                    comment=comment,
                    decided_at=utcnow(),
                    head_sha=head_sha,
                    override=override,
                )
                .returning(*approvals.c)
            ).one()
        return ApprovalRecord.model_validate(row_dict(row))

    def list_approvals(self, run_id: str | None = None, project: str | None = None) -> list[ApprovalRecord]:
        query = sa.select(approvals).where(approvals.c.team == self.team)
        if run_id is not None:
            query = query.where(approvals.c.run_id == run_id)
        if project is not None:
            query = query.where(approvals.c.project == project)
        with self.transaction() as conn:
            rows = conn.execute(query.order_by(approvals.c.id)).all()
        return [ApprovalRecord.model_validate(row_dict(r)) for r in rows]

    # ---- model pins -------------------------------------------------------------------------

    def pin_model(
        self,
        project: str,
        model: str,
        small_model: str,
        claude_code: str,
        *,
        pinned_by: str,
        tool_surface_hash: str = "",
        reason: str = "",
    ) -> ModelPin:
        """Add a pin; the newest pin of a project is its current one, older ones are its history."""
        with self.transaction(write=True) as conn:
            row = conn.execute(
                sa.insert(model_pins)
                .values(
                    team=self.team,
                    project=project,
                    model=model,
                    small_model=small_model,
                    claude_code=claude_code,
                    tool_surface_hash=tool_surface_hash,
                    pinned_by=pinned_by,
                    reason=reason,
                    pinned_at=utcnow(),
                )
                .returning(*model_pins.c)
            ).one()
        return ModelPin.model_validate(row_dict(row))

    def pin_history(self, project: str) -> list[ModelPin]:
        """Newest first."""
        with self.transaction() as conn:
            rows = conn.execute(
                sa.select(model_pins)
                .where(model_pins.c.team == self.team, model_pins.c.project == project)
                .order_by(model_pins.c.id.desc())
            ).all()
        return [ModelPin.model_validate(row_dict(r)) for r in rows]

    def current_pin(self, project: str) -> ModelPin | None:
        history = self.pin_history(project)
        return history[0] if history else None

    # ---- capability tokens (see tokens.py) -------------------------------------------------

    def store_token(
        self,
        token_id: str,
        secret_hash: str,
        scope: list[str],
        ttl: timedelta | float,
        max_uses: int | None = None,
        *,
        project: str = "",
        run_id: str = "",
    ) -> TokenRecord:
        return tokens.store_token(
            self, token_id, secret_hash, scope, ttl, max_uses, project=project, run_id=run_id
        )

    def issue_token(
        self,
        scope: list[str],
        ttl: timedelta | float,
        max_uses: int | None = None,
        *,
        project: str = "",
        run_id: str = "",
    ) -> tuple[TokenRecord, str]:
        """A new token; returns its record and the clear secret, which is shown once and never stored."""
        return tokens.issue_token(self, scope, ttl, max_uses, project=project, run_id=run_id)

    def check_token(self, secret: str, *, consume: bool = True) -> TokenRecord:
        return tokens.check_token(self, secret, consume=consume)

    def revoke_token(self, token_id: str, reason: str = "") -> TokenRecord:
        return tokens.revoke_token(self, token_id, reason)
