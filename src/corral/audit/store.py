"""The audit store contract, and a registry that picks a backend by URL and imports it lazily.

| URL                                  | backend                  | module              |
|--------------------------------------|--------------------------|---------------------|
| `sqlite:///PATH`                     | embedded default         | `audit/sqlite.py`   |
| `mongodb://...`, `mongodb+srv://...` | MongoDB (or FerretDB)    | `audit/mongo.py`    |
| `postgresql+psycopg://...`           | Postgres (optional)      | `audit/postgres.py` |

Every store is insert-only from corral's side, and `insert_many` is idempotent on (run_id, seq):
re-shipping a spool after a crash between "stored" and "marker written" must not fail or duplicate.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from corral.audit.chain import Checkpoint, EventRow
from corral.errors import StoreError


@dataclass(frozen=True, slots=True)
class RunSummary:
    run_id: str
    events: int
    last_seq: int
    first_ts: str
    last_ts: str


class AuditStore(Protocol):
    """Raises `StoreError` from every method when the backend is unreachable or refuses the write."""

    url: str

    def ping(self) -> None:
        """Raise StoreError unless the store answers (used by `corral doctor` and at run start)."""
        ...

    def insert_many(self, rows: Sequence[EventRow]) -> int:
        """Store rows, skipping any (run_id, seq) already stored; return how many were new."""
        ...

    def insert_checkpoints(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Store checkpoints, skipping any (run_id, seq, reason) already stored."""
        ...

    def read(self, run_id: str, after_seq: int = 0, limit: int | None = None) -> list[EventRow]:
        """Rows of `run_id` with seq > after_seq, ordered by seq (as the store orders them)."""
        ...

    def head(self, run_id: str) -> tuple[int, str] | None:
        """(seq, hash) of the newest stored event of `run_id`, or None for an unknown run."""
        ...

    def runs(self) -> list[RunSummary]: ...

    def checkpoints(self, run_id: str) -> list[Checkpoint]: ...

    def insert_blobs(self, blobs: Mapping[str, bytes]) -> None:
        """Store side files (SHA-256 hex → content), skipping any already stored. The shipper sends a
        batch's blobs before its events, so a stored event's reference always resolves in the store."""
        ...

    def read_blob(self, digest: str) -> bytes | None:
        """The side file with this SHA-256, or None when the store has none."""
        ...

    def close(self) -> None: ...


_BACKENDS: dict[str, str] = {
    "sqlite": "corral.audit.sqlite:SqliteStore",
    "mongodb": "corral.audit.mongo:MongoStore",
    "mongodb+srv": "corral.audit.mongo:MongoStore",
    "postgresql": "corral.audit.postgres:PostgresStore",
    "postgresql+psycopg": "corral.audit.postgres:PostgresStore",
}


def open_store(url: str) -> AuditStore:
    """Construct the store for `url` without contacting it (call `ping` for that)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    target = _BACKENDS.get(scheme)
    if target is None:
        raise StoreError(
            f"audit store URL {_safe(url)!r} has an unknown scheme {scheme!r}",
            hint="use sqlite:///PATH, mongodb://HOST/DB or postgresql+psycopg://USER@HOST/DB "
            "(CORRAL_AUDIT_URL)",
        )
    module_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    store: AuditStore = cls(url)
    return store


def _safe(url: str) -> str:
    """`url` without its password, for error messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


safe_url = _safe
