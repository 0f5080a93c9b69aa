"""The spool and the shipper: torn tails, corruption, big payloads, threads, resuming a chain, offline."""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

import pytest

from corral.audit.blobs import BLOB_REF
from corral.audit.log import AuditLog
from corral.audit.spool import list_spools
from corral.audit.store import open_store
from corral.errors import StoreError
from corral.events import ShellCommand, ToolResult
from corral.settings import Settings
from tests.audit.conftest import free_port, record_run, sample_events

# A store URL that can never work: its directory cannot be created under /proc.
BROKEN = "sqlite:////proc/corral-no-such-dir/audit.db"


def offline(settings: Settings) -> AuditLog:
    log = AuditLog.open(settings, BROKEN, allow_offline=True, background=False)
    assert not log.online and log.store_error is not None
    return log


def test_offline_run_spools_then_ships_when_a_store_is_there(settings: Settings) -> None:
    log = offline(settings)
    record_run(log, "run-off", 12)
    assert log.backlog() == 12
    status = log.status()
    assert not status.reachable and status.backlog == 12 and "UNREACHABLE" in status.description
    log.close()  # the spool outlives the process that wrote it
    assert len(list_spools(settings.spool_dir)) == 1

    with AuditLog.open(settings, background=False) as online:  # next start ships the backlog
        assert online.backlog() == 0
        assert [e.seq for e in online.read("run-off")] == list(range(1, 13))
        assert online.verify("run-off", strict=True).ok
    assert list_spools(settings.spool_dir) == []


def test_unreachable_store_is_a_clear_error_unless_offline_is_allowed(settings: Settings) -> None:
    url = f"mongodb://127.0.0.1:{free_port()}/audit?serverSelectionTimeoutMS=300"
    with pytest.raises(StoreError, match="did not answer") as info:
        AuditLog.open(settings, url)
    assert info.value.hint and "spool" in info.value.hint
    with pytest.raises(StoreError, match="unknown scheme 'redis'"):
        open_store("redis://127.0.0.1/0")
    log = AuditLog.open(settings, url, allow_offline=True, background=False)
    rec = log.for_run("run-x")
    assert rec.emit(ShellCommand(tool_call_id="t", command="ls"), durable=True).seq == 1
    rec.close()
    assert log.backlog() == 1
    log.close()


def test_torn_tail_is_truncated_with_a_warning(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    log = offline(settings)
    record_run(log, "run-torn", 7)
    log.close()
    [spool] = list_spools(settings.spool_dir)
    whole = spool.stat().st_size
    with open(spool, "ab") as f:  # power loss in the middle of the next write
        f.write(b'{"kind":"shell.command","run_id":"run-torn","seq":8,"comm')
    caplog.set_level(logging.WARNING, logger="corral.audit")
    with AuditLog.open(settings, background=False) as online:
        assert any("torn tail" in r.getMessage() and str(spool) in r.getMessage() for r in caplog.records)
        assert [e.seq for e in online.read("run-torn")] == list(range(1, 8))
        assert online.verify("run-torn", strict=True).ok
    assert whole > 0 and not spool.exists()


def test_corruption_before_whole_lines_is_kept_aside_not_dropped(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    log = offline(settings)
    record_run(log, "run-bad", 6)
    log.close()
    [spool] = list_spools(settings.spool_dir)
    lines = spool.read_bytes().splitlines(keepends=True)
    spool.write_bytes(b"".join([*lines[:3], b"\x00\x00garbage\n", *lines[3:]]))
    with AuditLog.open(settings, background=False) as online:
        assert [e.seq for e in online.read("run-bad")] == [1, 2, 3]  # what precedes the damage shipped
        assert online.status().corrupt_spools == 1
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    assert spool.with_name(spool.name + ".corrupt").exists()


def test_payload_over_one_mib_goes_to_a_side_file(settings: Settings) -> None:
    big = "".join(f"line {i}: {'x' * 90}\n" for i in range(15_000))  # about 1.5 MB
    with AuditLog.open(settings, background=False) as log:
        rec = log.for_run("run-big")
        event = rec.emit(ToolResult(tool_name="Bash", tool_call_id="t1", output=big), durable=True)
        m = BLOB_REF.match(event.output)
        assert m, event.output[:100]
        digest, size = m.group(1), int(m.group(2))
        assert digest == hashlib.sha256(big.encode()).hexdigest() and size == len(big.encode())
        assert log.blobs.get(event.output) == big
        assert max(len(line) for line in rec.spool_path.read_bytes().splitlines()) < 4096
        rec.close()
        assert log.verify("run-big", strict=True).ok
        side = log.blobs.path(digest)
        side.write_text(big.replace("line 7:", "line 8:"))
        report = log.verify("run-big")
        assert (report.first.kind, report.first.seq) == ("blob", 1)  # type: ignore[union-attr]


def test_concurrent_emitters_share_one_chain(settings: Settings) -> None:
    with AuditLog.open(settings, ship_interval=0.01) as log:
        rec = log.for_run("run-threads")
        seqs: list[int] = []
        lock = threading.Lock()

        def worker(k: int) -> None:
            for i, event in enumerate(sample_events(100)):
                out = rec.emit(event, durable=(i + k) % 2 == 0)  # type: ignore[type-var]
                with lock:
                    seqs.append(out.seq)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rec.close()
        assert sorted(seqs) == list(range(1, 801))
        report = log.verify("run-threads", strict=True)
        assert report.ok and report.events == 800


def test_a_later_process_continues_the_chain_even_offline(settings: Settings) -> None:
    with AuditLog.open(settings, background=False) as log:
        record_run(log, "run-resume", 5)
    log = offline(settings)  # e.g. `corral approve` while the store is down
    rec = log.for_run("run-resume")
    assert rec.emit(ShellCommand(tool_call_id="t", command="approve"), durable=True).seq == 6
    rec.close()
    log.close()
    with AuditLog.open(settings, background=False) as log:
        assert [e.seq for e in log.read("run-resume")] == [1, 2, 3, 4, 5, 6]
        assert log.verify("run-resume", strict=True).ok
        rec = log.for_run("run-resume")
        assert rec.emit(ShellCommand(tool_call_id="t", command="again")).seq == 7
        rec.close()
        assert log.verify("run-resume", strict=True).ok


def test_one_process_records_a_run_at_a_time(settings: Settings) -> None:
    with AuditLog.open(settings, background=False) as log:
        rec = log.for_run("run-lock")
        other = AuditLog.open(settings, background=False)
        other.lock_timeout = 0.2
        with pytest.raises(StoreError, match="held by another corral process"):
            other.for_run("run-lock")
        rec.close()
        other.for_run("run-lock").close()
        other.close()
    with pytest.raises(StoreError, match="cannot name an audit chain"):
        AuditLog.open(settings, background=False).for_run("../etc")


def test_spool_files_are_removed_once_shipped(settings: Settings, tmp_path: Path) -> None:
    with AuditLog.open(settings, background=False) as log:
        rec = log.for_run("run-clean")
        rec.emit(ShellCommand(tool_call_id="t", command="ls"), durable=True)
        assert len(list_spools(settings.spool_dir)) == 1
        rec.close()
        assert list_spools(settings.spool_dir) == [] and log.backlog() == 0
