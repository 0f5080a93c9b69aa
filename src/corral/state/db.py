"""The state store: projects, runs, approvals and model pins, on SQLite or Postgres (Supabase).

Every read and write runs in `transaction()`, which on Postgres first sets `corral.team` and the
`corral_app` role for that transaction only (row-level security does the scoping; transaction-mode
poolers keep no session state), and on SQLite is filtered by team in every query.
Records come back as frozen pydantic models; no ORM object or session leaves this module.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine

from corral.errors import NotFound, RunConflict, RunError, StoreError
from corral.settings import Settings
from corral.state import engine as _engine
from corral.state import migrate, tokens
from corral.state.ids import RUN_ID_PREFIX, new_run_id
from corral.state.machine import TERMINAL, Phase, check_transition
from corral.state.models import (
    ApprovalRecord,
    Decision,
    ModelPin,
    PhaseChange,
    ProjectRecord,
    RunRecord,
    StoreInfo,
    Subject,
    TokenRecord,
)
from corral.state.schema import approvals, model_pins, projects, run_phases, runs

APP_ROLE = "corral_app"

UPDATABLE_RUN_FIELDS = frozenset(
    {
        "model", "small_model", "started_at", "finished_at", "cost_usd", "input_tokens", "output_tokens",
        "cache_read_tokens", "cache_write_tokens", "checks", "checks_passed", "result", "diffstat",
        "container_id", "pid", "preference_ids", "meta", "base_commit", "branch",
    }
)  # fmt: skip
USAGE_FIELDS = ("cost_usd", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _row(row: sa.Row[Any]) -> dict[str, Any]:
    return dict(row._mapping)


class StateStore:
    """One team's view of a state database. Open with `StateStore.open`, close with `close()`."""

    def __init__(self, engine: Engine, url: URL, team: str, app_role: str | None) -> None:
        self._engine = engine
        self.url = url
        self.team = team
        self._app_role = app_role if engine.dialect.name == "postgresql" else None

    # ---- lifecycle --------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str | None,
        settings: Settings,
        team: str = "default",
        *,
        app_role: str | None = APP_ROLE,
        run_migrations: bool = True,
    ) -> StateStore:
        """Connect, refuse a database migrated by a newer corral, and migrate to head.

        `url` None means SQLite at `settings.state_db`. `app_role` is the non-owner role the store
        switches to on Postgres so row-level security applies (None: query as the connecting user).
        """
        if not team or len(team) > 64:
            raise StoreError(f"team {team!r} must be 1 to 64 characters", hint="set [project].team in corral.toml")
        parsed = _engine.parse_url(url, settings)
        engine = _engine.create_engine(parsed)
        store = cls(engine, parsed, team, app_role)
        try:
            with store._admin_transaction() as conn:
                if run_migrations:
                    migrate.upgrade(conn, _engine.where(parsed))
                else:
                    migrate.refuse_newer(migrate.current_revision(conn), _engine.where(parsed))
        except BaseException:
            engine.dispose()
            raise
        return store

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def backend(self) -> str:
        return self._engine.dialect.name

    def describe(self) -> StoreInfo:
        """Which store is in use and its migration revision (for `corral doctor`)."""
        with self._admin_transaction() as conn:
            revision = migrate.current_revision(conn)
        backend = "postgresql" if self.backend == "postgresql" else "sqlite"
        return StoreInfo(
            backend=backend,
            url=_engine.safe_url(self.url),
            team=self.team,
            revision=revision,
            head=migrate.head_revision(),
        )

    @contextmanager
    def _connect(self, write: bool) -> Iterator[Connection]:
        try:
            conn = self._engine.connect()
        except sa.exc.OperationalError as exc:
            raise _engine.unreachable(self.url, exc) from exc
        with conn:
            if write:
                conn.execution_options(**{_engine.WRITE_OPTION: True})
            yield conn

    @contextmanager
    def _admin_transaction(self) -> Iterator[Connection]:
        """As the connecting user, without the team scope: migrations and the revision only."""
        with self._connect(write=True) as conn, conn.begin():
            yield conn

    @contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[Connection]:
        """A transaction scoped to this store's team; commits on exit, rolls back on error.

        On Postgres `set_config(..., true)` lasts only for this transaction, which is what a pooler
        in transaction mode needs, and the role switch makes row-level security apply to it.
        """
        with self._connect(write) as conn, conn.begin():
            if self._engine.dialect.name == "postgresql":
                if self._app_role:
                    conn.execute(
                        sa.text("SELECT set_config('corral.team', :team, true), set_config('role', :role, true)"),
                        {"team": self.team, "role": self._app_role},
                    )
                else:
                    conn.execute(sa.text("SELECT set_config('corral.team', :team, true)"), {"team": self.team})
            yield conn

    def _insert(self, table: sa.Table) -> Any:
        return (postgresql.insert if self.backend == "postgresql" else sqlite.insert)(table)

    # ---- projects ---------------------------------------------------------------------------

    def ensure_project(
        self,
        name: str,
        repo: str = "",
        team: str | None = None,
        image: str = "",
        config_snapshot: Mapping[str, Any] | None = None,
    ) -> ProjectRecord:
        """Create the project, or refresh its repo, image and config snapshot."""
        if team is not None and team != self.team:
            raise StoreError(
                f"project {name!r} is in team {team!r} but this store is open for team {self.team!r}",
                hint="open the store with the project's team (corral.toml [project].team)",
            )
        now = utcnow()
        snapshot = dict(config_snapshot or {})
        stmt = self._insert(projects).values(
            team=self.team, name=name, repo=repo, image=image, config_snapshot=snapshot,
            created_at=now, updated_at=now,
        )  # fmt: skip
        stmt = stmt.on_conflict_do_update(
            index_elements=["team", "name"],
            set_={"repo": repo, "image": image, "config_snapshot": snapshot, "updated_at": now},
        ).returning(*projects.c)
        with self.transaction(write=True) as conn:
            return ProjectRecord.model_validate(_row(conn.execute(stmt).one()))

    def get_project(self, name: str) -> ProjectRecord:
        with self.transaction() as conn:
            row = conn.execute(
                sa.select(projects).where(projects.c.team == self.team, projects.c.name == name)
            ).first()
        if row is None:
            raise NotFound(f"no project {name!r} in team {self.team!r}", hint="a project is recorded by its first run")
        return ProjectRecord.model_validate(_row(row))

    def list_projects(self) -> list[ProjectRecord]:
        with self.transaction() as conn:
            rows = conn.execute(
                sa.select(projects).where(projects.c.team == self.team).order_by(projects.c.name)
            ).all()
        return [ProjectRecord.model_validate(_row(r)) for r in rows]

    # ---- runs -------------------------------------------------------------------------------

    def create_run(
        self,
        project: str,
        task: str,
        repo: str,
        base_commit: str,
        branch: str | None = None,
        *,
        model: str = "",
        small_model: str = "",
        meta: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> RunRecord:
        """Record a new run in phase `queued`; `branch` defaults to `corral/<run_id>`."""
        for _attempt in range(5):
            rid = run_id or new_run_id()
            now = utcnow()
            values = dict(
                run_id=rid, team=self.team, project=project, task=task, repo=repo, base_commit=base_commit,
                branch=branch or f"corral/{rid}", phase=Phase.QUEUED.value, version=1, model=model,
                small_model=small_model, created_at=now, updated_at=now, preference_ids=[],
                meta=dict(meta or {}),
            )  # fmt: skip
            try:
                with self.transaction(write=True) as conn:
                    row = conn.execute(sa.insert(runs).values(**values).returning(*runs.c)).one()
                    conn.execute(
                        sa.insert(run_phases).values(
                            team=self.team, run_id=rid, from_phase="", to_phase=Phase.QUEUED.value,
                            reason="created", at=now,
                        )  # fmt: skip
                    )
                return _run(row)
            except sa.exc.IntegrityError as exc:
                if run_id is not None or "fk_runs_project" in str(exc) or "FOREIGN KEY" in str(exc):
                    raise StoreError(
                        f"cannot record run for project {project!r} in team {self.team!r}: {exc.orig}",
                        hint="call ensure_project first, and give each run a unique id",
                    ) from exc
                # A random-suffix collision within the same second: draw another id.
        raise StoreError("could not draw a unique run id after 5 attempts", hint="check the system clock")

    def get_run(self, run_id: str) -> RunRecord:
        """The run with this id, or the only run whose id starts with it."""
        run_id = run_id.strip().lower()
        if not run_id or not RUN_ID_PREFIX.match(run_id):
            raise NotFound(f"{run_id!r} is not a run id", hint="run ids look like r1ngjv22w8tmk; see `corral runs`")
        with self.transaction() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.team == self.team, runs.c.run_id == run_id)).first()
            if row is None:
                # Ids hold only [0-9a-z], so a prefix needs no LIKE escaping.
                rows = conn.execute(
                    sa.select(runs)
                    .where(runs.c.team == self.team, runs.c.run_id.like(run_id + "%"))
                    .order_by(runs.c.run_id)
                    .limit(6)
                ).all()
                if len(rows) > 1:
                    shown = ", ".join(r.run_id for r in rows[:5])
                    raise NotFound(
                        f"run prefix {run_id!r} is ambiguous: it matches {shown}{', ...' if len(rows) > 5 else ''}",
                        hint="give more characters of the run id",
                    )
                row = rows[0] if rows else None
        if row is None:
            raise NotFound(f"no run {run_id!r} in team {self.team!r}", hint="see `corral runs` for run ids")
        return _run(row)

    def list_runs(self, limit: int = 20, project: str | None = None, phase: Phase | None = None) -> list[RunRecord]:
        """Newest first."""
        query = sa.select(runs).where(runs.c.team == self.team)
        if project is not None:
            query = query.where(runs.c.project == project)
        if phase is not None:
            query = query.where(runs.c.phase == Phase(phase).value)
        query = query.order_by(runs.c.created_at.desc(), runs.c.run_id.desc()).limit(limit)
        with self.transaction() as conn:
            return [_run(r) for r in conn.execute(query).all()]

    def transition(self, run_id: str, to: Phase, reason: str = "", *, expect: Phase | None = None) -> RunRecord:
        """Move a run to phase `to` through the state machine; returns the updated run.

        Raises `RunError` for an illegal move (or `failed` without a reason) and `RunConflict` when
        another process changed the phase first: its phase is not `expect`, or its version moved
        between our read and our write (optimistic versioning, so no update is ever lost).
        """
        to = Phase(to)
        if to is Phase.FAILED and not reason.strip():
            raise RunError(f"run {run_id}: a run may only fail with a reason", hint="pass reason=...")
        with self.transaction(write=True) as conn:
            row = conn.execute(
                sa.select(runs.c.phase, runs.c.version, runs.c.started_at).where(
                    runs.c.team == self.team, runs.c.run_id == run_id
                )
            ).first()
            if row is None:
                raise NotFound(f"no run {run_id!r} in team {self.team!r}", hint="see `corral runs` for run ids")
            current = Phase(row.phase)
            if expect is not None and current is not Phase(expect):
                raise RunConflict(
                    f"run {run_id}: cannot move {Phase(expect).value} → {to.value}: "
                    f"another process already moved it to {current.value}",
                    hint="re-read the run and decide again",
                )
            check_transition(current, to, run_id)
            now = utcnow()
            values: dict[str, Any] = {"phase": to.value, "version": row.version + 1, "updated_at": now}
            if row.started_at is None and current is Phase.QUEUED:
                values["started_at"] = now
            if to in TERMINAL:
                values["finished_at"] = now
            if to is Phase.FAILED:
                values["failure_reason"] = reason
            updated = conn.execute(
                sa.update(runs)
                .where(runs.c.team == self.team, runs.c.run_id == run_id, runs.c.version == row.version)
                .values(**values)
                .returning(*runs.c)
            ).first()
            if updated is None:
                raise RunConflict(
                    f"run {run_id}: cannot move {current.value} → {to.value}: another process changed "
                    "its phase at the same moment",
                    hint="re-read the run and decide again",
                )
            conn.execute(
                sa.insert(run_phases).values(
                    team=self.team, run_id=run_id, from_phase=current.value, to_phase=to.value,
                    reason=reason, at=now,
                )  # fmt: skip
            )
        return _run(updated)

    def update_run(self, run_id: str, **fields: Any) -> RunRecord:
        """Set timings, cost, tokens, checks, result, diffstat, container id, pid, ... (not the phase)."""
        unknown = set(fields) - UPDATABLE_RUN_FIELDS
        if unknown:
            raise StoreError(
                f"run {run_id}: cannot update field(s) {', '.join(sorted(unknown))}",
                hint="phases change only through transition(); updatable: " + ", ".join(sorted(UPDATABLE_RUN_FIELDS)),
            )
        if "preference_ids" in fields:
            fields["preference_ids"] = [int(i) for i in fields["preference_ids"]]
        return self._update(run_id, fields)

    def add_usage(self, run_id: str, **amounts: float) -> RunRecord:
        """Add to cost and token counters atomically (several writers may report usage at once)."""
        unknown = set(amounts) - set(USAGE_FIELDS)
        if unknown:
            raise StoreError(f"run {run_id}: unknown usage field(s) {', '.join(sorted(unknown))}",
                             hint="usage fields: " + ", ".join(USAGE_FIELDS))  # fmt: skip
        return self._update(run_id, {name: runs.c[name] + value for name, value in amounts.items()})

    def _update(self, run_id: str, values: dict[str, Any]) -> RunRecord:
        values["updated_at"] = utcnow()
        with self.transaction(write=True) as conn:
            row = conn.execute(
                sa.update(runs)
                .where(runs.c.team == self.team, runs.c.run_id == run_id)
                .values(**values)
                .returning(*runs.c)
            ).first()
        if row is None:
            raise NotFound(f"no run {run_id!r} in team {self.team!r}", hint="see `corral runs` for run ids")
        return _run(row)

    def phase_history(self, run_id: str) -> list[PhaseChange]:
        with self.transaction() as conn:
            rows = conn.execute(
                sa.select(run_phases)
                .where(run_phases.c.team == self.team, run_phases.c.run_id == run_id)
                .order_by(run_phases.c.id)
            ).all()
        return [
            PhaseChange(run_id=r.run_id, from_phase=Phase(r.from_phase or r.to_phase), to_phase=Phase(r.to_phase),
                        reason=r.reason, at=r.at)
            for r in rows
        ]  # fmt: skip

    # ---- approvals --------------------------------------------------------------------------

    def record_approval(
        self, run_id: str, actor: str, decision: Decision, subject: Subject = "run", comment: str = ""
    ) -> ApprovalRecord:
        """Record who approved or rejected what. The phase change is the caller's, via transition()."""
        if decision not in ("approved", "rejected"):
            raise StoreError(f"decision {decision!r} must be 'approved' or 'rejected'")
        if subject not in ("run", "merge", "deploy_promotion"):
            raise StoreError(f"approval subject {subject!r} must be run, merge or deploy_promotion")
        run = self.get_run(run_id)
        with self.transaction(write=True) as conn:
            row = conn.execute(
                sa.insert(approvals)
                .values(team=self.team, project=run.project, run_id=run.run_id, actor=actor, decision=decision,
                        subject=subject, comment=comment, decided_at=utcnow())
                .returning(*approvals.c)
            ).one()  # fmt: skip
        return ApprovalRecord.model_validate(_row(row))

    def list_approvals(self, run_id: str | None = None, project: str | None = None) -> list[ApprovalRecord]:
        query = sa.select(approvals).where(approvals.c.team == self.team)
        if run_id is not None:
            query = query.where(approvals.c.run_id == run_id)
        if project is not None:
            query = query.where(approvals.c.project == project)
        with self.transaction() as conn:
            rows = conn.execute(query.order_by(approvals.c.id)).all()
        return [ApprovalRecord.model_validate(_row(r)) for r in rows]

    # ---- model pins -------------------------------------------------------------------------

    def pin_model(
        self, project: str, model: str, small_model: str, claude_code: str, *, pinned_by: str,
        tool_surface_hash: str = "", reason: str = "",
    ) -> ModelPin:  # fmt: skip
        """Add a pin; the newest pin of a project is its current one, older ones are its history."""
        with self.transaction(write=True) as conn:
            row = conn.execute(
                sa.insert(model_pins)
                .values(team=self.team, project=project, model=model, small_model=small_model,
                        claude_code=claude_code, tool_surface_hash=tool_surface_hash, pinned_by=pinned_by,
                        reason=reason, pinned_at=utcnow())
                .returning(*model_pins.c)
            ).one()  # fmt: skip
        return ModelPin.model_validate(_row(row))

    def pin_history(self, project: str) -> list[ModelPin]:
        """Newest first."""
        with self.transaction() as conn:
            rows = conn.execute(
                sa.select(model_pins)
                .where(model_pins.c.team == self.team, model_pins.c.project == project)
                .order_by(model_pins.c.id.desc())
            ).all()
        return [ModelPin.model_validate(_row(r)) for r in rows]

    def current_pin(self, project: str) -> ModelPin | None:
        history = self.pin_history(project)
        return history[0] if history else None

    # ---- capability tokens (see tokens.py) -------------------------------------------------

    def store_token(
        self, token_id: str, secret_hash: str, scope: list[str], ttl: timedelta | float, max_uses: int | None = None,
        *, project: str = "", run_id: str = "",
    ) -> TokenRecord:  # fmt: skip
        return tokens.store_token(self, token_id, secret_hash, scope, ttl, max_uses, project=project, run_id=run_id)

    def issue_token(
        self, scope: list[str], ttl: timedelta | float, max_uses: int | None = None, *, project: str = "",
        run_id: str = "",
    ) -> tuple[TokenRecord, str]:  # fmt: skip
        """A new token; returns its record and the clear secret, which is shown once and never stored."""
        return tokens.issue_token(self, scope, ttl, max_uses, project=project, run_id=run_id)

    def check_token(self, secret: str, *, consume: bool = True) -> TokenRecord:
        return tokens.check_token(self, secret, consume=consume)

    def revoke_token(self, token_id: str, reason: str = "") -> TokenRecord:
        return tokens.revoke_token(self, token_id, reason)


def _run(row: sa.Row[Any]) -> RunRecord:
    return RunRecord.model_validate(_row(row))
