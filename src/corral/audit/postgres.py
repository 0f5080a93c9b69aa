"""The optional Postgres audit store, for teams that want one database (psycopg 3, no ORM).

The migration (`MIGRATION`, applied idempotently on first use) creates two tables, triggers that
refuse UPDATE, DELETE and TRUNCATE, and a NOLOGIN role `corral_audit_writer` holding only SELECT and
INSERT: grant it to the login role corral uses (`GRANT corral_audit_writer TO corral`). UPDATE,
DELETE and TRUNCATE are revoked from PUBLIC and from that role. A superuser can still drop the
triggers; the hash chain is what exposes that.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg

from corral.audit.chain import Checkpoint, EventRow
from corral.audit.store import RunSummary, safe_url
from corral.errors import StoreError

T = TypeVar("T")

MIGRATION = """
CREATE TABLE IF NOT EXISTS audit_events (
  run_id text NOT NULL, seq bigint NOT NULL, kind text NOT NULL, ts text NOT NULL,
  hash text NOT NULL, data text NOT NULL, PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
  run_id text NOT NULL, seq bigint NOT NULL, reason text NOT NULL, hash text NOT NULL, ts text NOT NULL,
  PRIMARY KEY (run_id, seq, reason)
);
CREATE TABLE IF NOT EXISTS audit_blobs (digest text PRIMARY KEY, content bytea NOT NULL);
CREATE OR REPLACE FUNCTION corral_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'the audit log is append-only (% on %)', TG_OP, TG_TABLE_NAME; END $$;
DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION corral_audit_append_only();
DROP TRIGGER IF EXISTS audit_checkpoints_append_only ON audit_checkpoints;
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_checkpoints
  FOR EACH STATEMENT EXECUTE FUNCTION corral_audit_append_only();
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'corral_audit_writer') THEN
    CREATE ROLE corral_audit_writer NOLOGIN;
  END IF;
END $$;
DROP TRIGGER IF EXISTS audit_blobs_append_only ON audit_blobs;
CREATE TRIGGER audit_blobs_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_blobs
  FOR EACH STATEMENT EXECUTE FUNCTION corral_audit_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON audit_events, audit_checkpoints, audit_blobs
  FROM PUBLIC, corral_audit_writer;
GRANT SELECT, INSERT ON audit_events, audit_checkpoints, audit_blobs TO corral_audit_writer;
"""


def conninfo(url: str) -> str:
    """psycopg takes `postgresql://`; SQLAlchemy-style URLs name the driver in the scheme."""
    scheme, rest = url.split("://", 1)
    if scheme not in {"postgresql", "postgresql+psycopg", "postgres"}:
        raise StoreError(
            f"{safe_url(url)!r} is not a Postgres URL", hint="use postgresql+psycopg://USER@HOST/DB"
        )
    return f"postgresql://{rest}"


class PostgresStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self._conninfo = conninfo(url)
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def _run(self, what: str, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    conn = psycopg.connect(self._conninfo, connect_timeout=3)
                    with conn.transaction():
                        # Migrate only a fresh database: a least-privilege role (INSERT and SELECT)
                        # could not run the DDL, and does not need to once an owner has.
                        if conn.execute("SELECT to_regclass('audit_blobs')").fetchone() == (None,):
                            conn.execute(MIGRATION)
                    self._conn = conn
                with self._conn.transaction():
                    return fn(self._conn)
            except psycopg.Error as exc:
                if self._conn is not None and self._conn.broken:
                    self._conn = None
                raise StoreError(
                    f"audit store {safe_url(self.url)} {what}: {exc}".strip(),
                    hint="check that Postgres is running and the URL's role may INSERT and SELECT; "
                    "events stay in the local spool until it is back",
                ) from exc

    def ping(self) -> None:
        self._run("did not answer", lambda c: c.execute("SELECT 1").fetchone())

    def insert_many(self, rows: Sequence[EventRow]) -> int:
        if not rows:
            return 0

        def insert(c: psycopg.Connection[Any]) -> int:
            cur = c.execute(
                "INSERT INTO audit_events (run_id, seq, kind, ts, hash, data)"
                " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[],"
                " %s::text[], %s::text[], %s::text[])"
                " ON CONFLICT DO NOTHING",
                [
                    [r.run_id for r in rows],
                    [r.seq for r in rows],
                    [r.kind for r in rows],
                    [r.ts for r in rows],
                    [r.hash for r in rows],
                    [r.data for r in rows],
                ],
            )
            return cur.rowcount

        return self._run("refused a write", insert)

    def insert_checkpoints(self, checkpoints: Sequence[Checkpoint]) -> None:
        if not checkpoints:
            return

        def insert(c: psycopg.Connection[Any]) -> None:
            with c.cursor() as cur:
                cur.executemany(
                    "INSERT INTO audit_checkpoints (run_id, seq, reason, hash, ts) VALUES (%s,%s,%s,%s,%s)"
                    " ON CONFLICT DO NOTHING",
                    [(cp.run_id, cp.seq, cp.reason, cp.hash, cp.ts.isoformat()) for cp in checkpoints],
                )

        self._run("refused a checkpoint", insert)

    def insert_blobs(self, blobs: Mapping[str, bytes]) -> None:
        if not blobs:
            return

        def insert(c: psycopg.Connection[Any]) -> None:
            with c.cursor() as cur:
                cur.executemany(
                    "INSERT INTO audit_blobs (digest, content) VALUES (%s,%s) ON CONFLICT DO NOTHING",
                    list(blobs.items()),
                )

        self._run("refused a blob", insert)

    def read_blob(self, digest: str) -> bytes | None:
        row = self._run(
            "did not answer",
            lambda c: c.execute("SELECT content FROM audit_blobs WHERE digest = %s", (digest,)).fetchone(),
        )
        return bytes(row[0]) if row else None

    def read(self, run_id: str, after_seq: int = 0, limit: int | None = None) -> list[EventRow]:
        sql = (
            "SELECT run_id, seq, kind, ts, hash, data FROM audit_events"
            " WHERE run_id=%s AND seq>%s ORDER BY seq"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self._run(
            "could not be read",
            lambda c: [
                EventRow(r[0], int(r[1]), r[2], r[3], r[4], r[5]) for r in c.execute(sql, (run_id, after_seq))
            ],
        )

    def head(self, run_id: str) -> tuple[int, str] | None:
        row = self._run(
            "could not be read",
            lambda c: c.execute(
                "SELECT seq, hash FROM audit_events WHERE run_id=%s ORDER BY seq DESC LIMIT 1", (run_id,)
            ).fetchone(),
        )
        return (int(row[0]), str(row[1])) if row else None

    def runs(self) -> list[RunSummary]:
        rows = self._run(
            "could not be read",
            lambda c: c.execute(
                "SELECT run_id, COUNT(*), MAX(seq), MIN(ts), MAX(ts) FROM audit_events"
                " GROUP BY run_id ORDER BY MIN(ts)"
            ).fetchall(),
        )
        return [RunSummary(r[0], int(r[1]), int(r[2]), r[3], r[4]) for r in rows]

    def checkpoints(self, run_id: str) -> list[Checkpoint]:
        rows = self._run(
            "could not be read",
            lambda c: c.execute(
                "SELECT run_id, seq, reason, hash, ts FROM audit_checkpoints"
                " WHERE run_id=%s ORDER BY seq, reason",
                (run_id,),
            ).fetchall(),
        )
        return [Checkpoint(run_id=r[0], seq=r[1], reason=r[2], hash=r[3], ts=r[4]) for r in rows]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
