"""Invariant 4: every tool call is durably in the audit log before it runs, even across `kill -9`.

A child process emits durable events (the PreToolUse path) and prints each seq once `emit` returns;
it is SIGKILLed mid-stream, with its shipper part way through. The next AuditLog ships the orphan
spool: every acknowledged event is in the store, nothing is duplicated, and the chain verifies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from corral.audit.log import AuditLog
from corral.audit.spool import list_spools
from corral.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_sigkill_mid_stream_loses_nothing_acknowledged(settings: Settings, store_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.audit.crash_child", store_url, "run-crash"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked: list[int] = []
    assert child.stdout is not None
    try:
        for line in child.stdout:
            acked.append(int(line.split()[1]))
            if len(acked) >= 300:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert len(acked) >= 300, child.stderr.read() if child.stderr else ""
    assert list_spools(settings.spool_dir), "the dead process's spool must still be there"

    with AuditLog.open(settings, store_url, background=False) as audit:
        stored = [e.seq for e in audit.read("run-crash")]
        assert set(acked) <= set(stored)
        assert stored == list(range(1, len(stored) + 1))  # no gap, no duplicate
        report = audit.verify("run-crash", strict=True)  # the recovery checkpoint anchors the tail
        assert report.ok, report.problems
        assert audit.checkpoints("run-crash")[-1].reason == "recovered"
        assert audit.backlog() == 0
    assert list_spools(settings.spool_dir) == []
