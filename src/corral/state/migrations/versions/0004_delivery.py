"""Delivery: who asked for a run, and which head commit each approval was given for.

`runs.requester` is recorded when a run is created, so that `corral approve` can refuse the
requester's own approval; `approvals.head_sha` is the commit a merge approval was given for (a moved
head needs a new approval) and `approvals.override` marks an approval over failed checks. The new
phases (approved, staged, promoted) are values of the existing `runs.phase` column.

Revision ID: 0004_delivery
Revises: 0003_preference_search
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_delivery"
down_revision = "0003_preference_search"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("requester", sa.String(200), nullable=False, server_default=""))
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("head_sha", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("override", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("override")
        batch.drop_column("head_sha")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("requester")
