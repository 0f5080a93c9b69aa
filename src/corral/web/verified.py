"""The run page's chain verification, remembered per chain head.

Verifying re-hashes every event (about 0.1 ms each): a 5,000-event run would spend most of its page
render there. A report is reused while the run's event count and head hash are unchanged, for at
most `FRESH` seconds, so an edit of a stored row (which leaves the head alone) is caught within
that window; `corral audit verify` always verifies afresh.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corral.audit.chain import EventRow
    from corral.audit.log import AuditLog
    from corral.audit.verify import VerifyReport

FRESH = 60.0


class VerifiedCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reports: dict[str, tuple[tuple[int, str], float, VerifyReport]] = {}

    def report(self, audit: AuditLog, run_id: str, rows: list[EventRow]) -> tuple[VerifyReport, float]:
        """The report and when it was made (time.time()); `rows` as `AuditLog.rows` reads them."""
        head = (len(rows), rows[-1].hash if rows else "")
        with self._lock:
            known = self._reports.get(run_id)
        if known is not None and known[0] == head and time.time() - known[1] < FRESH:
            return known[2], known[1]
        made = time.time()
        report = audit.verify(run_id)
        with self._lock:
            self._reports[run_id] = (head, made, report)
        return report, made
