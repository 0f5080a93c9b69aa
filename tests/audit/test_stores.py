"""The store contract on every backend: idempotent inserts, head, runs, checkpoints, write concern."""

from __future__ import annotations

from corral.audit.chain import Checkpoint, EventRow
from corral.audit.log import AuditLog
from corral.audit.mongo import MongoStore
from corral.audit.store import open_store
from corral.settings import Settings
from tests.audit.conftest import record_run


def test_reshipping_is_idempotent_and_queries_work(settings: Settings, store_url: str) -> None:
    with AuditLog.open(settings, store_url, background=False) as log:
        record_run(log, "run-a", 7)
        record_run(log, "run-b", 3)
    store = open_store(store_url)
    try:
        rows = store.read("run-a")
        assert [r.seq for r in rows] == list(range(1, 8))
        # A crash between "stored" and "marker written" re-ships the same rows: nothing new, no error.
        assert store.insert_many(rows) == 0
        assert store.insert_many([*rows[:2], EventRow("run-a", 99, "x", "t", "h" * 64, "{}")]) == 1
        assert store.head("run-a") == (99, "h" * 64)
        assert store.head("run-none") is None
        assert [r.seq for r in store.read("run-a", after_seq=5, limit=1)] == [6]
        cps = store.checkpoints("run-a")
        store.insert_checkpoints(cps)  # also idempotent
        assert store.checkpoints("run-a") == cps and cps[-1].reason == "close"
        store.insert_checkpoints([Checkpoint(run_id="run-a", seq=7, hash=rows[-1].hash, reason="recovered")])
        assert [c.reason for c in store.checkpoints("run-a")] == ["close", "recovered"]
        summary = {r.run_id: (r.events, r.last_seq) for r in store.runs()}
        assert summary == {"run-a": (8, 99), "run-b": (3, 3)}
    finally:
        store.close()


def test_mongo_write_concern_defaults_to_majority_with_journal() -> None:
    default = MongoStore("mongodb://127.0.0.1:1/audit")
    assert default.write_concern.document == {"w": "majority", "j": True}
    custom = MongoStore("mongodb://127.0.0.1:1/audit?w=1&journal=false")
    assert custom.write_concern.document == {"w": 1, "j": False}
    default.close()
    custom.close()


def test_status_reports_a_healthy_store(settings: Settings, store_url: str) -> None:
    with AuditLog.open(settings, store_url, background=False) as log:
        status = log.status()
        assert status.reachable and status.backlog == 0 and "reachable" in status.description
