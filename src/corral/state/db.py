"""The state store: projects and runs (plus approvals, pins and tokens from `GovernanceStore`), on
SQLite or Postgres (Supabase). Runs change phase only through `transition()`, which applies the
state machine and optimistic versioning.
Records come back as frozen pydantic models; no ORM object or session leaves this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import sqlalchemy as sa

from corral.audit.redact import process_redactor
from corral.errors import NotFound, RunConflict, RunError, StoreError
from corral.settings import Settings
from corral.state import engine as _engine
from corral.state import migrate
from corral.state.base import APP_ROLE, row_dict, run_not_found, utcnow
from corral.state.governance import GovernanceStore
from corral.state.ids import RUN_ID_PREFIX, new_run_id
from corral.state.machine import TERMINAL, Phase, check_transition
from corral.state.models import PhaseChange, ProjectRecord, RunRecord, StoreInfo
from corral.state.regressions import RegressionStore
from corral.state.schema import projects, run_phases, runs

__all__ = ["APP_ROLE", "StateStore", "resolve_state_url", "utcnow"]
resolve_state_url = _engine.resolve_state_url

UPDATABLE_RUN_FIELDS = frozenset(
    {
        "model",
        "small_model",
        "started_at",
        "finished_at",
        "cost_usd",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "checks",
        "checks_passed",
        "result",
        "diffstat",
        "container_id",
        "pid",
        "preference_ids",
        "meta",
        "base_commit",
        "branch",
    }
)
USAGE_FIELDS = ("cost_usd", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


class StateStore(GovernanceStore, RegressionStore):
    """One team's view of a state database. Open with `StateStore.open`, close with `close()`."""

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
            raise StoreError(
                f"team {team!r} must be 1 to 64 characters", hint="set [project].team in corral.toml"
            )
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

    def describe(self) -> StoreInfo:
        """Which store is in use and its migration revision (for `corral doctor`)."""
        with self._admin_transaction() as conn:
            revision = migrate.current_revision(conn)
        backend: Literal["sqlite", "postgresql"] = "postgresql" if self.backend == "postgresql" else "sqlite"
        return StoreInfo(
            backend=backend,
            url=_engine.safe_url(self.url),
            team=self.team,
            revision=revision,
            head=migrate.head_revision(),
        )

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
            team=self.team,
            name=name,
            repo=repo,
            image=image,
            config_snapshot=snapshot,
            created_at=now,
            updated_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["team", "name"],
            set_={"repo": repo, "image": image, "config_snapshot": snapshot, "updated_at": now},
        ).returning(*projects.c)
        with self.transaction(write=True) as conn:
            return ProjectRecord.model_validate(row_dict(conn.execute(stmt).one()))

    def get_project(self, name: str) -> ProjectRecord:
        with self.transaction() as conn:
            row = conn.execute(
                sa.select(projects).where(projects.c.team == self.team, projects.c.name == name)
            ).first()
        if row is None:
            raise NotFound(
                f"no project {name!r} in team {self.team!r}", hint="a project is recorded by its first run"
            )
        return ProjectRecord.model_validate(row_dict(row))

    def list_projects(self) -> list[ProjectRecord]:
        with self.transaction() as conn:
            rows = conn.execute(
                sa.select(projects).where(projects.c.team == self.team).order_by(projects.c.name)
            ).all()
        return [ProjectRecord.model_validate(row_dict(r)) for r in rows]

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
        requester: str = "",
    ) -> RunRecord:
        """Record a new run in phase `queued`; `branch` defaults to `corral/<run_id>`."""
        for _attempt in range(5):
            rid = run_id or new_run_id()
            now = utcnow()
            values = dict(
                run_id=rid,
                team=self.team,
                project=project,
                task=process_redactor().redact_text(task),
                repo=repo,
                base_commit=base_commit,
                branch=branch or f"corral/{rid}",
                phase=Phase.QUEUED.value,
                version=1,
                model=model,
                small_model=small_model,
                created_at=now,
                updated_at=now,
                preference_ids=[],
                meta=process_redactor().redact(dict(meta or {})),
                requester=requester,
            )
            try:
                with self.transaction(write=True) as conn:
                    row = conn.execute(sa.insert(runs).values(**values).returning(*runs.c)).one()
                    conn.execute(
                        sa.insert(run_phases).values(
                            team=self.team,
                            run_id=rid,
                            from_phase="",
                            to_phase=Phase.QUEUED.value,
                            reason="created",
                            at=now,
                        )
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
            raise NotFound(
                f"{run_id!r} is not a run id", hint="run ids look like r1ngjv22w8tmkq; see `corral runs`"
            )
        with self.transaction() as conn:
            row = conn.execute(
                sa.select(runs).where(runs.c.team == self.team, runs.c.run_id == run_id)
            ).first()
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
                        f"run prefix {run_id!r} is ambiguous: it matches {shown}"
                        + (", ..." if len(rows) > 5 else ""),
                        hint="give more characters of the run id",
                    )
                row = rows[0] if rows else None
        if row is None:
            raise run_not_found(run_id, self.team)
        return _run(row)

    def list_runs(
        self, limit: int = 20, project: str | None = None, phase: Phase | None = None
    ) -> list[RunRecord]:
        """Newest first."""
        query = sa.select(runs).where(runs.c.team == self.team)
        if project is not None:
            query = query.where(runs.c.project == project)
        if phase is not None:
            query = query.where(runs.c.phase == Phase(phase).value)
        query = query.order_by(runs.c.created_at.desc(), runs.c.run_id.desc()).limit(limit)
        with self.transaction() as conn:
            return [_run(r) for r in conn.execute(query).all()]

    def transition(
        self, run_id: str, to: Phase, reason: str = "", *, expect: Phase | None = None
    ) -> RunRecord:
        """Move a run to phase `to` through the state machine; returns the updated run.

        Raises `RunError` for an illegal move (or `failed` without a reason) and `RunConflict` when
        another process changed the phase first: its phase is not `expect`, or its version moved
        between our read and our write (optimistic versioning, so no update is ever lost).
        """
        to = Phase(to)
        reason = process_redactor().redact_text(reason)  # a failure reason can quote what the agent did
        if to is Phase.FAILED and not reason.strip():
            raise RunError(f"run {run_id}: a run may only fail with a reason", hint="pass reason=...")
        with self.transaction(write=True) as conn:
            row = conn.execute(
                sa.select(runs.c.phase, runs.c.version, runs.c.started_at).where(
                    runs.c.team == self.team, runs.c.run_id == run_id
                )
            ).first()
            if row is None:
                raise run_not_found(run_id, self.team)
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
                    team=self.team,
                    run_id=run_id,
                    from_phase=current.value,
                    to_phase=to.value,
                    reason=reason,
                    at=now,
                )
            )
        return _run(updated)

    def update_run(self, run_id: str, **fields: Any) -> RunRecord:
        """Set timings, cost, tokens, checks, result, diffstat, container id, pid, ... (not the phase)."""
        unknown = set(fields) - UPDATABLE_RUN_FIELDS
        if unknown:
            raise StoreError(
                f"run {run_id}: cannot update field(s) {', '.join(sorted(unknown))}",
                hint="phases change only through transition(); updatable: "
                + ", ".join(sorted(UPDATABLE_RUN_FIELDS)),
            )
        if "preference_ids" in fields:
            fields["preference_ids"] = [int(i) for i in fields["preference_ids"]]
        # The result text, the diff stat and the checks are the agent's words: what this process has
        # resolved is redacted before they are stored (and shown by `corral show` and the dashboard).
        return self._update(run_id, {k: _redact_field(v) for k, v in fields.items()})

    def add_usage(self, run_id: str, **amounts: float) -> RunRecord:
        """Add to cost and token counters atomically (several writers may report usage at once)."""
        unknown = set(amounts) - set(USAGE_FIELDS)
        if unknown:
            raise StoreError(
                f"run {run_id}: unknown usage field(s) {', '.join(sorted(unknown))}",
                hint="usage fields: " + ", ".join(USAGE_FIELDS),
            )
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
            raise run_not_found(run_id, self.team)
        return _run(row)

    def phase_history(self, run_id: str) -> list[PhaseChange]:
        with self.transaction() as conn:
            rows = conn.execute(
                sa.select(run_phases)
                .where(run_phases.c.team == self.team, run_phases.c.run_id == run_id)
                .order_by(run_phases.c.id)
            ).all()
        return [
            PhaseChange(
                run_id=r.run_id,
                from_phase=Phase(r.from_phase or r.to_phase),
                to_phase=Phase(r.to_phase),
                reason=r.reason,
                at=r.at,
            )
            for r in rows
        ]


def _redact_field(value: Any) -> Any:
    return process_redactor().redact(value) if isinstance(value, str | dict | list) else value


def _run(row: sa.Row[Any]) -> RunRecord:
    return RunRecord.model_validate(row_dict(row))
