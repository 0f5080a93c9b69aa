"""`AuditLog`: opens a store, hands out per-run recorders, and ships spools to the store.

Lifecycle:
- `AuditLog.open(settings, url)` builds the store from its URL (default: SQLite at
  `settings.audit_db`), pings it, ships spools that earlier processes left behind (after a crash, or a
  store outage), and starts one background shipper thread.
- With `allow_offline=True` an unreachable (or unusable) store is remembered in `store_error`
  instead of raised: recorders still spool every event durably, and the shipper retries with
  backoff until the store answers. `corral doctor` shows `backlog()`.
- `close()` closes any recorder still open, ships what it can, and stops the shipper.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from corral.audit.blobs import BlobStore
from corral.audit.chain import Checkpoint, EventRow, genesis_hash
from corral.audit.recorder import RunLock, RunRecorder
from corral.audit.redact import Redactor, process_redactor
from corral.audit.shipper import Shipper
from corral.audit.spool import SpoolWriter, check_run_id, last_record, list_spools, read_chunk, spool_name
from corral.audit.store import AuditStore, RunSummary, open_store, safe_url
from corral.audit.verify import VerifyReport, export_lines, verify_rows
from corral.errors import CorralError, NotFound, StoreError
from corral.events import AnyEvent, parse_event
from corral.settings import Settings

if TYPE_CHECKING:
    from corral.telemetry.export import TraceExport

log = logging.getLogger("corral.audit")


@dataclass(frozen=True)
class AuditStatus:
    """What `corral doctor` reports about the audit log."""

    url: str
    reachable: bool
    backlog: int
    spools: int
    corrupt_spools: int
    error: str
    description: str


def default_url(settings: Settings) -> str:
    return settings.audit_url or f"sqlite:///{settings.audit_db}"


class AuditLog:
    def __init__(
        self,
        settings: Settings,
        url: str,
        store: AuditStore | None,
        *,
        checkpoint_every: int = 256,
        ship_interval: float = 0.2,
        lock_timeout: float = 10.0,
    ) -> None:
        self.settings = settings
        self.url = url
        self.store = store
        self.spool_dir = settings.spool_dir
        self.blobs = BlobStore(settings.home / "blobs", store.read_blob if store is not None else None)
        self.checkpoint_every = checkpoint_every
        self.lock_timeout = lock_timeout
        self.shipper = Shipper(store, url, self.spool_dir, ship_interval, self.blobs)
        self._recorders: dict[Path, RunRecorder] = {}
        self._state = threading.Lock()
        self._telemetry: TraceExport | None = None
        self._telemetry_opened = False

    @property
    def store_error(self) -> CorralError | None:
        """Why the store is unavailable (None while it answers)."""
        return self.shipper.store_error

    @property
    def shipped(self) -> int:
        return self.shipper.shipped

    # ---- opening and closing ----------------------------------------------------------------

    @classmethod
    def open(
        cls,
        settings: Settings,
        url: str | None = None,
        *,
        allow_offline: bool = False,
        background: bool = True,
        checkpoint_every: int = 256,
        ship_interval: float = 0.2,
    ) -> AuditLog:
        """Open the audit log. Raises StoreError for a bad or unreachable store unless allow_offline."""
        url = url or default_url(settings)
        store: AuditStore | None = None
        error: CorralError | None = None
        try:
            store = open_store(url)
            store.ping()
        except CorralError as exc:
            if not allow_offline:
                if store is not None:
                    store.close()
                raise
            error = exc
            log.warning("audit store %s is unavailable, spooling locally: %s", safe_url(url), exc)
        audit = cls(settings, url, store, checkpoint_every=checkpoint_every, ship_interval=ship_interval)
        audit.shipper.store_error = error
        if error is None:
            audit.ship_pending()
        if background:
            audit.shipper.start()
        return audit

    @property
    def online(self) -> bool:
        return self.store is not None and self.store_error is None

    def close(self) -> None:
        for recorder in list(self._recorders.values()):
            recorder.close()
        if self._telemetry is not None:
            self._telemetry.close()
        self.shipper.stop()
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- recording --------------------------------------------------------------------------

    def for_run(self, run_id: str, *, secrets: dict[str, str] | None = None, team: str = "") -> RunRecorder:
        """The recorder of `run_id` in this process, continuing its chain if it already has events.
        With OpenTelemetry configured, its events also become the run's trace (`team` labels it)."""
        check_run_id(run_id)
        lock = RunLock(self.spool_dir / "runs" / f"{run_id}.head", self.lock_timeout)
        try:
            heads = [h for h in (lock.read_head(), self._spooled_head(run_id)) if h]
            if self.online:
                try:
                    self.ship_pending(run_id)
                    stored = self.store.head(run_id) if self.store else None
                    if stored:
                        heads.append(stored)
                except StoreError as exc:
                    self.shipper.went_offline(exc)
            head = max(heads, default=(0, genesis_hash(run_id)))
            writer = SpoolWriter(self.spool_dir / spool_name(run_id))
        except BaseException:
            lock.release()
            raise
        redactor = Redactor(forward_to=process_redactor())
        for name, value in (secrets or {}).items():
            redactor.register(name, value)
        telemetry = self._open_telemetry()
        recorder = RunRecorder(
            run_id,
            head,
            writer,
            lock,
            self.blobs,
            redactor,
            self.checkpoint_every,
            self._recorder_closed,
            telemetry.tap(run_id, team) if telemetry is not None else None,
        )
        with self._state:
            self._recorders[writer.path] = recorder
        self.shipper.track(writer.path, writer.written)
        return recorder

    def _open_telemetry(self) -> TraceExport | None:
        """The trace pipeline, started with the first recorder (a command that only reads needs none)."""
        with self._state:
            if not self._telemetry_opened:
                self._telemetry_opened = True
                from corral.telemetry import open_export

                self._telemetry = open_export()
            return self._telemetry

    def _spooled_head(self, run_id: str) -> tuple[int, str] | None:
        best: tuple[int, str] | None = None
        for path in list_spools(self.spool_dir, run_id):
            rec = last_record(path)
            if rec and (best is None or int(rec["seq"]) > best[0]):
                best = (int(rec["seq"]), str(rec["hash"]))
        return best

    def _recorder_closed(self, recorder: RunRecorder) -> None:
        with self._state:
            self._recorders.pop(recorder.spool_path, None)
        self.shipper.recorder_closed(recorder.spool_path)

    # ---- shipping (see `Shipper`) -------------------------------------------------------------

    def ship_now(self) -> int:
        """One shipping pass over this process's spools (and orphans still pending); never raises."""
        return self.shipper.ship_now()

    def ship_pending(self, run_id: str | None = None) -> int:
        """Ship spools no live process owns; raises StoreError if the store fails."""
        return self.shipper.ship_pending(run_id)

    def backlog(self) -> int:
        """Events spooled on this host that the store does not have yet (for `corral doctor`)."""
        return self.shipper.backlog()

    def status(self) -> AuditStatus:
        """Ping the store now, and count the local backlog."""
        error = ""
        if self.store is None:
            error = str(self.store_error)
        else:
            try:
                self.store.ping()
            except StoreError as exc:
                error = exc.message
        url = safe_url(self.url)
        reachable = not error
        desc = f"audit store {url} " + (
            "reachable" if reachable else f"UNREACHABLE ({error.splitlines()[0]})"
        )
        corrupt = len(list(self.spool_dir.glob("*.corrupt"))) if self.spool_dir.is_dir() else 0
        if corrupt:
            desc += f"; {corrupt} corrupt spool files kept in {self.spool_dir} (*.corrupt)"
        return AuditStatus(
            url=url,
            reachable=reachable,
            backlog=self.backlog(),
            spools=len(list_spools(self.spool_dir)),
            corrupt_spools=corrupt,
            error=error,
            description=desc,
        )

    # ---- reading ----------------------------------------------------------------------------

    def _need_store(self) -> AuditStore:
        if self.store is None or self.store_error is not None:
            raise StoreError(
                f"the audit store {safe_url(self.url)} is unavailable: {self.store_error}",
                hint="run `corral doctor`; events are safe in the local spool meanwhile",
            )
        return self.store

    def rows(self, run_id: str, after_seq: int = 0, *, include_spool: bool = True) -> list[EventRow]:
        """The run's stored rows, plus (by default) spooled ones the store does not have yet."""
        by_seq: dict[int, EventRow] = {}
        if include_spool:
            for path in list_spools(self.spool_dir, run_id):
                try:
                    # The whole file as it is now (a read of a larger fixed limit allocates that limit).
                    chunk = read_chunk(path, 0, limit=path.stat().st_size + 1)
                except (FileNotFoundError, StoreError):
                    continue
                for row in chunk.events:
                    if row.seq > after_seq:
                        by_seq[row.seq] = row
        try:
            stored = self._need_store().read(run_id, after_seq)
        except StoreError:
            if not by_seq:
                raise
            stored = []  # the store is down: show what the spool holds
        if not by_seq:
            return stored
        seen = {r.seq for r in stored}
        return sorted([*stored, *(r for s, r in by_seq.items() if s not in seen)], key=lambda r: r.seq)

    def read(self, run_id: str) -> list[AnyEvent]:
        """The run's events, typed, in chain order."""
        return [parse_event(r.data) for r in self.rows(run_id)]

    def runs(self) -> list[RunSummary]:
        return self._need_store().runs()

    def checkpoints(self, run_id: str) -> list[Checkpoint]:
        return self._need_store().checkpoints(run_id)

    def export(self, run_id: str) -> list[str]:
        """The run's stored events and checkpoints as JSONL lines (see `verify.read_export`)."""
        store = self._need_store()
        rows = store.read(run_id)
        if not rows:
            raise NotFound(
                f"the audit store has no events for run {run_id}", hint="list runs with `corral audit runs`"
            )
        return export_lines(rows, store.checkpoints(run_id))

    def verify(self, run_id: str, *, strict: bool = False) -> VerifyReport:
        """Verify the run's chain as the store holds it (spooled events are not yet evidence)."""
        store = self._need_store()
        return verify_rows(
            run_id, store.read(run_id), store.checkpoints(run_id), blobs=self.blobs, strict=strict
        )
