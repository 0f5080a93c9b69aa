"""The embedded audit store: one SQLite file in WAL mode, append-only by trigger.

`synchronous=FULL`: the shipper marks spool progress only after a commit, so the commit must be on
disk first, or a power loss could lose events that the spool no longer offers. Triggers refuse
UPDATE and DELETE, which stops accidents; someone with the file can drop them, which the hash chain
then exposes.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from corral.audit.chain import Checkpoint, EventRow
from corral.audit.store import RunSummary
from corral.errors import StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
  run_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, ts TEXT NOT NULL,
  hash TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS checkpoints (
  run_id TEXT NOT NULL, seq INTEGER NOT NULL, reason TEXT NOT NULL, hash TEXT NOT NULL, ts TEXT NOT NULL,
  PRIMARY KEY (run_id, seq, reason)
);
CREATE TABLE IF NOT EXISTS blobs (digest TEXT PRIMARY KEY, content BLOB NOT NULL);
CREATE TRIGGER IF NOT EXISTS blobs_no_update BEFORE UPDATE ON blobs
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_update BEFORE UPDATE ON checkpoints
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_delete BEFORE DELETE ON checkpoints
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


def path_of(url: str) -> Path:
    if not url.startswith("sqlite:///"):
        raise StoreError(f"{url!r} is not a SQLite URL", hint="use sqlite:///ABSOLUTE/PATH or sqlite:///REL")
    return Path(url.removeprefix("sqlite:///"))


class SqliteStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.path = path_of(url)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.executescript(_SCHEMA)
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(
                    f"cannot open the audit store {self.path}: {exc}",
                    hint="check that the directory is writable and the file is a SQLite database",
                ) from exc
            self._conn = conn
        return self._conn

    def ping(self) -> None:
        with self._lock:
            self._db().execute("SELECT 1").fetchone()

    def insert_many(self, rows: Sequence[EventRow]) -> int:
        if not rows:
            return 0
        with self._lock:
            db = self._db()
            try:
                db.execute("BEGIN IMMEDIATE")
                before = db.total_changes
                db.executemany(
                    "INSERT OR IGNORE INTO events (run_id, seq, kind, ts, hash, data) VALUES (?,?,?,?,?,?)",
                    [(r.run_id, r.seq, r.kind, r.ts, r.hash, r.data) for r in rows],
                )
                inserted = db.total_changes - before
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise StoreError(f"audit store {self.path} refused a write: {exc}") from exc
            return inserted

    def insert_checkpoints(self, checkpoints: Sequence[Checkpoint]) -> None:
        if not checkpoints:
            return
        with self._lock:
            db = self._db()
            try:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "INSERT OR IGNORE INTO checkpoints (run_id, seq, reason, hash, ts) VALUES (?,?,?,?,?)",
                    [(c.run_id, c.seq, c.reason, c.hash, c.ts.isoformat()) for c in checkpoints],
                )
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise StoreError(f"audit store {self.path} refused a checkpoint: {exc}") from exc

    def insert_blobs(self, blobs: Mapping[str, bytes]) -> None:
        if not blobs:
            return
        with self._lock:
            db = self._db()
            try:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "INSERT OR IGNORE INTO blobs (digest, content) VALUES (?,?)", list(blobs.items())
                )
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise StoreError(f"audit store {self.path} refused a blob: {exc}") from exc

    def read_blob(self, digest: str) -> bytes | None:
        with self._lock:
            row = self._db().execute("SELECT content FROM blobs WHERE digest=?", (digest,)).fetchone()
        return bytes(row[0]) if row else None

    def read(self, run_id: str, after_seq: int = 0, limit: int | None = None) -> list[EventRow]:
        sql = "SELECT run_id, seq, kind, ts, hash, data FROM events WHERE run_id=? AND seq>? ORDER BY seq"
        params: tuple[object, ...] = (run_id, after_seq)
        if limit is not None:
            sql += " LIMIT ?"
            params += (limit,)
        with self._lock:
            return [EventRow(*row) for row in self._db().execute(sql, params)]

    def head(self, run_id: str) -> tuple[int, str] | None:
        with self._lock:
            row = (
                self._db()
                .execute("SELECT seq, hash FROM events WHERE run_id=? ORDER BY seq DESC LIMIT 1", (run_id,))
                .fetchone()
            )
        return (int(row[0]), str(row[1])) if row else None

    def runs(self) -> list[RunSummary]:
        with self._lock:
            rows = (
                self._db()
                .execute(
                    "SELECT run_id, COUNT(*), MAX(seq), MIN(ts), MAX(ts) FROM events"
                    " GROUP BY run_id ORDER BY MIN(ts)"
                )
                .fetchall()
            )
        return [RunSummary(r[0], int(r[1]), int(r[2]), str(r[3]), str(r[4])) for r in rows]

    def checkpoints(self, run_id: str) -> list[Checkpoint]:
        with self._lock:
            rows = (
                self._db()
                .execute(
                    "SELECT run_id, seq, reason, hash, ts FROM checkpoints"
                    " WHERE run_id=? ORDER BY seq, reason",
                    (run_id,),
                )
                .fetchall()
            )
        return [Checkpoint(run_id=r[0], seq=r[1], reason=r[2], hash=r[3], ts=r[4]) for r in rows]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
