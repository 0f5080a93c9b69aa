"""What shipped survives the host: a patch too large for one event goes to a side file, the side file
ships to the store with its event, and a machine that has only the store shows and verifies it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from corral.audit.blobs import BLOB_REF
from corral.audit.log import AuditLog
from corral.audit.store import open_store
from corral.events import CommitMade
from corral.settings import Settings


def test_a_large_patch_ships_as_a_blob_and_verifies_from_the_store_alone(
    store_url: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    patch = "".join(f"+line {i} of a very large generated file\n" for i in range(60_000))  # ~2.4 MB
    with AuditLog.open(settings, store_url, background=False) as audit:
        recorder = audit.for_run("run-big")
        recorder.emit(CommitMade(commit="c" * 40, branch="corral/run-big", patch=patch), durable=True)
        recorder.close()
        audit.shipper.ship_now()
    store = open_store(store_url)
    try:
        (row,) = [r for r in store.read("run-big") if r.kind == "commit.made"]
        ref = BLOB_REF.match(json.loads(row.data)["patch"])
        assert ref is not None, "the patch was not moved into a side file"
        assert store.read_blob(ref.group(1)) == patch.encode()
        assert hashlib.sha256(patch.encode()).hexdigest() == ref.group(1)
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()

    # Another machine: a fresh corral home, only the store's URL.
    shutil.rmtree(settings.home / "blobs")
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.setenv("CORRAL_HOME", str(other))
    with AuditLog.open(Settings(), store_url, background=False) as audit:
        assert audit.verify("run-big").ok
        (event,) = [e for e in audit.read("run-big") if e.kind == "commit.made"]
        assert audit.blobs.resolve(event.patch) == patch


def test_a_blob_that_does_not_match_its_hash_fails_verification(settings: Settings, tmp_path: Path) -> None:
    url = f"sqlite:///{settings.audit_db}"
    patch = "x" * 2_000_000
    with AuditLog.open(settings, url, background=False) as audit:
        recorder = audit.for_run("run-bad")
        recorder.emit(CommitMade(commit="c" * 40, branch="b", patch=patch), durable=True)
        recorder.close()
        audit.shipper.ship_now()
        digest = hashlib.sha256(patch.encode()).hexdigest()
        audit.blobs.path(digest).write_text("y" * 2_000_000)  # tampered on the host
        report = audit.verify("run-bad")
    assert not report.ok and any(p.kind == "blob" for p in report.problems)


def test_threads_writing_the_same_side_file_at_once_all_get_its_reference(tmp_path: Path) -> None:
    """Two runs of one server (threads of one process) may both externalize the same large output."""
    import threading

    from corral.audit.blobs import BlobStore

    blobs = BlobStore(tmp_path / "blobs")
    errors: list[BaseException] = []
    for i in range(50):
        content = "x" * 100_000 + str(i)
        barrier = threading.Barrier(4)
        refs: list[str] = []

        def put(content: str = content, barrier: threading.Barrier = barrier, refs: list[str] = refs) -> None:
            barrier.wait()
            try:
                refs.append(blobs.put(content))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=put) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors[:3]
        assert len(set(refs)) == 1 and blobs.get(refs[0]) == content
    assert not list((tmp_path / "blobs").rglob("*.tmp*"))
